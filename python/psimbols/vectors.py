"""Checks every file of test/vectors/ (PROTOCOL.md §14) with this package alone.

    PYTHONPATH=python python3 -m psimbols.vectors test/vectors

Prints one line per failure and `N passed, M failed` (exit 1 when M > 0).
X-Wing needs ML-KEM-768, which `cryptography` does not offer here: for the
X-Wing transcript every step but the KEM's own is checked, and the line
`not run:` names the KEM steps left out.
"""
# mypy: disable-error-code="misc, func-returns-value"
from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric import x25519

from . import channel as ch
from . import handshake as hs
from . import hpke
from .encoding import b64u, dumps, from_b64u, lp
from .errors import ErrorCode, PsimbolsError, as_protocol
from .frames import (
    MAX_SEQ,
    MAX_SEQ_BY_TYPE,
    decode_client_binary,
    decode_client_frame,
    decode_inner_push,
    decode_inner_response,
    decode_server_binary,
    decode_server_frame,
)
from .keys import PublicKey, fingerprint, import_pkcs8, import_spki, import_wire_key

KINDS = {"request": ch.KIND_REQUEST, "response": ch.KIND_RESPONSE, "push": ch.KIND_PUSH}


class Runner:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.not_run: list[str] = []

    def check(self, name: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            self.passed += 1
        except Exception as e:  # a failed check, whatever it raised
            self.failed += 1
            detail = str(e) or type(e).__name__
            print(f"FAIL {name}: {detail}")
            if os.environ.get("PSIMBOLS_VECTORS_TRACE"):
                traceback.print_exc()


def eq(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: got {str(got)[:120]}, want {str(want)[:120]}")


def refused(fn: Callable[[], Any], code: str, what: str, client: bool = False) -> None:
    try:
        fn()
    except PsimbolsError as e:
        got = as_protocol(e, "").code.value if client else e.code.value
        eq(got, code, f"{what}: error code")
        return
    raise AssertionError(f"{what}: accepted, want {code}")


def h(x: str) -> bytes:
    return bytes.fromhex(x)


# ------------------------------------------------------------------ v1.json


def run_v1(r: Runner, v: dict[str, Any]) -> None:
    r.check("labels", lambda: eq(v["labels"], {"hpke_info": hs.LABEL_INFO, "server_signature": hs.LABEL_SERVER_SIG, "client_signature": hs.LABEL_CLIENT_SIG, "grant_aad": hs.LABEL_GRANT_AAD, "c2s": ch.LABEL_C2S, "s2c": ch.LABEL_S2C}, "labels"))
    r.check("hpke_suites", lambda: (eq({k: s["kem_id"] for k, s in v["hpke_suites"].items()}, hpke.KEM_IDS, "kem ids"), eq({(s["kdf_id"], s["aead_id"]) for s in v["hpke_suites"].values()}, {(1, 2)}, "kdf/aead")))
    r.check("max_seq", lambda: eq((v["max_seq"], v["max_seq_by_type"]), (MAX_SEQ, MAX_SEQ_BY_TYPE), "max_seq"))

    keys: dict[str, Any] = {}
    for name, k in v["keys"].items():
        def key_check(name: str = name, k: dict[str, Any] = k) -> None:
            spki = from_b64u(k["spki"], "spki")
            eq(fingerprint(spki), k["fingerprint"], "fingerprint")
            if "pkcs8" in k:
                sk = import_pkcs8(from_b64u(k["pkcs8"], "pkcs8"))
                eq(sk.public.spki, spki, "spki of pkcs8")
                eq(sk.public.type, k["type"], "type")
                keys[name] = sk
        r.check(f"key {name}", key_check)

    for e in v["base64url"]["valid"]:
        r.check(f"base64url valid {e['text']!r}", lambda e=e: (eq(from_b64u(e["text"]).hex(), e["hex"], "decode"), eq(b64u(h(e["hex"])), e["text"], "encode")))
    for e in v["base64url"]["invalid"]:
        r.check(f"base64url invalid {e['text']!r} ({e['why']})", lambda e=e: refused(lambda: from_b64u(e["text"]), "bad_request", "decode"))
    for i, e in enumerate(v["lp"]):
        parts = [p["utf8"] if "utf8" in p else h(p["hex"]) for p in e["parts"]]
        r.check(f"lp {i}", lambda parts=parts, e=e: eq(lp(*parts).hex(), e["hex"], "LP"))
    for s in v["signatures"]:
        def sig_check(s: dict[str, Any] = s) -> None:
            k = v["keys"][s["key"]]
            pub = import_spki(k["type"], from_b64u(k["spki"]))
            eq(pub.verify(h(s["signature"]), h(s["message"])), s["valid"], "verifies")
        r.check(f"signature {s['description']}", sig_check)

    by_name = {t["name"]: t for t in v["transcripts"]}
    for t in v["transcripts"]:
        run_transcript(r, t, v, keys)
    for a in v["accepted_frames"]:
        def accept(a: dict[str, Any] = a) -> None:
            f = decode_client_frame(a["text"]) if a["side"] == "client" else decode_server_frame(a["text"])
            eq(f, a["decoded"], "decoded")
        r.check(f"accepted: {a['description']}", accept)

    neg = v["negative"]
    for e in neg["frames"]:
        client = e["side"] == "server"  # the receiver is the other side
        r.check(f"negative frame: {e['description']}", lambda e=e, client=client: refused(lambda: (decode_server_frame if client else decode_client_frame)(e["text"]), e["error"], "decode", client))
    for e in neg["binary_frames"]:
        client = e["side"] == "server"
        r.check(f"negative binary: {e['description']}", lambda e=e, client=client: refused(lambda: (decode_server_binary if client else decode_client_binary)(h(e["hex"])), e["error"], "decode", client))
    for e in neg["hellos"]:
        r.check(f"negative hello: {e['description']}", lambda e=e: refused(lambda: hs.check_hello(decode_client_frame(e["text"])), e["error"], "server"))
    for e in neg["public_keys"]:
        r.check(f"negative public key: {e['description']}", lambda e=e: refused(lambda: import_wire_key(e["key"]), e["error"], "import"))
    for e in neg["channel"]:
        def chan(e: dict[str, Any] = e) -> None:
            ct_type = e.get("channel_type", "AES-256-GCM")  # absent: AES-256-GCM (§14)
            refused(lambda: ch.open_(ct_type, h(e["key"]), KINDS[e["kind"]], e["seq"], e["channel"], e["ciphertext"]), e["error"], "open")
        r.check(f"negative channel: {e['description']}", chan)
    for e in neg["challenges"]:
        t = by_name[e["transcript"]]
        for pinned in (False, True):
            want = e["error_pinned"] if pinned else e["error"]
            r.check(f"negative challenge ({'pinned' if pinned else 'first use'}): {e['description']}", lambda e=e, t=t, pinned=pinned, want=want: refused(lambda: client_answer(t, v, keys, e["challenge"], pinned), want, "client", True))
    for e in neg["proofs"]:
        t = by_name[e["transcript"]]
        def proof(e: dict[str, Any] = e, t: dict[str, Any] = t) -> None:
            c = decode_server_frame(t["frames"]["challenge"])
            spki = from_b64u(c["server_key"]["data"])
            t_chal = hs.transcript_info(e["hello"].encode(), c, spki) + lp(from_b64u(c["enc"]))
            ident = import_wire_key(json.loads(t["frames"]["hello"])["public_key"])
            ok = ident.verify(h(e["signature"]), hs.sign_input(hs.LABEL_CLIENT_SIG, t_chal + lp(from_b64u(c["signature"]))))
            if ok:
                raise AssertionError("the proof verifies")
            eq("unauthorised", e["error"], "error")
        r.check(f"negative proof: {e['description']}", proof)
    for e in neg["established"]:
        t = by_name[e["transcript"]]
        def est(e: dict[str, Any] = e, t: dict[str, Any] = t) -> None:
            p = client_answer(t, v, keys, t["frames"]["challenge"], True)
            refused(lambda: hs.open_grant(p, decode_server_frame(e["established"])), e["error"], "client", True)
        r.check(f"negative established: {e['description']}", est)


def client_hello(t: dict[str, Any], keys: dict[str, Any]) -> hs.ClientHello:
    i = t["inputs"]
    return hs.create_hello(keys[i["identity"]], i["channel_types"], i["kem"], i["hello_features"], fixed=(h(i["nonce_c"]), h(i["kem_ikm"])))


def client_answer(t: dict[str, Any], v: dict[str, Any], keys: dict[str, Any], challenge_text: str, pinned: bool) -> hs.ClientProof:
    """The client of transcript `t` answering a challenge, pinned to the transcript's server key or trusting on first use."""
    hello = client_hello(t, keys)
    want = v["keys"][t["inputs"]["server_key"]]["fingerprint"]

    def check(k: PublicKey) -> None:
        if pinned and k.fingerprint != want:
            raise PsimbolsError(ErrorCode.SERVER_KEY_MISMATCH, "server key mismatch")

    return hs.answer_challenge(hello, decode_server_frame(challenge_text), check)


def run_transcript(r: Runner, t: dict[str, Any], v: dict[str, Any], keys: dict[str, Any]) -> None:
    name = f"transcript {t['name']}"
    i, fr, im = t["inputs"], t["frames"], t["intermediate"]
    xwing = i["kem"] == "X-Wing"
    server_key = keys[i["server_key"]]
    hello_bytes = fr["hello"].encode("utf-8")
    hello = decode_client_frame(hello_bytes)
    challenge = decode_server_frame(fr["challenge"])

    if xwing:
        r.not_run.append(f"{name}: kem_public, enc, challenge bytes, grant (ML-KEM-768 is not in cryptography {_crypto_version()})")
        # the X-Wing public key and enc are in the frames: the checks a server makes of the key still run
        r.check(f"{name}: X-Wing kem.data passes the server's checks (§5.3.1)", lambda: hs.check_hello(hello))
        r.check(f"{name}: kem_public and enc in the frames", lambda: eq((from_b64u(hello["kem"]["data"]).hex(), from_b64u(challenge["enc"]).hex()), (im["kem_public"], im["enc"]), "kem"))
    else:
        def hello_check() -> None:
            ch_ = client_hello(t, keys)
            eq(ch_.kem_pair.public.hex(), im["kem_public"], "kem_public (DeriveKeyPair)")
            eq(ch_.bytes, hello_bytes, "hello bytes")
        r.check(f"{name}: hello", hello_check)

    t_info = hs.transcript_info(hello_bytes, challenge, server_key.public.spki)
    r.check(f"{name}: t_info", lambda: eq(t_info.hex(), im["t_info"], "t_info"))
    r.check(f"{name}: info", lambda: eq(hs.hpke_info(t_info).hex(), im["info"], "info"))
    t_chal = t_info + lp(from_b64u(challenge["enc"]))
    r.check(f"{name}: t_chal", lambda: eq(t_chal.hex(), im["t_chal"], "t_chal"))
    r.check(f"{name}: server sign input", lambda: eq(hs.sign_input(hs.LABEL_SERVER_SIG, t_chal).hex(), im["server_sign_input"], "server sign input"))
    sig_s = from_b64u(challenge["signature"])
    r.check(f"{name}: server signature", lambda: (eq(sig_s.hex(), im["server_signature"], "sig_s"), eq(server_key.public.verify(sig_s, hs.sign_input(hs.LABEL_SERVER_SIG, t_chal)), True, "sig_s verifies")))
    cin = hs.sign_input(hs.LABEL_CLIENT_SIG, t_chal + lp(sig_s))
    r.check(f"{name}: client sign input", lambda: eq(cin.hex(), im["client_sign_input"], "client sign input"))
    proof = decode_client_frame(fr["proof"])
    sig_c = from_b64u(proof["signature"])
    identity = keys[i["identity"]]
    r.check(f"{name}: client signature verifies", lambda: (eq(sig_c.hex(), im["client_signature"], "sig_c"), eq(identity.public.verify(sig_c, cin), True, "sig_c verifies")))
    r.check(f"{name}: grant AAD", lambda: eq(hs.grant_aad(t_chal, sig_s, sig_c).hex(), im["grant_aad"], "grant AAD"))
    grant_text = dumps(i["grant"])
    r.check(f"{name}: grant plaintext", lambda: eq(grant_text, im["grant_plaintext"], "grant plaintext"))

    if not xwing:
        def server_side() -> None:
            c, pending = hs.accept_hello(hello_bytes, hello, server_key, i["source"], i["server_features"], h(i["nonce_s"]), h(i["ekm"]))
            eq(dumps(c), fr["challenge"], "challenge bytes (server)")
            eq(hs.verify_proof(pending, sig_c), True, "the server verifies the proof")
            eq(dumps(hs.seal_grant(pending, sig_c, i["grant"], i["source"])), fr["established"], "established bytes (server)")
        r.check(f"{name}: server side (challenge, proof, established)", server_side)

        def client_side() -> None:
            p = client_answer(t, v, keys, fr["challenge"], True)
            if t["deterministic"]:
                eq(dumps(p.proof), fr["proof"], "proof bytes")
            # a randomized signature (ECDSA, RSA-PSS): the grant is bound to the stored proof
            p.aad = hs.grant_aad(t_chal, sig_s, sig_c)
            grant, key = hs.open_grant(p, decode_server_frame(fr["established"]))
            eq(grant, i["grant"], "grant")
            eq(key.hex(), im["channel_key"], "channel key")
        r.check(f"{name}: client side (proof, grant)", client_side)

    for b in t["bindings"]:
        run_binding(r, f"{name} {b['name']}", b, h(im["channel_key"]), i["source"])


def run_binding(r: Runner, name: str, b: dict[str, Any], channel_key: bytes, source: str) -> None:
    keys = ch.derive_binding(channel_key, b["channel"], h(b["nonce_c"]), h(b["nonce_s"]), b["channel_type"])
    r.check(f"{name}: salt, infos, keys", lambda: eq(
        (ch.binding_salt(h(b["nonce_c"]), h(b["nonce_s"])).hex(), lp(ch.LABEL_C2S, b["channel"]).hex(), lp(ch.LABEL_S2C, b["channel"]).hex(), keys.c2s.hex(), keys.s2c.hex()),
        (b["salt"], b["c2s_info"], b["s2c_info"], b["c2s"], b["s2c"]), "binding"))
    if "resume" in b:
        def resume() -> None:
            rs = decode_client_frame(b["resume"])
            eq(from_b64u(rs["nonce"]).hex(), b["nonce_c"], "resume nonce")
            eq(dumps({"type": "resume", "channel": b["channel"], "nonce": b64u(h(b["nonce_c"]))}), b["resume"], "resume bytes")
            rd = decode_server_frame(b["resumed"])
            eq(from_b64u(rd["nonce"]).hex(), b["nonce_s"], "resumed nonce")
        r.check(f"{name}: resume, resumed", resume)
    for f in b["frames"]:
        def frame(f: dict[str, Any] = f) -> None:
            kind = KINDS[f["kind"]]
            key = keys.c2s if kind == ch.KIND_REQUEST else keys.s2c
            eq(ch.nonce(kind, f["seq"]).hex(), f["nonce"], "nonce")
            ct = ch.seal(b["channel_type"], key, kind, f["seq"], b["channel"], f["plaintext"].encode())
            eq(ct.hex(), f["ciphertext"], "ciphertext")
            if kind == ch.KIND_REQUEST:
                eq(ch.request_frame(keys, f["seq"], f["plaintext"].encode(), False), f["frame"], "JSON frame")
                eq(ch.request_frame(keys, f["seq"], f["plaintext"].encode(), True).hex(), f["binary"], "binary frame")  # type: ignore[union-attr]
                d = decode_client_frame(f["frame"])
                db = decode_client_binary(h(f["binary"]))
            else:
                want = {"type": f["kind"], "source": source, "channel": b["channel"], "seq": f["seq"], f["kind"]: b64u(ct)}
                eq(dumps(want), f["frame"], "JSON frame")
                d = decode_server_frame(f["frame"])
                db = decode_server_binary(h(f["binary"]))
                text = ch.open_(b["channel_type"], key, kind, d["seq"], d["channel"], d[f["kind"]]).decode()
                # the client's decoders accept the payload (a push's top-level id, §7.2)
                (decode_inner_response if kind == ch.KIND_RESPONSE else decode_inner_push)(text)
            eq((db["channel"], db["seq"], bytes(db[f["kind"]]).hex()), (b["channel"], f["seq"], f["ciphertext"]), "binary decode")
            eq(ch.open_(b["channel_type"], key, kind, d["seq"], d["channel"], d[f["kind"]]).decode(), f["plaintext"], "opens")
        r.check(f"{name}: {f['kind']} {f['seq']}", frame)


# ------------------------------------------------------------------ key-lifecycle.json


def run_lifecycle(r: Runner, v: dict[str, Any]) -> None:
    keys: dict[str, Any] = {}
    for name, k in v["keys"].items():
        def key_check(name: str = name, k: dict[str, Any] = k) -> None:
            der = from_b64u(k["pkcs8"], "pkcs8")  # base64url (§14)
            eq(der.hex(), "302e020100300506032b657004220420" + k["seed_hex"], "pkcs8 = RFC 8410 prefix || seed")
            sk = import_pkcs8(der)
            eq((b64u(sk.public.spki), sk.public.fingerprint), (k["spki"], k["fingerprint"]), "spki, fingerprint")
            keys[name] = sk
        r.check(f"key-lifecycle key {name}", key_check)
    eq(v["labels"], {"next_server_key": hs.LABEL_NEXT_KEY, "identity_move": hs.LABEL_MOVE}, "labels")
    n = v["server_key_next"]
    cur, nxt = keys[n["current"]], keys[n["next"]]

    def statement() -> None:
        st = hs.next_key_statement(n["source"], cur.public.spki, nxt.public.spki, n["not_before"])
        eq(st.hex(), n["statement_hex"], "statement bytes")
        eq(b64u(cur.sign(st)), n["next_key"]["signature"], "statement signature (Ed25519, deterministic)")
        eq(hs.verify_next_key(cur.public, n["source"], n["next_key"]).fingerprint, nxt.public.fingerprint, "verified next key")
        refused(lambda: hs.verify_next_key(cur.public, "wss://evil.example/", n["next_key"]), "protocol", "statement for another source")
    r.check("key-lifecycle: next server key statement", statement)

    def lifecycle_handshake(block: dict[str, Any], ident: str, move_to: str | None, server_features: list[str], next_key: dict[str, Any] | None, name: str) -> None:
        hh = block["handshake"]

        def run() -> None:
            feats = json.loads(hh["hello"])["features"]
            hello = hs.create_hello(keys[ident], ["AES-256-GCM"], "X25519", [f for f in feats if f != "identity-move"], move_to=keys[move_to] if move_to else None, fixed=(h(hh["nonce_c_hex"]), h(hh["kem_ikm_hex"])))
            eq(hello.bytes.decode(), hh["hello"], "hello bytes")
            c, pending = hs.accept_hello(hello.bytes, decode_client_frame(hh["hello"]), keys[block["server_key"] if "server_key" in block else n["current"]], block["source"], server_features, h(hh["nonce_s_hex"]), h(hh["ekm_hex"]), next_key, moves=move_to is not None)
            eq(dumps(c), hh["challenge"], "challenge bytes")
            p = hs.answer_challenge(hello, decode_server_frame(hh["challenge"]), lambda k: None)
            eq(dumps(p.proof), hh["proof"], "proof bytes")
            eq(hs.verify_proof(pending, from_b64u(p.proof["signature"])), True, "sig_c verifies")
            server_spki = from_b64u(json.loads(hh["challenge"])["server_key"]["data"])
            eq(hs.transcript_info(hello.bytes, decode_server_frame(hh["challenge"]), server_spki).hex(), hh["t_info_hex"], "t_info")
            eq((p.info.hex(), p.aad.hex()), (hh["info_hex"], hh["grant_aad_hex"]), "HPKE info, grant AAD")
            sig_c = from_b64u(p.proof["signature"])
            eq(dumps(hs.seal_grant(pending, sig_c, hh["grant"], block["source"])), hh["established"], "established bytes (server)")
            grant, _ = hs.open_grant(p, decode_server_frame(hh["established"]))
            eq(grant, hh["grant"], "grant (client)")
            if move_to:
                ok = keys[move_to].public.verify(from_b64u(p.proof["move_signature"]), hs.move_input(pending.t_chal, pending.sig_s))
                eq(ok, True, "move_signature verifies under the new key")
            else:
                eq(p.next_key.fingerprint if p.next_key else None, nxt.public.fingerprint, "next key recorded")
        r.check(f"key-lifecycle: {name}", run)

    lifecycle_handshake(n, "identity", None, [], n["next_key"], "challenge with next_key, its proof")
    m = v["identity_move"]
    lifecycle_handshake(m, m["identity"], m["move_to"], [], None, "identity move hello, challenge, proof")


# ------------------------------------------------------------------ xwing-draft06.json


def run_xwing(r: Runner, v: dict[str, Any]) -> None:
    """The X25519 halves of the draft's vectors (ML-KEM-768 is not available to check the rest)."""
    for idx, t in enumerate(v["vectors"]):
        def x(t: dict[str, Any] = t) -> None:
            expanded = hashlib.shake_256(h(t["seed"])).digest(96)
            sk_x = expanded[64:96]
            pk = h(t["pk"])
            pub = _raw(x25519.X25519PrivateKey.from_private_bytes(sk_x))
            eq(pub.hex(), pk[1184:].hex(), "pkX = X25519(skX, 9), skX = SHAKE256(seed, 96)[64:96]")
            ek_x = h(t["eseed"])[32:64]
            eq(_raw(x25519.X25519PrivateKey.from_private_bytes(ek_x)).hex(), h(t["ct"])[1088:].hex(), "ctX = X25519(ekX, 9)")
        r.check(f"xwing-draft06 vector {idx}: X25519 halves", x)
    r.not_run.append(f"xwing-draft06.json: ML-KEM-768 halves and the shared secrets ({len(v['vectors'])} vectors)")


def _raw(sk: x25519.X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _crypto_version() -> str:
    import cryptography

    return str(getattr(cryptography, "__version__", "?"))


def run_folder(folder: str) -> tuple[Runner, int]:
    """Checks every JSON file of `folder`; a file without a runner is a failure. Returns the runner and the file count."""
    r = Runner()
    files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
    runners = {"v1.json": run_v1, "key-lifecycle.json": run_lifecycle, "xwing-draft06.json": run_xwing}
    for f in files:
        run = runners.get(f)
        if run is None:
            r.failed += 1
            print(f"FAIL {f}: no runner for this file")
            continue
        with open(os.path.join(folder, f), encoding="utf-8") as fh:
            data = json.load(fh)
        try:
            run(r, data)
        except Exception as e:
            r.failed += 1
            print(f"FAIL {f}: {type(e).__name__}: {e}")
            traceback.print_exc()
    for n in r.not_run:
        print(f"not run: {n}")
    return r, len(files)


def main(argv: list[str]) -> int:
    folder = argv[0] if argv else "test/vectors"
    if not os.path.isdir(folder):
        print(f"error: {folder} is not a folder of vector files", file=sys.stderr)
        print("hint: python3 -m psimbols.vectors FOLDER, e.g. the repository's test/vectors (the default, relative to the current folder)", file=sys.stderr)
        return 1
    r, n = run_folder(folder)
    print(f"{n} files: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
