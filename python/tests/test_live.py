"""Live tests: the Python client against real brokers (`node bin/psimbols.js serve`) this test starts,
on real sockets, and against a two-node cluster on a real redis-server."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

from psimbols import Client, ErrorCode, FileKnownServers, PsimbolsError, connect, generate, generate_key_file, load_key
from psimbols.keys import P256, RSA
from helpers import Forwarder, Relay, eventually, node_cli, py_cli, start_broker, start_redis, temp_dir


async def refused(coro, code: ErrorCode) -> PsimbolsError:  # type: ignore[no-untyped-def]
    try:
        r = await coro
    except PsimbolsError as e:
        assert e.code == code, f"got {e.code.value} ({e.message}), want {code.value}"
        return e
    if isinstance(r, Client):
        await r.close()
    raise AssertionError(f"accepted, want {code.value}")


async def operator(broker_args: list[str] | None = None) -> tuple[str, str]:
    """A keys file with a fresh operator key (through the Node CLI): (operator key file, keys file)."""
    d = temp_dir()
    key, keys = os.path.join(d, "op.pem"), os.path.join(d, "keys.json")
    for args in (["keygen", "-o", key], ["keys", "add", key, "--role", "operator", "--file", keys]):
        rc, _, err = await node_cli(args)
        assert rc == 0, err
    return key, keys


async def test_open_service_both_channel_types_json_and_binary() -> None:
    b = await start_broker(["--hellos-per-address", "1000"])
    try:
        for ct in ("AES-256-GCM", "ChaCha20-Poly1305"):
            for feats in ([], ["binary"]):
                for kt in ("Ed25519", P256, RSA) if feats else ("Ed25519",):
                    k = generate(kt)
                    c = await connect(b.url, k, server_key=b.fingerprint, channel_types=[ct], features=feats, reconnect=False)
                    try:
                        assert c.channel and c.channel.channel_type == ct
                        assert c._conn and c._conn.binary == bool(feats)
                        assert await c.request("echo", {"n": [1, 2, 3], "é": "ü"}) == {"n": [1, 2, 3], "é": "ü"}
                        who = await c.request("whoami")
                        assert who["identity"] == k.fingerprint and who["channel"] == c.channel.id
                        e = await refused(c.request("no.such.op"), ErrorCode.NOT_FOUND)
                        assert "handler" in e.message
                    finally:
                        await c.close()
                    assert c.state == "closed"
                    await refused(c.request("echo"), ErrorCode.CLOSED)
        # P-256 KEM; X-Wing is refused up front, never replaced by another KEM
        c = await connect(b.url, generate(), server_key=b.fingerprint, kem="P-256", reconnect=False)
        assert await c.request("echo", 1) == 1
        await c.close()
        e = await refused(connect(b.url, generate(), server_key=b.fingerprint, kem="X-Wing"), ErrorCode.UNSUPPORTED)
        assert "does not implement X-Wing" in e.message, e.message  # as the README and the CLI's hint: not a matter of the installed cryptography
    finally:
        b.stop()


async def test_requests_in_flight_cap_and_timeouts() -> None:
    b = await start_broker(["--hellos-per-address", "1000"])
    try:
        c = await connect(b.url, generate(), server_key=b.fingerprint, max_in_flight=8, reconnect=False)
        # 200 concurrent requests through a cap of 8: all answered, in their own order, none refused too_many
        got = await asyncio.gather(*(c.request("echo", i) for i in range(200)))
        assert got == list(range(200))
        assert c._conn and c._conn.current and c._conn.current.next_seq == 201
        await refused(c.request("echo", "x" * 60000), ErrorCode.BAD_REQUEST)  # over MAX_INNER_BYTES: refused before sending
        assert c._conn.current.next_seq == 201
        # a request that cannot be answered in time: the broker cannot echo in 1 µs
        await refused(c.request("echo", 1, timeout=0.000001), ErrorCode.TIMEOUT)
        assert await c.request("echo", 2) == 2
        await c.close()
    finally:
        b.stop()


async def test_closed_service_forbids_unregistered_keys() -> None:
    d = temp_dir()
    keys = os.path.join(d, "keys.json")
    member = os.path.join(d, "member.pem")
    rc, _, err = await node_cli(["keygen", "-o", member])
    assert rc == 0, err
    rc, _, err = await node_cli(["keys", "add", member, "--file", keys])
    assert rc == 0, err
    b = await start_broker(["--closed", "--keys", keys])
    try:
        e = await refused(connect(b.url, generate(), server_key=b.fingerprint, reconnect=False), ErrorCode.FORBIDDEN)
        assert "server answered" in e.message
        c = await connect(b.url, member, server_key=b.fingerprint, reconnect=False)
        assert (await c.request("whoami"))["identity"] == load_key(member).fingerprint
        await c.close()
    finally:
        b.stop()


async def test_pushes_with_ids_dedup_after_resume_and_revocation() -> None:
    op_key, keys = await operator()
    b = await start_broker(["--keys", keys, "--hellos-per-address", "1000"])
    try:
        op = await connect(b.url, op_key, server_key=b.fingerprint, reconnect=False)
        me = generate()
        c = await connect(b.url, me, server_key=b.fingerprint, backoff_base=0.05, backoff_max=0.2)
        got: list[tuple[object, int]] = []
        notices: list[str] = []
        closes: list[tuple] = []
        c.on("push", lambda m, i: got.append((m, i)))
        c.on("notice", lambda n: notices.append(n.kind))
        c.on("close", lambda *a: closes.append(a))
        ids = [(await op.request("admin.push", {"identity": me.fingerprint, "message": {"n": n}}))["seq"] for n in (1, 2)]
        await eventually(lambda: len(got) == 2, what="two pushes")
        assert got == [({"n": 1}, ids[0]), ({"n": 2}, ids[1])]
        # the socket drops (not closed by anyone's choice): pushes sent meanwhile arrive after the resume, once
        assert c._conn is not None
        c._conn.ws.transport.abort()
        await eventually(lambda: c.state == "reconnecting" or c.stats["resumes"] > 0, what="the drop")
        await op.request("admin.push", {"identity": me.fingerprint, "message": {"n": 3}})
        await eventually(lambda: c.stats["resumes"] == 1 and len(got) >= 3, what="resume and the push kept while away")
        assert [m for m, _ in got] == [{"n": 1}, {"n": 2}, {"n": 3}], got
        assert c.stats["handshakes"] == 1, "resumed, not a new handshake"
        assert await c.request("echo", "after resume") == "after resume"
        # revocation: the authenticated notice, then the client stops (close 4005) and does not reconnect
        assert c.channel is not None
        channel = c.channel.id
        revoked = await op.request("admin.revoke", {"identity": me.fingerprint})
        assert revoked["revoked"] == [channel], revoked
        await eventually(lambda: c.state == "closed", what="closed after revoked")
        assert "revoked" in notices and closes and closes[0][0] == 4005
        assert closes[0][2].code == ErrorCode.UNAUTHORISED
        await refused(c.request("echo"), ErrorCode.CLOSED)
        await op.close()
    finally:
        b.stop()


async def test_renewal_before_expiry_and_expiring_notice() -> None:
    b = await start_broker(["--channel-ttl", "3", "--expiring-before", "1", "--hellos-per-address", "1000"])
    try:
        c = await connect(b.url, generate(), server_key=b.fingerprint)
        first = c.channel.id if c.channel else ""
        renewed: list[bool] = []
        c.on("established", lambda info, r: renewed.append(r))
        await eventually(lambda: len(renewed) >= 2, timeout=8, what="two renewals")
        assert renewed == [True] * len(renewed)
        assert c.channel and c.channel.id != first
        assert await c.request("echo", "still") == "still"
        await c.close()
        # without renewal the channel expires: the broker says so (authenticated), the client handshakes afresh
        d = await connect(b.url, generate(), server_key=b.fingerprint, renew=False)
        notices: list[str] = []
        d.on("notice", lambda n: notices.append(n.kind))
        await eventually(lambda: "expired" in notices and d.stats["handshakes"] >= 2, timeout=8, what="expired, then a fresh handshake")
        assert "expiring" in notices
        assert await d.request("echo", "fresh") == "fresh"
        await d.close()
    finally:
        b.stop()


async def test_identity_move() -> None:
    op_key, keys = await operator()
    b = await start_broker(["--keys", keys, "--hellos-per-address", "1000"])
    try:
        op = await connect(b.url, op_key, server_key=b.fingerprint, reconnect=False)
        old, new = generate(), generate()
        c = await connect(b.url, old, server_key=b.fingerprint)
        got: list[tuple[object, int]] = []
        c.on("push", lambda m, i: got.append((m, i)))
        await op.request("admin.push", {"identity": old.fingerprint, "message": "before"})
        await eventually(lambda: got, what="the push before the move")
        before = c.channel.id if c.channel else ""
        await c.move_identity(new)
        assert c.identity == new.fingerprint and c.channel and c.channel.id != before
        assert (await c.request("whoami"))["identity"] == new.fingerprint
        # pushes are per identity: the new one's arrive, numbered afresh, and are delivered
        seq = (await op.request("admin.push", {"identity": new.fingerprint, "message": "after"}))["seq"]
        await eventually(lambda: len(got) == 2, what="the push after the move")
        assert got[1] == ("after", seq)
        await refused(c.move_identity(new), ErrorCode.BAD_REQUEST)
        await c.close()
        await op.close()
    finally:
        b.stop()


async def test_cluster_kill9_then_a_graceful_shutdown_each_resumed_on_another_node() -> None:
    redis = await start_redis()
    d = temp_dir()
    key = os.path.join(d, "server-key.pem")
    generate_key_file("Ed25519", key)
    wrap = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    env = {"PSIMBOLS_WRAP_KEY": wrap}
    common = ["--redis", redis.url, "--server-key-file", key, "--hellos-per-address", "1000"]
    a = await start_broker([*common, "--node", "a"], env)
    bnode = await start_broker([*common, "--node", "b"], env)
    fwd = Forwarder([a.port, bnode.port])
    url = await fwd.start()
    try:
        assert a.fingerprint == bnode.fingerprint
        c = await connect(url, generate(), server_key=a.fingerprint, backoff_base=0.05, backoff_max=0.5)
        assert (await c.request("whoami"))["node"] == "a"
        channel = c.channel.id if c.channel else ""
        a.kill9()
        await eventually(lambda: c.stats["resumes"] == 1, timeout=15, what="a resume on the other node")
        who = await c.request("whoami")
        assert who["node"] == "b" and who["channel"] == channel, who
        assert c.stats["handshakes"] == 1
        # a graceful shutdown of b: the `closing` notice, requests in flight still answered, a resume on c
        cnode = await start_broker([*common, "--node", "c"], env)
        fwd.backends = [cnode.port]
        notices: list[str] = []
        c.on("notice", lambda n: notices.append(n.kind))
        bnode.proc.terminate()
        await eventually(lambda: "closing" in notices, what="the closing notice")
        # requests made once the client knows the node is closing wait for the next node, and none fails
        held = [asyncio.ensure_future(c.request("echo", i)) for i in range(20)]
        assert await asyncio.gather(*held) == list(range(20))
        assert c.stats["resumes"] == 2
        who = await c.request("whoami")
        assert who["node"] == "c" and who["channel"] == channel, who
        await c.close()
        cnode.stop()
    finally:
        fwd.close()
        a.stop()
        bnode.stop()
        redis.proc.kill()
        redis.proc.wait(10)


async def test_python_and_node_clients_share_one_known_servers_file() -> None:
    home = temp_dir()
    env = {"PSIMBOLS_HOME": home}
    b1 = await start_broker(["--hellos-per-address", "1000"])
    b2 = await start_broker(["--hellos-per-address", "1000"])
    try:
        key = os.path.join(home, "k.pem")
        rc, out, err = await node_cli(["keygen", "-o", key], env)
        assert rc == 0, err
        # Python learns b1 on first use, in the default file; the Node CLI then trusts that line
        rc, out, err = await py_cli(["call", b1.url, "echo", '{"hi":1}', "--key", key], env)
        assert (rc, out) == (0, '{"hi":1}\n'), err
        assert f"psimbols: learnt the key of {b1.url}: {b1.fingerprint}" in err
        path = os.path.join(home, "known_servers")
        assert open(path).read() == f"{b1.url} {b1.fingerprint}\n"
        rc, out, err = await node_cli(["call", b1.url, "echo", '{"hi":2}', "--key", key], env)
        assert (rc, out) == (0, '{"hi":2}\n') and "learnt" not in err, err
        # Node learns b2; Python trusts that line, and learns nothing new
        rc, out, err = await node_cli(["call", b2.url, "echo", "3", "--key", key], env)
        assert rc == 0, err
        rc, out, err = await py_cli(["call", b2.url, "echo", "4", "--key", key], env)
        assert (rc, out, err) == (0, "4\n", "")
        assert open(path).read() == f"{b1.url} {b1.fingerprint}\n{b2.url} {b2.fingerprint}\n"
        # a line naming another key: both refuse, with the same code and the hint naming the file
        open(path, "w").write(f"{b1.url} {b2.fingerprint}\n")
        for run in (py_cli, node_cli):
            rc, out, err = await run(["call", b1.url, "echo", "--key", key], env)
            assert rc == 1 and "(server_key_mismatch)" in err and f"hint: the server's key is not the one recorded in {path}" in err, (run.__name__, err)
        assert FileKnownServers(path).get(b1.url) == b2.fingerprint, "a mismatch changes nothing"
    finally:
        b1.stop()
        b2.stop()


async def test_cli_shapes_match_the_node_cli() -> None:
    d = temp_dir()
    b = await start_broker()
    try:
        for t in ("ed25519", "p256", "rsa"):
            k = os.path.join(d, f"{t}.pem")
            rc, out, err = await py_cli(["keygen", "--type", t, "-o", k])
            assert rc == 0 and err.startswith(f"private key: {k} (mode 0600, keep it secret)"), err
            line = json.loads(out)
            assert set(line) == {"public_key", "fingerprint", "public_file"}
            rc, nfp, _ = await node_cli(["fingerprint", k])
            rc2, pfp, _ = await py_cli(["fingerprint", k])
            assert nfp == pfp == line["fingerprint"] + "\n"
            rc, out, err = await node_cli(["call", b.url, "whoami", "--key", k, "--server-key", b.fingerprint])
            assert rc == 0 and json.loads(out)["identity"] == line["fingerprint"], err
        rc, out, err = await py_cli(["keygen", "-o", os.path.join(d, "ed25519.pem")])
        assert rc == 1 and "exists; refusing to overwrite a key (bad_request)" in err and "hint: pass --force" in err
        rc, out, err = await py_cli(["call", b.url, "echo"])
        assert (rc, err) == (1, "error: required option '--key <file>' not specified\nhint: add --help for usage\n")
        rc, out, err = await py_cli(["call", "ws://127.0.0.1:1/", "echo", "--key", os.path.join(d, "rsa.pem")])
        assert rc == 1 and "(connection_lost)" in err and "hint: is the broker running at that URL?" in err
        rc, out, err = await py_cli(["call", b.url, "echo", "--key", os.path.join(d, "rsa.pem"), "--kem", "X-Wing"])
        assert rc == 1 and "(unsupported)" in err and "hint: this client has no X-Wing: it does not implement it" in err, err
    finally:
        b.stop()


async def test_cli_call_waits_a_busy_nodes_hint_and_tries_again_within_its_timeout() -> None:
    """§11.4, as the Node CLI: `call` waits retry_after_ms and tries again while the wait fits in --timeout;
    a hint past it is the error, with no further try."""
    d = temp_dir()
    b = await start_broker(["--hellos-per-address", "1000"])
    hints = [700, None, 5000]  # per connection: refuse its hello with this hint, or relay it
    refused_at: list[float] = []

    async def refuse(ws: Any, m: object) -> bool:
        if not isinstance(m, str) or json.loads(m).get("type") != "hello":
            return False
        hint = hints[len(relay.opened_at) - 1] if len(relay.opened_at) <= len(hints) else None
        if hint is None:
            return False
        refused_at.append(time.monotonic())
        await ws.send(json.dumps({"type": "error", "error": {"code": "too_many", "message": f"this node is busy; try again in {hint} ms"}, "retry_after_ms": hint}))
        await ws.close(4002)
        return True

    relay = Relay(b.url, refuse)
    url = await relay.start()
    try:
        k = os.path.join(d, "k.pem")
        rc, out, err = await py_cli(["keygen", "-o", k])
        assert rc == 0, err
        rc, out, err = await py_cli(["call", url, "echo", '{"n":1}', "--key", k, "--server-key", b.fingerprint])
        assert (rc, out) == (0, '{"n":1}\n'), err
        assert "this node is busy; try again in 700 ms; trying again in 700 ms" in err, err
        assert relay.opened_at[1] - refused_at[0] >= 0.69, relay.opened_at[1] - refused_at[0]
        rc, out, err = await py_cli(["call", url, "echo", "--key", k, "--server-key", b.fingerprint, "--timeout", "2000"])
        assert rc == 1 and "(too_many)" in err, err
        assert len(relay.opened_at) == 3, "no try after a refusal whose wait is past the timeout"
    finally:
        relay.close()
        b.stop()


async def test_a_renewal_refused_after_its_challenge_resumes_on_a_new_socket() -> None:
    """§5.7, §8.1: the server holds a challenged handshake pending, so the client sends no second hello on that socket."""
    b = await start_broker(["--hellos-per-address", "1000"])
    try:
        c = await connect(b.url, generate(), server_key=b.fingerprint, backoff_base=0.05, backoff_max=0.2)
        errors: list[PsimbolsError] = []
        c.on("error", errors.append)
        channel = c.channel.id if c.channel else ""
        real = c._check_server_key

        def forged_once(h, key):  # type: ignore[no-untyped-def]
            c._check_server_key = real  # type: ignore[method-assign]
            raise PsimbolsError(ErrorCode.PROTOCOL, "server signature over the challenge does not verify")

        c._check_server_key = forged_once  # type: ignore[method-assign]
        await refused(c.renew(), ErrorCode.PROTOCOL)
        await eventually(lambda: c.stats["resumes"] == 1 and c.stats["handshakes"] == 2, timeout=10, what="a resume on a new socket, then the renewal")
        assert await c.request("echo", "on") == "on"
        closes = [e.message for e in errors if e.code == ErrorCode.CONNECTION_LOST]
        assert not any("4000" in m or "4001" in m for m in closes), closes  # the server never had to refuse a second hello
        assert c.channel and c.channel.id != channel
        await c.close()
    finally:
        b.stop()


async def test_server_key_rollover_followed_through_the_shared_known_servers_file() -> None:
    """§5.6: the next key is recorded beside the current one, the switch replaces it; the Node CLI reads the same file."""
    d = temp_dir()
    home = os.path.join(d, "home")
    b = await start_broker(["--server-key-poll", "100", "--hellos-per-address", "1000"], data_dir=d)
    try:
        path = os.path.join(home, "known_servers")
        key = os.path.join(d, "k.pem")
        generate_key_file("Ed25519", key)
        events: list[dict] = []
        c = await connect(b.url, key, known_servers_file=path, backoff_base=0.05, backoff_max=0.2)
        c.on("server_key", events.append)
        old = b.fingerprint
        assert open(path).read() == f"{b.url} {old}\n"
        rc, out, err = await node_cli(["server-key", "next", "--data-dir", d, "--in", "0s"])
        assert rc == 0, err
        await asyncio.sleep(0.5)  # the node polls the key files every 100 ms
        await c.renew()
        await eventually(lambda: events, what="the announcement")
        nxt = events[0]["next"]
        assert events[0]["current"] == old and nxt and nxt != old and not events[0]["rotated"]
        assert open(path).read() == f"{b.url} {old} next={nxt}\n"
        # the Node CLI reads the same line and is not disturbed by next= (another identity: the same one would replace c's channel)
        other = os.path.join(d, "other.pem")
        generate_key_file("Ed25519", other)
        rc, out, err = await node_cli(["call", b.url, "echo", "1", "--key", other], {"PSIMBOLS_HOME": home})
        assert (rc, out) == (0, "1\n"), err
        rc, out, err = await node_cli(["server-key", "promote", "--data-dir", d])
        assert rc == 0, err
        await asyncio.sleep(0.5)
        await c.renew()  # the switch: a handshake under the recorded next key
        await eventually(lambda: len(events) == 2, what="the switch")
        assert events[1]["rotated"] and events[1]["current"] == nxt and events[1]["previous"] == old
        assert open(path).read() == f"{b.url} {nxt}\n"
        assert await c.request("echo", "after") == "after"
        await c.close()
        # a client that pinned only the old key was offline through the rollover: it fails loudly
        await refused(connect(b.url, generate(), server_key=old, reconnect=False), ErrorCode.SERVER_KEY_MISMATCH)
        rc, out, err = await py_cli(["call", b.url, "echo", "2", "--key", other], {"PSIMBOLS_HOME": home})
        assert (rc, out, err) == (0, "2\n", "")
    finally:
        b.stop()


async def test_an_unreadable_or_malformed_known_servers_file_fails_connect_at_once_as_node_does() -> None:
    """Any failure of the known-servers store reaches connect() as `unavailable` (client/connection.ts does the same), never a hang."""
    home = temp_dir()
    b = await start_broker(["--hellos-per-address", "1000"])
    try:
        key = os.path.join(home, "k.pem")
        generate_key_file("Ed25519", key)
        path = os.path.join(home, "known_servers")
        for content, detail in ((b"\xff\xfe\x00abc\n", ":1:"), (f"{b.url} not-a-fingerprint\n".encode(), ":1:")):
            open(path, "wb").write(content)
            t0 = time.monotonic()
            e = await refused(connect(b.url, load_key(key), known_servers_file=path, handshake_timeout=5, reconnect=False), ErrorCode.UNAVAILABLE)
            assert time.monotonic() - t0 < 2.5 and "known-servers" in e.message and detail in e.message, e.message
            for run in (py_cli, node_cli):
                rc, out, err = await asyncio.wait_for(run(["call", b.url, "echo", "1", "--key", key, "--known-servers", path, "--timeout", "2000"]), 20)
                assert rc == 1 and "(unavailable)" in err and "Redis" not in err and f"hint: fix or remove {path}" in err, (run.__name__, err)
            assert open(path, "rb").read() == content, "a failed read changes nothing"
    finally:
        b.stop()


async def test_a_known_servers_store_that_raises_fails_connect_with_unavailable() -> None:
    b = await start_broker(["--hellos-per-address", "1000"])

    class Broken:
        def get(self, url: str) -> str | None:
            raise RuntimeError("disk on fire")

        def get_next(self, url: str) -> str | None:
            return None

        def set(self, url: str, fingerprint: str) -> None:
            pass

        def set_next(self, url: str, fingerprint: str) -> None:
            pass

    class Unwritable(Broken):
        def get(self, url: str) -> str | None:
            return None

        def set(self, url: str, fingerprint: str) -> None:
            raise OSError("read-only")

    try:
        c = await connect(b.url, generate(), known_servers=Unwritable(), handshake_timeout=5, reconnect=False)
        assert await c.request("echo", 1) == 1, "a store that cannot record the key does not fail the channel"
        await c.close()
        t0 = time.monotonic()
        e = await refused(connect(b.url, generate(), known_servers=Broken(), handshake_timeout=5, reconnect=False), ErrorCode.UNAVAILABLE)
        assert time.monotonic() - t0 < 2.5 and "RuntimeError" in e.message, e.message
        e = await refused(connect(b.url, generate(), known_servers=object(), handshake_timeout=2), ErrorCode.BAD_REQUEST)  # type: ignore[arg-type]
        assert '"known_servers"' in e.message
    finally:
        b.stop()


async def test_a_stalled_broker_gives_timeout_within_handshake_timeout() -> None:
    """A server that accepts TCP but never answers the upgrade, and one that upgrades but never answers the hello: `timeout`, as the Node client."""
    import websockets.server

    held: list[asyncio.StreamWriter] = []

    async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    async def silent(ws: object) -> None:
        await asyncio.sleep(3600)

    tcp = await asyncio.start_server(mute, "127.0.0.1", 0)
    wss = await websockets.server.serve(silent, "127.0.0.1", 0)
    try:
        for port in (tcp.sockets[0].getsockname()[1], list(wss.sockets)[0].getsockname()[1]):
            t0 = time.monotonic()
            await refused(connect(f"ws://127.0.0.1:{port}/", generate(), known_servers_file=False, handshake_timeout=1), ErrorCode.TIMEOUT)
            assert time.monotonic() - t0 < 1.6, time.monotonic() - t0
    finally:
        for w in held:
            w.close()
        tcp.close()
        wss.close()


async def test_a_busy_nodes_retry_after_ms_is_waited_before_the_backoff() -> None:
    """§11.4: a first connect refused by a busy node rejects with `too_many` and its retry_after_ms;
    a resume refused so waits at least the hint (not the 50-100 ms backoff), then resumes, as the Node client."""
    b = await start_broker(["--hellos-per-address", "1000"])
    busy = {"hello": 0, "resume": 0}
    refused_at: list[float] = []
    BUSY = '{"type":"error","error":{"code":"too_many","message":"this node is busy; try again in 1200 ms"},"retry_after_ms":1200}'

    async def refuse(ws: Any, m: object) -> bool:
        kind = json.loads(m).get("type") if isinstance(m, str) else None
        if kind not in busy or busy[kind] == 0:
            return False
        busy[kind] -= 1
        refused_at.append(time.monotonic())
        await ws.send(BUSY)
        await ws.close(4002)
        return True

    relay = Relay(b.url, refuse)
    url = await relay.start()
    try:
        busy["hello"] = 1
        try:
            await connect(url, generate(), server_key=b.fingerprint)
            raise AssertionError("a busy node's refusal was not reported")
        except PsimbolsError as e:
            assert e.code == ErrorCode.TOO_MANY and e.retry_after_ms == 1200, (e.code, e.retry_after_ms)
        c = await connect(url, generate(), server_key=b.fingerprint, backoff_base=0.05, backoff_max=0.1, request_timeout=5)
        assert await c.request("echo", 1) == 1
        busy["resume"] = 1
        await relay.downstream[-1].close(1001)
        await eventually(lambda: len(refused_at) == 2 and len(relay.opened_at) >= 4, what="the refused resume, then a new socket")
        waited = relay.opened_at[3] - refused_at[1]
        assert waited >= 1.15, f"tried again {waited:.3f} s after a 1200 ms hint"
        assert await c.request("echo", 2) == 2 and c.stats["handshakes"] == 1, c.stats
        await c.close()
    finally:
        relay.close()
        b.stop()


async def test_a_renewal_refused_by_a_busy_node_is_tried_again_no_sooner_than_the_hint() -> None:
    """§11.4: a renewal refused with `too_many` while the channel still serves renews again no sooner
    than retry_after_ms (here 2.5 s, past the 1 to 2 s of the first renewal retry), as the Node client."""
    b = await start_broker(["--hellos-per-address", "1000"])
    hellos: list[float] = []
    busy = 0
    BUSY = '{"type":"error","error":{"code":"too_many","message":"this node is busy; try again in 2500 ms"},"retry_after_ms":2500}'

    async def refuse(ws: Any, m: object) -> bool:
        nonlocal busy
        if not isinstance(m, str) or json.loads(m).get("type") != "hello":
            return False
        hellos.append(time.monotonic())
        if busy == 0:
            return False
        busy -= 1
        await ws.send(BUSY)  # the socket stays: the channel still serves
        return True

    relay = Relay(b.url, refuse)
    url = await relay.start()
    try:
        c = await connect(url, generate(), server_key=b.fingerprint, request_timeout=5)
        first = c.channel.id
        busy = 1
        try:
            await c.renew()
            raise AssertionError("the busy refusal of the renewal was not reported")
        except PsimbolsError as e:
            assert e.code == ErrorCode.TOO_MANY and e.retry_after_ms == 2500, (e.code, e.retry_after_ms)
        assert await c.request("echo", 1) == 1  # the channel still serves
        await eventually(lambda: len(hellos) >= 3, timeout=6, what="the renewal tried again")
        waited = hellos[2] - hellos[1]
        assert waited >= 2.45, f"renewed again {waited:.3f} s after a 2500 ms hint"
        await eventually(lambda: c.channel.id != first, what="the renewed channel")
        await c.close()
    finally:
        relay.close()
        b.stop()


async def test_resumed_is_emitted_only_once_the_server_confirmed_the_resume() -> None:
    """§6.5: a `resumed` frame is not authenticated; the event (and stats) wait for an authenticated frame on the new binding, as the Node client."""
    b = await start_broker(["--hellos-per-address", "1000"])
    forge = False

    async def forger(ws: Any, m: object) -> bool:
        if not forge:
            return False
        f = json.loads(m) if isinstance(m, str) else {}
        if f.get("type") == "resume":  # answer as a forger would: no channel key, no authenticated frame after
            await ws.send(json.dumps({"type": "resumed", "source": "forged", "channel": f["channel"], "nonce": base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()}))
        return True

    relay = Relay(b.url, forger)
    url = await relay.start()
    downstream = relay.downstream
    try:
        c = await connect(url, generate(), server_key=b.fingerprint, backoff_base=0.05, backoff_max=0.1, request_timeout=1)
        resumed: list[str] = []
        c.on("resumed", lambda info: resumed.append(info.id))
        assert await c.request("echo", 1) == 1
        forge = True
        await downstream[-1].close(1001)  # type: ignore[attr-defined]
        await eventually(lambda: len(downstream) == 2 and c.state == "ready", what="the forged resume")
        await asyncio.sleep(1.5)
        assert resumed == [] and c.stats["resumes"] == 0, (resumed, c.stats)
        forge = False
        await downstream[-1].close(1001)  # type: ignore[attr-defined]
        await eventually(lambda: resumed, what="the real resume")
        assert resumed == [c.channel.id] and c.stats["resumes"] == 1 and await c.request("echo", 2) == 2  # type: ignore[union-attr]
        await c.close()
    finally:
        relay.close()
        b.stop()


async def test_max_queued_counts_the_requests_in_flight() -> None:
    """README: max_queued is the number of requests not yet answered, those on the wire included."""
    b = await start_broker(["--hellos-per-address", "1000"])
    try:
        c = await connect(b.url, generate(), server_key=b.fingerprint, max_in_flight=1, max_queued=2, reconnect=False)
        first, second = asyncio.ensure_future(c.request("echo", 1)), asyncio.ensure_future(c.request("echo", 2))
        await asyncio.sleep(0)
        await refused(c.request("echo", 3), ErrorCode.TOO_MANY)
        assert await asyncio.gather(first, second) == [1, 2] and await c.request("echo", 4) == 4
        await c.close()
    finally:
        b.stop()
