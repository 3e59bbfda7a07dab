"""The rules PROTOCOL.md settles for a second implementation, each against a real broker (raw frames where the
client would never send them) or the reference decoders. Listed in PROTOCOL.md §14, "Rules settled for a second
implementation"."""
from __future__ import annotations

import asyncio
import json
import os
import urllib.request

import websockets

from psimbols import ErrorCode, PsimbolsError, connect, generate
from psimbols import channel as ch
from psimbols import handshake as hs
from psimbols.encoding import b64u, dumps, from_b64u, loads
from psimbols.frames import decode_inner_push, decode_server_binary, decode_server_frame
from helpers import eventually, node_cli, start_broker, temp_dir
from test_live import operator


async def test_a_resume_gets_binding_features_only() -> None:
    """§4.8, §4.9: a resume offering server-key-next, identity-move and binary gets binary alone."""
    b = await start_broker(["--hellos-per-address", "1000"])
    try:
        c = await connect(b.url, generate(), server_key=b.fingerprint, reconnect=False)
        assert c.channel
        async with websockets.connect(b.url) as ws:
            await ws.send(dumps({"type": "resume", "channel": c.channel.id, "nonce": b64u(os.urandom(32)), "features": ["server-key-next", "identity-move", "binary"]}))
            resumed = decode_server_frame(await asyncio.wait_for(ws.recv(), 5))
        assert resumed["type"] == "resumed" and resumed["features"] == ["binary"], resumed
        await c.close()
    finally:
        b.stop()


async def test_move_to_equal_to_public_key_is_bad_request_close_4000() -> None:
    """§5.7: move_to naming the hello's own key."""
    b = await start_broker(["--hellos-per-address", "1000"])
    try:
        k = generate()
        h = hs.create_hello(k, move_to=k)
        assert h.hello["move_to"] == h.hello["public_key"]
        async with websockets.connect(b.url) as ws:
            await ws.send(h.bytes.decode())
            err = loads(await asyncio.wait_for(ws.recv(), 5))
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert err["type"] == "error" and err["error"]["code"] == "bad_request", err
            assert ws.close_code == 4000
    finally:
        b.stop()


def _well_known(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/psimbols", timeout=5) as r:
        return json.loads(r.read())


async def test_well_known_lists_binding_features_and_the_next_key_during_a_rollover() -> None:
    """§12: `features` are the binding features; `next_server_key` is {fingerprint, not_before} during a rollover only."""
    d = temp_dir()
    b = await start_broker(["--server-key-poll", "100"], data_dir=d)
    try:
        loop = asyncio.get_running_loop()
        doc = await loop.run_in_executor(None, _well_known, b.port)
        assert doc["features"] == ["binary"] and "next_server_key" not in doc, doc
        rc, _, err = await node_cli(["server-key", "next", "--data-dir", d, "--in", "1h"])
        assert rc == 0, err
        nk = await eventually(lambda: _well_known(b.port).get("next_server_key"), what="next_server_key")
        assert set(nk) == {"fingerprint", "not_before"} and nk["fingerprint"] != b.fingerprint and nk["not_before"].endswith("Z"), nk
    finally:
        b.stop()


async def test_a_move_on_a_bound_connection_keeps_it_and_copied_pushes_need_last_push_0() -> None:
    """§5.7: no notice to the mover, its socket stays; the copies come only on a resume with last_push 0."""
    op_key, keys = await operator()
    b = await start_broker(["--keys", keys, "--hellos-per-address", "1000"])
    try:
        op = await connect(b.url, op_key, server_key=b.fingerprint, reconnect=False)
        old, new = generate(), generate()
        c = await connect(b.url, old, server_key=b.fingerprint, reconnect=False)
        got: list[object] = []
        notices: list[str] = []
        c.on("push", lambda m, i: got.append(m))
        c.on("notice", lambda n: notices.append(n.kind))
        for m in ("one", "two"):
            await op.request("admin.push", {"identity": old.fingerprint, "message": m})
        await eventually(lambda: len(got) == 2, what="two pushes before the move")
        conn = c._conn
        await c.move_identity(new)
        await asyncio.sleep(0.3)
        assert c._conn is conn and conn is not None and conn.alive, "the mover's socket stays"
        assert notices == [] and got == ["one", "two"], (notices, got)  # no revoked, and the copies do not come live
        channel = c._channel
        assert channel is not None
        async with websockets.connect(b.url) as ws:
            nonce_c = os.urandom(32)
            await ws.send(dumps({"type": "resume", "channel": channel.id, "nonce": b64u(nonce_c), "last_push": 0, "features": ["binary"]}))
            resumed = decode_server_frame(await asyncio.wait_for(ws.recv(), 5))
            keys_ = ch.derive_binding(channel.key, channel.id, nonce_c, from_b64u(resumed["nonce"]), channel.type)
            await ws.send(ch.request_frame(keys_, 1, b'{"op":"ping"}', True))  # the first request activates the binding
            pushes: list[tuple[object, int]] = []
            while len(pushes) < 2:
                msg = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(msg, bytes) and msg[0] == ch.KIND_PUSH:
                    f = decode_server_binary(msg)
                    p = decode_inner_push(ch.open_with(keys_.s2c_aead, ch.KIND_PUSH, f["seq"], f["channel"], f["push"]).decode())
                    pushes.append((p["message"], p["id"]))
        assert [m for m, _ in pushes] == ["one", "two"] and pushes[0][1] < pushes[1][1], pushes
        await c.close()
        await op.close()
    finally:
        b.stop()
