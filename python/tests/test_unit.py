"""Offline tests: RFC 9180 vectors, known_servers file, backoff, key files, frame limits."""
from __future__ import annotations

import os

from psimbols import FileKnownServers, PsimbolsError, backoff_delay, generate_key_file, load_key, load_public_key
from psimbols.errors import ErrorCode
from psimbols.keys import KEY_TYPES
from test_hpke import check_rfc9180
from helpers import temp_dir


def test_rfc9180_vectors() -> None:
    assert len(check_rfc9180()) == 4


def test_known_servers_file_format_and_next() -> None:
    path = os.path.join(temp_dir(), "sub", "known_servers")
    learnt: list[str] = []
    ks = FileKnownServers(path, lambda l: learnt.append(l.fingerprint))
    a, b = "SHA256:" + "A" * 43, "SHA256:" + "B" * 43
    assert ks.get("ws://x/") is None
    ks.set("ws://x/", a)
    assert ks.get("ws://x") is None and ks.get("WS://x/") is None, "a URL is matched exactly, without normalisation"
    ks.set("ws://x/", a)  # no second line, no second report
    assert learnt == [a]
    assert open(path).read() == f"ws://x/ {a}\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600" and oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    ks.set_next("ws://x/", b)
    assert open(path).read() == f"ws://x/ {a} next={b}\n"
    assert ks.get_next("ws://x/") == b
    ks.set("ws://x/", b)  # the switch: the next key becomes the key, and the next is forgotten
    assert open(path).read() == f"ws://x/ {b}\n"
    with open(path, "a") as f:
        f.write("ws://y/ not-a-fingerprint\n")
    try:
        ks.get("ws://x/")
        raise AssertionError("a malformed line was accepted")
    except PsimbolsError as e:
        assert e.code == ErrorCode.BAD_REQUEST and ":2:" in e.message


def test_backoff_full_jitter_bounds() -> None:
    assert backoff_delay(0, 0.0) == 0
    assert backoff_delay(0, 0.999) < 0.25
    assert backoff_delay(3, 0.999) < 2.0 and backoff_delay(3, 0.5) == 1.0
    assert backoff_delay(100, 0.999) < 30.0


def test_key_files_of_every_type_round_trip() -> None:
    d = temp_dir()
    for t in KEY_TYPES:
        path = os.path.join(d, f"{t}.pem")
        k = generate_key_file(t, path, public_file=True)
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert load_key(path).fingerprint == k.fingerprint == load_public_key(path[:-4] + ".pub.pem").fingerprint
        sig = k.sign(b"m")
        assert k.public.verify(sig, b"m") and not k.public.verify(sig, b"n")
    try:
        generate_key_file("Ed25519", os.path.join(d, "Ed25519.pem"))
        raise AssertionError("an existing key was overwritten")
    except PsimbolsError as e:
        assert e.code == ErrorCode.BAD_REQUEST and "exists" in e.message


def test_a_malformed_next_key_is_refused_whether_chosen_or_not() -> None:
    """§5.6: decoders check every member they know the shape of; a client reports it as protocol."""
    import json as _json

    from psimbols.errors import as_protocol
    from psimbols.frames import decode_server_frame

    v = _json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "test", "vectors", "key-lifecycle.json")))
    c = _json.loads(v["server_key_next"]["handshake"]["challenge"])
    c["features"] = []
    decode_server_frame(_json.dumps(c))  # well-formed, not chosen: accepted (and ignored)
    c["next_key"]["not_before"] = "tomorrow"
    try:
        decode_server_frame(_json.dumps(c))
        raise AssertionError("a malformed next_key was accepted")
    except PsimbolsError as e:
        assert as_protocol(e, "").code == ErrorCode.PROTOCOL and "not_before" in e.message


def test_no_key_material_in_any_error() -> None:
    """A private key passed where a path is expected (bytes, or PEM text) is refused as bad_request without being echoed."""
    import asyncio

    from psimbols import connect

    d = temp_dir()
    path = os.path.join(d, "k.pem")
    generate_key_file("Ed25519", path)
    pem = open(path, "rb").read()
    body = pem.decode().splitlines()[1]  # the base64 of the private key
    calls = [lambda: load_key(pem), lambda: load_key(pem.decode()), lambda: load_public_key(pem), lambda: load_public_key(pem.decode())]  # type: ignore[arg-type]
    for call in calls:
        try:
            call()
            raise AssertionError("a key was accepted as a path")
        except PsimbolsError as e:
            assert e.code == ErrorCode.BAD_REQUEST and body[:16] not in str(e) and "PRIVATE" not in str(e), str(e)
            assert e.__context__ is None or body[:16] not in str(e.__context__), str(e.__context__)
    for url, key in (("ws://127.0.0.1:1/", pem.decode()), ("ws://me:s3cret@127.0.0.1:1/", load_key(path))):
        try:
            asyncio.run(connect(url, key, known_servers_file=False, handshake_timeout=2))  # type: ignore[arg-type]
            raise AssertionError("connected")
        except PsimbolsError as e:
            assert body[:16] not in str(e) and "s3cret" not in str(e), str(e)


def test_bad_options_and_arguments_are_bad_request_naming_them() -> None:
    """Never a raw TypeError/ValueError, never a nonsense value accepted (a max_in_flight of 0 made every request time out)."""
    import asyncio
    from typing import Any, Callable

    from psimbols import Client, connect, generate

    k = generate()
    cases: list[tuple[str, Any]] = [
        ("max_in_flight", 0), ("max_in_flight", -1), ("max_in_flight", "a"), ("max_in_flight", True), ("max_in_flight", 2.5),
        ("max_queued", -1), ("max_queued", 1.5), ("backoff_base", -1), ("backoff_base", 0), ("backoff_max", float("nan")),
        ("max_attempts", -1), ("max_attempts", "3"), ("request_timeout", float("inf")), ("handshake_timeout", "x"), ("request_timeout", True),
        ("reconnect", "yes"), ("renew", 1), ("follow_server_key", "no"), ("features", "binary"), ("features", ["bogus"]), ("features", ["server-key-next"]),
        ("channel_types", "AES-256-GCM"), ("channel_types", []), ("channel_types", ["DES"]), ("kem", "RSA"), ("kem", None),
        ("server_key", 123), ("known_servers_file", True), ("known_servers_file", 5), ("on_server_key_learnt", "print"), ("no_such_option", 1),
    ]

    def bad_request(what: str, f: Callable[[], Any]) -> None:
        try:
            f()
            raise AssertionError(f"{what}: accepted")
        except PsimbolsError as e:
            assert e.code == ErrorCode.BAD_REQUEST and f'"{what}"' in e.message, (what, e.code, e.message)

    for name, v in cases:
        bad_request(name, lambda: asyncio.run(connect("ws://127.0.0.1:1/", k, known_servers_file=False, **{name: v}) if name != "known_servers_file" else connect("ws://127.0.0.1:1/", k, known_servers_file=v)))

    async def on_a_client() -> None:
        c = Client("ws://127.0.0.1:1/", k)
        for what, call in (
            ("timeout", lambda: c.request("echo", 1, timeout="x")),  # type: ignore[arg-type]
            ("timeout", lambda: c.request("echo", 1, timeout=-1)),
            ("new_key", lambda: c.move_identity(123)),  # type: ignore[arg-type]
        ):
            try:
                await call()
                raise AssertionError(f"{what}: accepted")
            except PsimbolsError as e:
                assert e.code == ErrorCode.BAD_REQUEST and f'"{what}"' in e.message, (what, e.message)
        bad_request("event", lambda: c.on("bogus", print))
        bad_request("fn", lambda: c.on("push", 123))  # type: ignore[arg-type]

    asyncio.run(on_a_client())


def test_key_type_names_of_the_cli_work_in_the_api_and_generate_key_file_is_as_documented() -> None:
    """README: generate(type) and generate_key_file(type, path, *, force=False, public_file=False) take `Ed25519` or the CLI's `ed25519`, ..."""
    from psimbols import generate

    for name, t in (("ed25519", "Ed25519"), ("p256", "ECDSA-P256"), ("ECDSA-P256", "ECDSA-P256"), ("rsa", "RSA"), ("RSA", "RSA")):
        assert generate(name).public.type == t
    for bad, code in (("dsa", ErrorCode.UNSUPPORTED), (1, ErrorCode.BAD_REQUEST)):
        try:
            generate(bad)  # type: ignore[arg-type]
            raise AssertionError("accepted")
        except PsimbolsError as e:
            assert e.code == code and "ed25519" in e.message, e.message
    d = temp_dir()
    path = os.path.join(d, "k.pem")
    k = generate_key_file("ed25519", path)
    assert load_key(path).fingerprint == k.fingerprint and not os.path.exists(os.path.join(d, "k.pub.pem")), "public_file defaults to False, as Node's"
    k2 = generate_key_file("p256", path, force=True, public_file=True)
    assert load_key(path).fingerprint == k2.fingerprint == load_public_key(os.path.join(d, "k.pub.pem")).fingerprint
    try:
        generate_key_file("ed25519", path, force="yes")  # type: ignore[arg-type]
        raise AssertionError("accepted")
    except PsimbolsError as e:
        assert e.code == ErrorCode.BAD_REQUEST and '"force"' in e.message
    assert load_key(path).fingerprint == k2.fingerprint, "a refused call changes nothing"


def test_renewal_times_are_those_of_protocol_8_3() -> None:
    """Renew at ttl × 2/3 × (1 − j), j in [0, 0.1] (never past 2/3 of the life); a failed renewal retried 1 s + jitter later, never in a burst."""
    from psimbols.client import renew_delay, renew_retry_delay

    assert renew_delay(90, 0.0) == 60.0 and 54.0 <= renew_delay(90, 0.9999) < 60.0
    assert renew_retry_delay(0, 0.0) == 1.0 and renew_retry_delay(0, 0.9999) < 2.0
    assert 1.0 <= renew_retry_delay(30, 0.0) and renew_retry_delay(30, 0.9999) < 61.0


def test_the_vector_runner_without_a_folder_says_how_to_call_it() -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")}
    for args in ([], [os.path.join(temp_dir(), "nope")]):
        r = subprocess.run([sys.executable, "-m", "psimbols.vectors", *args], cwd=temp_dir(), env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.startswith("error: ") and "hint: python3 -m psimbols.vectors FOLDER" in r.stderr, r.stderr
