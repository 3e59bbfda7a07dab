"""The asyncio client: the Node client's behaviour (client/connection.ts) over `websockets`.

    client = await connect("wss://broker.example/", key=load_key("me.pem"))
    print(await client.request("echo", {"hi": 1}))
    await client.close()

Requests wait while no channel is bound (reconnecting, resuming, a renewal's proof
in flight), each within its own timeout; at most `max_in_flight` are on the wire at
once (the broker's per-connection limit, PROTOCOL.md §11). Requests in flight when
the socket drops fail with `connection_lost`: retry only idempotent ones.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import websockets.client
from websockets.exceptions import ConnectionClosed

from . import channel as ch
from . import handshake as hs
from .encoding import b64u, dumps, from_b64u, loads
from .errors import ErrorCode, PsimbolsError, as_protocol, close_reason, is_terminal_close, wire_error_code
from .frames import (
    CHANNEL_TYPE_ALIASES,
    KEM_TYPES,
    MAX_LIST_ITEMS,
    F_BINARY,
    F_SERVER_KEY_NEXT,
    MAX_FRAME_BYTES,
    MAX_INNER_BYTES,
    MAX_TOKEN_CHARS,
    decode_inner_push,
    decode_inner_response,
    decode_server_binary,
    decode_server_frame,
)
from .keys import PublicKey, SigningKey
from .known_servers import FINGERPRINT, FileKnownServers, KnownServers, MemoryKnownServers, ServerKeyLearnt, default_known_servers_path

log = logging.getLogger("psimbols")
log.addHandler(logging.NullHandler())  # the application decides where diagnostics go

RENEW_SEQ_MARGIN = 2**16
RESUME_NONCE_BYTES = 32
CLOSE_REQUEST_TIMEOUT = 5.0
MAX_HANDSHAKE_REFUSALS = 5
TERMINAL_ERRORS = {ErrorCode.SERVER_KEY_MISMATCH, ErrorCode.PROTOCOL, ErrorCode.UNSUPPORTED, ErrorCode.FORBIDDEN}

KNOWN_SERVERS_UNREADABLE = "the known-servers store could not be read"
STATES = ("connecting", "handshaking", "ready", "renewing", "reconnecting", "closed")


def backoff_delay(attempt: int, rnd: float, base: float = 0.25, cap: float = 30.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)) seconds."""
    return float(rnd * min(cap, base * float(2 ** min(attempt, 62))))


MAX_SECONDS = 2_147_483.647  # the Node client's limit of a timer (client/connection.ts MAX_TIMER_MS)
EVENTS = ("state", "established", "resumed", "notice", "push", "server_key", "error", "close")


def _bad(name: str, expected: str) -> PsimbolsError:
    return PsimbolsError(ErrorCode.BAD_REQUEST, f'"{name}" expected {expected}')


def _seconds(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_SECONDS:  # NaN fails the comparison
        raise _bad(name, f"a number of seconds in (0, {MAX_SECONDS:g}]")
    return float(v)


def _count(name: str, v: object, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _bad(name, f"an integer >= {minimum}")
    return v


def _flag(name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise _bad(name, "True or False")
    return v


def _names(name: str, v: object, allowed: Sequence[str], min_items: int) -> list[str]:
    if not isinstance(v, (list, tuple)) or not min_items <= len(v) <= MAX_LIST_ITEMS or not all(isinstance(x, str) and x in allowed for x in v):
        raise _bad(name, f"a list of {min_items}..{MAX_LIST_ITEMS} names among {', '.join(allowed)}")
    return list(v)


def renew_delay(ttl: float, rnd: float) -> float:
    """PROTOCOL.md §8.3: renew `ttl × 2/3 × (1 − j)` seconds after the grant, `j` = 0.1 · rnd uniform in [0, 0.1]."""
    return ttl * 2 / 3 * (1 - 0.1 * rnd)


def renew_retry_delay(attempt: int, rnd: float) -> float:
    """§8.3: a renewal that failed while the channel serves is retried 1 s plus full jitter of up to 1 s · 2^attempt (at most 60 s) later (client/backoff.ts `renewRetryDelay`)."""
    return 1.0 + backoff_delay(attempt, rnd, 1.0, 60.0)


def _clean(text: str) -> str:
    return "".join(" " if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in text)[:256]


@dataclass
class ChannelInfo:
    id: str
    valid_until: str
    ttl: int
    server_key: str
    channel_type: str


@dataclass
class Notice:
    kind: str
    channel: str
    current: bool
    valid_until: str | None = None
    reason: str | None = None


@dataclass
class _Channel:
    id: str
    key: bytes
    type: str
    valid_until: str
    ttl: int
    server_key: str


@dataclass
class _Binding:
    keys: ch.BindingKeys
    binary: bool
    next_seq: int = 1
    last_push: int = 0
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)


@dataclass
class _Handshake:
    renewal: bool
    done: asyncio.Future[None]
    move_to: SigningKey | None = None
    step: str = "hello"
    challenged: bool = False  # the server holds this handshake pending: no other hello on this socket (§8.1)
    hello: hs.ClientHello | None = None
    proof: hs.ClientProof | None = None
    server_key: str | None = None
    learnt: bool = False
    known_next: str | None = None


@dataclass
class _Conn:
    ws: Any
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    alive: bool = True
    bindings: dict[str, _Binding] = field(default_factory=dict)
    current: _Binding | None = None
    gated: bool = False
    draining: bool = False
    hs: _Handshake | None = None
    resume: bytes | None = None
    deadline: asyncio.TimerHandle | None = None
    binary: bool = False
    unconfirmed: ChannelInfo | None = None  # a resume the server has not yet confirmed with an authenticated frame
    # set by _drop: why the socket is being left, and whether the client stops
    error: PsimbolsError | None = None
    final: bool = False


class Client:
    """A connected client; create it with :func:`connect`."""

    def __init__(
        self,
        url: str,
        key: SigningKey,
        *,
        server_key: str | Sequence[str] | None = None,
        known_servers: KnownServers | None = None,
        channel_types: Sequence[str] | None = None,
        kem: str = "X25519",
        features: Sequence[str] | None = None,
        follow_server_key: bool = True,
        request_timeout: float = 30.0,
        handshake_timeout: float = 30.0,
        max_in_flight: int = 64,
        max_queued: int = 1000,
        reconnect: bool = True,
        backoff_base: float = 0.25,
        backoff_max: float = 30.0,
        max_attempts: int | None = None,
        renew: bool = True,
    ) -> None:
        if not isinstance(url, str) or not (url.startswith("ws://") or url.startswith("wss://")) or len(url) < 6:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, '"url" expected a ws:// or wss:// URL')
        if not isinstance(key, SigningKey):
            raise PsimbolsError(ErrorCode.BAD_REQUEST, '"key" expected a SigningKey (see load_key)')
        pins = None if server_key is None else ([server_key] if isinstance(server_key, str) else list(server_key) if isinstance(server_key, (list, tuple)) else [])
        if pins is not None and (not pins or not all(isinstance(p, str) and FINGERPRINT.match(p) for p in pins)):
            raise PsimbolsError(ErrorCode.BAD_REQUEST, '"server_key" expected a fingerprint "SHA256:" + 43 base64 characters, or a non-empty list of them')
        if not isinstance(kem, str) or kem not in KEM_TYPES:
            raise _bad("kem", f"one of {', '.join(KEM_TYPES)}")
        if kem == "X-Wing":
            raise PsimbolsError(ErrorCode.UNSUPPORTED, "this client does not implement X-Wing (it needs ML-KEM-768); use X25519 or P-256; it never falls back to another KEM on its own (PROTOCOL.md §5.3.1)")
        types = None if channel_types is None else _names("channel_types", channel_types, list(CHANNEL_TYPE_ALIASES), 1)
        feats = [F_BINARY] if features is None else _names("features", features, [F_BINARY], 0)
        for name, v in (("follow_server_key", follow_server_key), ("reconnect", reconnect), ("renew", renew)):
            _flag(name, v)
        request_timeout, handshake_timeout = _seconds("request_timeout", request_timeout), _seconds("handshake_timeout", handshake_timeout)
        backoff_base, backoff_max = _seconds("backoff_base", backoff_base), _seconds("backoff_max", backoff_max)
        max_in_flight, max_queued = _count("max_in_flight", max_in_flight, 1), _count("max_queued", max_queued, 0)
        if max_attempts is not None:
            _count("max_attempts", max_attempts, 0)
        self.url = url
        self._shown_url = re.sub(r"^(wss?://)[^/?#]*@", r"\1…@", url)  # no user:password of the URL in a message
        self._key = key
        self._pins = pins
        if known_servers is not None and not all(callable(getattr(known_servers, m, None)) for m in ("get", "get_next", "set", "set_next")):
            raise PsimbolsError(ErrorCode.BAD_REQUEST, '"known_servers" expected an object with get(url), get_next(url), set(url, fingerprint) and set_next(url, fingerprint)')
        self._known = known_servers if known_servers is not None else MemoryKnownServers()
        self._hello_opts = {"channel_types": types, "kem": kem}
        self._features = feats
        self._follow = follow_server_key
        self.request_timeout = request_timeout
        self._handshake_timeout = handshake_timeout
        self._max_queued = max_queued
        self._inflight = asyncio.Semaphore(max_in_flight)
        self._reconnect = reconnect
        self._backoff = (backoff_base, backoff_max)
        self._max_attempts = max_attempts
        self._renew_enabled = renew
        self._listeners: dict[str, list[Callable[..., None]]] = {}
        self._state = "connecting"
        self._conn: _Conn | None = None
        self._channel: _Channel | None = None
        self._pinned: str | None = None
        self._pinned_next: str | None = None
        self._retired: str | None = None
        self._move_to: SigningKey | None = None
        self._last_push_id = 0
        self._fresh_push_ids = False
        self._ever_ready = False
        self._close_called = False
        self._final_error: PsimbolsError | None = None
        self._attempt = 0
        self._retry_after = 0.0  # seconds a busy node asked for (retry_after_ms), spent by the next backoff
        self._renew_attempt = 0
        self._renew_timer: asyncio.TimerHandle | None = None
        self._renew_due = False
        self._sendable = asyncio.Event()
        self._waiting = 0
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_task: asyncio.Task[None] | None = None
        self.stats = {"handshakes": 0, "resumes": 0, "reconnects": 0}

    # ---------------------------------------------------------------- public API

    @property
    def state(self) -> str:
        return self._state

    @property
    def identity(self) -> str:
        """Fingerprint of the identity key this client proves (changed by :meth:`move_identity`)."""
        return self._key.fingerprint

    @property
    def channel(self) -> ChannelInfo | None:
        c = self._channel
        return ChannelInfo(c.id, c.valid_until, c.ttl, c.server_key, c.type) if c else None

    def on(self, event: str, fn: Callable[..., None]) -> Callable[[], None]:
        """Adds a listener for `state`, `established`, `resumed`, `notice`, `push`, `server_key`, `error` or `close`."""
        if event not in EVENTS:
            raise _bad("event", f"one of {', '.join(EVENTS)}")
        if not callable(fn):
            raise _bad("fn", "a function")
        self._listeners.setdefault(event, []).append(fn)
        return lambda: self._listeners.get(event, []).remove(fn) if fn in self._listeners.get(event, []) else None

    async def request(self, op: str, data: Any = None, timeout: float | None = None) -> Any:
        """Sends `{op, data}` and returns the response's `data`; raises PsimbolsError with the server's or the client's code."""
        if self._state == "closed" or self._close_called:
            raise PsimbolsError(ErrorCode.CLOSED, "the client is closed")
        if not isinstance(op, str) or not 1 <= len(op) <= MAX_TOKEN_CHARS:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"op" expected a string of 1..{MAX_TOKEN_CHARS} characters')
        try:
            payload = dumps({"op": op} if data is None else {"op": op, "data": data}).encode("utf-8")
        except (TypeError, ValueError):
            raise PsimbolsError(ErrorCode.BAD_REQUEST, '"data" is not JSON-serialisable') from None
        if len(payload) > MAX_INNER_BYTES:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f"request too large: at most {MAX_INNER_BYTES} bytes of JSON")
        return await self._submit(op, payload, _seconds("timeout", timeout) if timeout is not None else self.request_timeout, internal=False)

    async def renew(self) -> None:
        """A new handshake on the same socket now (or joins the one running)."""
        if self._state == "closed" or self._close_called:
            raise PsimbolsError(ErrorCode.CLOSED, "the client is closed")
        conn = self._conn
        if conn is None or not conn.alive or conn.resume is not None:
            raise PsimbolsError(ErrorCode.CONNECTION_LOST, "not connected: the channel is resumed when the socket is back")
        await self._start_handshake(conn, conn.current is not None)

    async def move_identity(self, new_key: SigningKey) -> None:
        """Moves the identity to `new_key` in one handshake proving both keys (PROTOCOL.md §5.7)."""
        if not isinstance(new_key, SigningKey):
            raise _bad("new_key", "a SigningKey (see load_key)")
        if new_key.fingerprint == self._key.fingerprint:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, '"new_key" is the client\'s identity key already')
        conn = self._conn
        if conn is not None and conn.hs is not None:
            raise PsimbolsError(ErrorCode.TOO_MANY, "a handshake is running; move the identity once it is done")
        self._move_to = new_key
        try:
            await self.renew()
        finally:
            self._move_to = None
        if self._key is not new_key:
            raise PsimbolsError(ErrorCode.PROTOCOL, "the handshake did not move the identity")

    async def close(self) -> None:
        """Closes the channel (`channel.close`) and the socket; pending requests fail with `closed`. Idempotent."""
        if self._state == "closed":
            return
        if not self._close_called:
            self._close_called = True
            conn = self._conn
            if conn is not None and self._can_send(conn):
                try:
                    await self._submit("channel.close", b'{"op":"channel.close"}', min(self.request_timeout, CLOSE_REQUEST_TIMEOUT), internal=True)
                except PsimbolsError:
                    pass
            conn = self._conn
            if conn is not None:
                self._drop(conn, 1000, None, final=True)
        if self._run_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._run_task), 2.0)
            except asyncio.TimeoutError:
                self._run_task.cancel()
        self._finalise(1000, "closed by client", None)

    # ---------------------------------------------------------------- events and state

    def _emit(self, event: str, *args: Any) -> None:
        for fn in list(self._listeners.get(event, [])):
            try:
                fn(*args)
            except Exception:
                log.warning("an event listener threw", extra={"event": event})

    def _set_state(self, nxt: str) -> None:
        prev = self._state
        if nxt == prev or prev == "closed":
            return
        self._state = nxt
        self._emit("state", nxt, prev)

    def _emit_error(self, e: PsimbolsError) -> None:
        log.info("%s (%s)", e.message, e.code.value)
        self._emit("error", e)

    # ---------------------------------------------------------------- socket life

    async def _run(self) -> None:
        """The connection task: whatever fails in it ends the client with a PsimbolsError, so connect() and every request settle."""
        try:
            await self._run_sockets()
        except asyncio.CancelledError:
            raise
        except Exception as cause:
            log.debug("internal error in the connection task", exc_info=True)
            self._abort(PsimbolsError(ErrorCode.INTERNAL, f"the client failed ({type(cause).__name__})"), "client error")

    def _abort(self, e: PsimbolsError, reason: str) -> None:
        """Ends the client at once with `e`: the socket is left, pending requests and connect() fail."""
        conn = self._conn
        if conn is not None:
            self._drop(conn, 1000, e, final=True)
            self._teardown(conn)
        self._finalise(1006, reason, e)
        task = self._run_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    async def _run_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._close_called and self._state != "closed":
            try:
                ws = await asyncio.wait_for(
                    websockets.client.connect(self.url, max_size=MAX_FRAME_BYTES, compression=None, ping_interval=20, ping_timeout=20, close_timeout=1, open_timeout=None),
                    self._handshake_timeout,
                )
            except asyncio.CancelledError:
                raise
            except Exception as cause:
                e = (
                    PsimbolsError(ErrorCode.TIMEOUT, "no answer from the server while opening the WebSocket")
                    if isinstance(cause, TimeoutError)
                    else PsimbolsError(ErrorCode.CONNECTION_LOST, f"cannot open a WebSocket to {self._shown_url} ({type(cause).__name__})")
                )
                if not self._ever_ready or not self._reconnect:
                    return self._finalise(1006, "connect failed", e)
                self._emit_error(e)
                if not await self._wait_backoff():
                    return
                continue
            conn = _Conn(ws)
            self._conn = conn
            if self._ever_ready:
                self.stats["reconnects"] += 1
            conn.deadline = loop.call_later(self._handshake_timeout, self._on_deadline, conn)
            if self._channel is not None:
                await self._send_resume(conn, self._channel)
            else:
                self._start_handshake(conn, False)
            try:
                async for msg in ws:
                    if not conn.alive:
                        break
                    try:
                        await self._on_message(conn, msg)
                    except Exception as cause:  # a bug or a store's failure: it reaches connect() and the requests, as Node's #inbound
                        log.debug("internal error while processing a frame", exc_info=True)
                        self._drop(conn, 4000, as_protocol(cause, "internal error while processing a frame"))
            except ConnectionClosed:
                pass
            except asyncio.CancelledError:
                raise
            code = ws.close_code if ws.close_code is not None else 1006
            self._teardown(conn)
            if conn.final or self._close_called:
                return self._finalise(code, close_reason(code), conn.error)
            if conn.error is None:
                conn.error = PsimbolsError(ErrorCode.CONNECTION_LOST, f"the connection closed ({code} {close_reason(code)})")
                if is_terminal_close(code) and not self._ever_ready:
                    return self._finalise(code, close_reason(code), conn.error)
                self._emit_error(conn.error)
            if not self._ever_ready or not self._reconnect:
                return self._finalise(code, close_reason(code), conn.error)
            if not await self._wait_backoff():
                return

    async def _wait_backoff(self) -> bool:
        if self._max_attempts is not None and self._attempt >= self._max_attempts:
            self._finalise(1006, "reconnect gave up", PsimbolsError(ErrorCode.CONNECTION_LOST, f"gave up after {self._attempt} reconnect attempts"))
            return False
        delay = self._retry_after + backoff_delay(self._attempt, random.random(), *self._backoff)
        self._retry_after = 0.0
        self._attempt += 1
        self._set_state("reconnecting")
        log.info("reconnecting in %.3f s (attempt %d)", delay, self._attempt)
        await asyncio.sleep(delay)
        return not self._close_called and self._state != "closed"

    def _on_deadline(self, conn: _Conn) -> None:
        self._drop(conn, 4001, PsimbolsError(ErrorCode.TIMEOUT, "no answer from the server while handshaking or resuming"))

    def _drop(self, conn: _Conn, code: int, e: PsimbolsError | None, final: bool = False) -> None:
        """Leaves `conn`: closes the socket with `code`; the client stops when `final` or before its first channel."""
        if not conn.alive:
            return
        conn.alive = False
        conn.error = e
        conn.final = final or not self._ever_ready or (not self._reconnect and e is not None)
        if e is not None and not conn.final:
            self._emit_error(e)
        self._sendable.clear()
        asyncio.ensure_future(conn.ws.close(code if code == 1000 or 3000 <= code <= 4999 else 1000, close_reason(code)))

    def _teardown(self, conn: _Conn) -> None:
        conn.alive = False
        if conn.deadline:
            conn.deadline.cancel()
        if self._conn is conn:
            self._conn = None
        self._sendable.clear()
        lost = (
            PsimbolsError(ErrorCode.CLOSED, "the client was closed before the response arrived")
            if self._close_called
            else PsimbolsError(ErrorCode.CONNECTION_LOST, "the connection was lost before the response arrived; the request may or may not have been processed")
        )
        for b in conn.bindings.values():
            for fut in b.pending.values():
                if not fut.done():
                    fut.set_exception(lost)
            b.pending.clear()
        conn.bindings.clear()
        conn.current = None
        h = conn.hs
        conn.hs = None
        if h is not None:
            if not h.done.done():
                h.done.set_exception(conn.error or lost)
            if h.renewal and h.step == "proof":
                self._drop_channel()

    def _finalise(self, code: int, reason: str, error: PsimbolsError | None) -> None:
        if self._state == "closed":
            return
        if self._renew_timer:
            self._renew_timer.cancel()
        self._drop_channel()
        self._final_error = error
        self._set_state("closed")
        self._sendable.set()  # wakes every waiting request, which then sees the client closed
        if not self._ready.done():
            self._ready.set_exception(error or PsimbolsError(ErrorCode.CONNECTION_LOST, "the connection closed before a channel was established"))
        self._emit("close", code, reason, error)

    # ---------------------------------------------------------------- frames

    async def _on_message(self, conn: _Conn, msg: str | bytes) -> None:
        try:
            if isinstance(msg, bytes):
                if not conn.binary:
                    return self._drop(conn, 1003, PsimbolsError(ErrorCode.PROTOCOL, "the server sent a binary frame"))
                f = decode_server_binary(msg)
            else:
                f = decode_server_frame(msg)
        except PsimbolsError as e:
            return self._drop(conn, 4000, as_protocol(e, "the server sent a malformed frame"))
        t = f["type"]
        if t == "challenge":
            await self._on_challenge(conn, f)
        elif t == "established":
            await self._on_established(conn, f)
        elif t == "response":
            self._on_response(conn, f)
        elif t == "push":
            self._on_push(conn, f)
        elif t == "resumed":
            await self._on_resumed(conn, f)
        elif t == "error":
            await self._on_error_frame(conn, f)

    def _unexpected(self, conn: _Conn, what: str) -> None:
        self._drop(conn, 4000, PsimbolsError(ErrorCode.PROTOCOL, f"the server sent an unexpected {what} frame"))

    async def _send(self, conn: _Conn, data: str | bytes) -> None:
        async with conn.lock:
            if conn.alive:
                try:
                    await conn.ws.send(data)
                except ConnectionClosed:
                    pass

    # ---------------------------------------------------------------- handshake (§5)

    def _start_handshake(self, conn: _Conn, renewal: bool) -> asyncio.Future[None]:
        if conn.hs is not None:
            return conn.hs.done
        loop = asyncio.get_running_loop()
        h = _Handshake(renewal, loop.create_future(), move_to=self._move_to)
        h.done.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)  # handled by whoever awaits it
        conn.hs = h
        self._set_state("renewing" if renewal else "handshaking")
        if conn.deadline:
            conn.deadline.cancel()
        conn.deadline = loop.call_later(self._handshake_timeout, self._on_deadline, conn)
        feats = list(self._features)
        if self._follow and F_SERVER_KEY_NEXT not in feats:
            feats.append(F_SERVER_KEY_NEXT)  # in the hello only, never in a resume
        try:
            h.hello = hs.create_hello(self._key, self._hello_opts["channel_types"], self._hello_opts["kem"], feats, move_to=h.move_to)  # type: ignore[arg-type]
        except PsimbolsError as e:
            self._handshake_failed(conn, h, e)
            return h.done
        asyncio.ensure_future(self._send(conn, h.hello.bytes.decode("utf-8")))
        return h.done

    def _check_server_key(self, h: _Handshake, key: PublicKey) -> None:
        got = key.fingerprint

        def mismatch(expected: str, where: str) -> PsimbolsError:
            if got == self._retired:
                return PsimbolsError(ErrorCode.UNAVAILABLE, f"the server at {self._shown_url} presented the server key this client rotated away from ({got}); not connecting to it")
            return PsimbolsError(
                ErrorCode.SERVER_KEY_MISMATCH,
                f"SERVER KEY MISMATCH for {self._shown_url}: expected {expected} ({where}), but the server presented {got}. "
                f"Someone may be intercepting the connection, or the server key was replaced. Not connecting; if the new key is legitimate, update {where}.",
            )

        nxt = self._pinned_next
        if self._pins is not None:
            if got not in self._pins and got != nxt and got != self._pinned:
                raise mismatch(" or ".join(self._pins), "the server_key option")
        else:
            try:
                known = self._known.get(self.url)
                known_next = self._known.get_next(self.url) if self._follow else None
            except Exception as cause:  # whatever the store raises, as client/connection.ts: `unavailable`
                detail = cause.message if isinstance(cause, PsimbolsError) else type(cause).__name__
                raise PsimbolsError(ErrorCode.UNAVAILABLE, f"{KNOWN_SERVERS_UNREADABLE} ({detail})") from cause
            if known is not None and got not in (known, known_next, nxt):
                raise mismatch(known, "the known-servers store")
            if self._pinned is not None and got not in (self._pinned, nxt, known_next):
                raise mismatch(self._pinned, "the key this client accepted earlier")
            h.learnt = known != got
            h.known_next = known_next
        h.server_key = got

    async def _on_challenge(self, conn: _Conn, f: dict[str, Any]) -> None:
        h = conn.hs
        if h is None or h.step != "hello" or h.hello is None:
            return self._unexpected(conn, "challenge")
        h.challenged = True
        try:
            hello, handshake = h.hello, h
            p = hs.answer_challenge(hello, f, lambda k: self._check_server_key(handshake, k))
        except PsimbolsError as e:
            return self._handshake_failed(conn, h, as_protocol(e, "the challenge is invalid"))
        h.step = "proof"
        h.proof = p
        async with conn.lock:
            if conn.hs is not h or not conn.alive:
                return
            # From the proof on the server may retire the old channel: new requests wait for the new binding.
            conn.gated = True
            self._sendable.clear()
            try:
                await conn.ws.send(dumps(p.proof))
            except ConnectionClosed:
                pass

    async def _on_established(self, conn: _Conn, f: dict[str, Any]) -> None:
        h = conn.hs
        if h is None or h.step != "proof" or h.proof is None or h.hello is None or h.server_key is None:
            return self._unexpected(conn, "established")
        try:
            grant, channel_key = hs.open_grant(h.proof, f)
            keys = ch.derive_binding(channel_key, grant["channel"], h.hello.nonce_c, h.proof.nonce_s, grant["key"]["type"])
        except PsimbolsError as e:
            return self._handshake_failed(conn, h, as_protocol(e, "the grant is invalid"))
        features = h.proof.features
        next_key = h.proof.next_key if self._follow else None
        self._end_handshake(conn, h)
        if h.move_to is not None:
            log.info("identity moved from %s to %s", self._key.fingerprint, h.move_to.fingerprint)
            self._key = h.move_to
            self._last_push_id = 0  # the new identity's pushes are numbered afresh
        server_key = h.server_key
        previous = self._pinned
        rotated = server_key != previous if previous is not None else h.known_next == server_key
        if rotated and previous is not None:
            self._retired = previous
        announced = next_key is not None and next_key.fingerprint != self._pinned_next
        self._pinned = server_key
        if next_key is not None:
            self._pinned_next = next_key.fingerprint
        elif rotated:
            self._pinned_next = None
        if self._pins is None:
            try:
                if h.learnt:
                    self._known.set(self.url, server_key)
                if next_key is not None and next_key.fingerprint != h.known_next:
                    self._known.set_next(self.url, next_key.fingerprint)
            except Exception as cause:  # the channel is established: the store's failure is reported, not fatal
                detail = cause.message if isinstance(cause, PsimbolsError) else type(cause).__name__
                self._emit_error(PsimbolsError(ErrorCode.UNAVAILABLE, f"the known-servers store could not be written ({detail})"))
        if rotated or announced:
            self._emit("server_key", {"url": self.url, "current": server_key, "rotated": rotated, "next": next_key.fingerprint if next_key else None, "not_before": next_key.not_before if next_key else None, "previous": previous if rotated else None})
        self._drop_channel()
        c = _Channel(grant["channel"], channel_key, grant["key"]["type"], grant["valid_until"], grant["ttl"], server_key)
        self._channel = c
        old = conn.current
        b = self._bind(conn, keys, features)
        if old is not None and old is not b:
            self._retire_if_idle(conn, old)
        self.stats["handshakes"] += 1
        self._attempt = 0
        self._retry_after = 0.0
        self._renew_attempt = 0
        self._schedule_renew(c.ttl)
        self._ever_ready = True
        if not h.renewal:
            self._fresh_push_ids = True
        self._set_state("ready")
        self._emit("established", self.channel, h.renewal)
        if not h.done.done():
            h.done.set_result(None)
        if not self._ready.done():
            self._ready.set_result(None)

    @staticmethod
    def _end_handshake(conn: _Conn, h: _Handshake) -> None:
        """The handshake on `conn` is over (granted or failed): its secrets and its deadline go."""
        conn.hs = None
        h.hello = None
        h.proof = None
        if conn.deadline:
            conn.deadline.cancel()
            conn.deadline = None

    def _handshake_failed(self, conn: _Conn, h: _Handshake, e: PsimbolsError) -> None:
        if conn is not self._conn or conn.hs is not h:
            return
        self._end_handshake(conn, h)
        if not h.done.done():
            h.done.set_exception(e)
        refusal = e.code in TERMINAL_ERRORS
        final = not self._ever_ready or e.code == ErrorCode.SERVER_KEY_MISMATCH or (refusal and self._renew_attempt + 1 >= MAX_HANDSHAKE_REFUSALS)
        if final:
            log.warning("%s (%s)", e.message, e.code.value)
            return self._drop(conn, 4000 if e.code == ErrorCode.PROTOCOL else 1000, e, final=True)
        self._emit_error(e)
        conn.gated = False
        # A busy node's hint (§11.4) bounds the next renewal from below, as the reconnect's.
        delay = max((e.retry_after_ms or 0) / 1000, renew_retry_delay(self._renew_attempt, random.random()))
        self._renew_attempt += 1
        if conn.current is not None and not h.challenged:
            self._set_state("ready")
            self._update_sendable(conn)
            if self._renew_enabled:
                self._renew_at(delay)
        elif conn.current is not None:
            # The server still holds the handshake its challenge opened (§5.7, §8.1): leave this
            # socket and resume the channel, untouched, on a new one (then renew, if this was a renewal).
            if h.renewal and h.move_to is None and self._renew_enabled:
                self._renew_due = True
            self._drop(conn, 1000, None)
        else:
            self._drop(conn, 1000, None)  # retry on a fresh socket, through the reconnect backoff

    # ---------------------------------------------------------------- renewal (§8.3)

    def _schedule_renew(self, ttl: int) -> None:
        if self._renew_timer:
            self._renew_timer.cancel()
        self._renew_timer = None
        self._renew_due = False
        if self._renew_enabled:
            self._renew_at(renew_delay(ttl, random.random()))

    def _renew_at(self, delay: float) -> None:
        if self._renew_timer:
            self._renew_timer.cancel()
        self._renew_timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._renew_now)

    def _renew_now(self) -> None:
        self._renew_timer = None
        if self._close_called or self._state == "closed":
            return
        conn = self._conn
        if conn is not None and conn.alive and conn.current is not None and conn.hs is None:
            self._start_handshake(conn, True)
        elif conn is None or conn.hs is None:
            self._renew_due = True

    # ---------------------------------------------------------------- resume (§6.5)

    async def _send_resume(self, conn: _Conn, c: _Channel) -> None:
        nonce = os.urandom(RESUME_NONCE_BYTES)
        conn.resume = nonce
        frame: dict[str, Any] = {"type": "resume", "channel": c.id, "nonce": b64u(nonce)}
        if self._last_push_id > 0:
            frame["last_push"] = self._last_push_id
        if self._features:
            frame["features"] = self._features
        await self._send(conn, dumps(frame))

    async def _on_resumed(self, conn: _Conn, f: dict[str, Any]) -> None:
        nonce = conn.resume
        c = self._channel
        if nonce is None or c is None or f["channel"] != c.id:
            return self._unexpected(conn, "resumed")
        feats = f.get("features", [])
        if not all(x in self._features for x in feats):
            return self._drop(conn, 4000, PsimbolsError(ErrorCode.PROTOCOL, "server chose a feature that was not offered"))
        conn.resume = None
        if conn.deadline:
            conn.deadline.cancel()
            conn.deadline = None
        keys = ch.derive_binding(c.key, c.id, nonce, from_b64u(f["nonce"], "nonce"), c.type)
        self._bind(conn, keys, feats)
        self._attempt = 0
        self._retry_after = 0.0
        conn.unconfirmed = self.channel
        self._set_state("ready")
        # The server activates the binding on its first authenticated request: send one now;
        # its authenticated answer confirms the resume (_confirm_resume), as client/connection.ts.
        if self._waiting == 0:
            asyncio.ensure_future(self._ping())
        if self._renew_due:
            self._renew_due = False
            self._start_handshake(conn, True)

    def _confirm_resume(self, conn: _Conn, b: _Binding) -> None:
        """A frame authenticated on `b`: if `b` is the binding a resume made, the resume is confirmed (§6.5)."""
        info = conn.unconfirmed
        if info is None or b is not conn.current or info.id != b.keys.channel:
            return
        conn.unconfirmed = None
        self.stats["resumes"] += 1
        log.info("channel resumed")
        self._emit("resumed", info)

    async def _ping(self) -> None:
        try:
            await self._submit("ping", b'{"op":"ping"}', self.request_timeout, internal=True)
        except PsimbolsError as e:
            log.debug("ping failed (%s)", e.code.value)

    # ---------------------------------------------------------------- bindings

    def _bind(self, conn: _Conn, keys: ch.BindingKeys, features: list[str]) -> _Binding:
        b = _Binding(keys, F_BINARY in features)
        conn.binary = conn.binary or b.binary
        clash = conn.bindings.get(keys.channel)
        if clash is not None and clash is not conn.current:
            self._abandon(clash, PsimbolsError(ErrorCode.PROTOCOL, "the server reused a channel id"))
        conn.bindings[keys.channel] = b
        conn.current = b
        conn.gated = False
        self._update_sendable(conn)
        return b

    def _abandon(self, b: _Binding, e: PsimbolsError) -> None:
        for fut in b.pending.values():
            if not fut.done():
                fut.set_exception(e)
        b.pending.clear()

    def _retire_if_idle(self, conn: _Conn, b: _Binding) -> None:
        if b is not conn.current and not b.pending and conn.bindings.get(b.keys.channel) is b:
            del conn.bindings[b.keys.channel]

    def _drop_channel(self) -> None:
        self._channel = None  # Python cannot zero the key bytes; dropping the reference is what it can do
        if self._renew_timer:
            self._renew_timer.cancel()
        self._renew_timer = None
        self._renew_due = False

    def _channel_lost(self, conn: _Conn, why: str) -> None:
        conn.unconfirmed = None
        log.info("channel lost (%s); new handshake", why)
        self._drop_channel()
        b = conn.current
        conn.current = None
        self._sendable.clear()
        if b is not None:
            self._retire_if_idle(conn, b)
        if conn.hs is not None:
            self._set_state("handshaking")
        else:
            self._start_handshake(conn, False)

    def _can_send(self, conn: _Conn) -> bool:
        b = conn.current
        return conn.alive and b is not None and not conn.gated and not conn.draining and conn.resume is None and b.next_seq <= b.keys.max_seq

    def _update_sendable(self, conn: _Conn) -> None:
        if conn is self._conn and self._can_send(conn):
            self._sendable.set()
        else:
            self._sendable.clear()

    # ---------------------------------------------------------------- requests (§6)

    async def _submit(self, op: str, payload: bytes, timeout: float, internal: bool) -> Any:
        if not internal and self._waiting >= self._max_queued:
            raise PsimbolsError(ErrorCode.TOO_MANY, f"{self._max_queued} requests are already unanswered (waiting or in flight): max_queued")
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout):  # no extra task per request, unlike wait_for
                return await self._send_request(payload, internal)
        except TimeoutError:
            raise PsimbolsError(ErrorCode.TIMEOUT, f'request "{op}" got no response within {timeout:g} s') from None
        finally:
            self._waiting -= 1

    async def _send_request(self, payload: bytes, internal: bool) -> Any:
        async with self._inflight:
            while True:
                if self._state == "closed" or (self._close_called and not internal):
                    raise self._final_error if (self._final_error and not self._close_called) else PsimbolsError(ErrorCode.CLOSED, "the client is closed")
                await self._sendable.wait()
                conn = self._conn
                if conn is None:
                    self._sendable.clear()
                    continue
                async with conn.lock:
                    if not self._can_send(conn):
                        self._update_sendable(conn)
                        continue
                    b = conn.current
                    assert b is not None
                    seq = b.next_seq
                    b.next_seq += 1
                    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                    b.pending[seq] = fut
                    frame = ch.request_frame(b.keys, seq, payload, b.binary)
                    try:
                        await conn.ws.send(frame)
                    except ConnectionClosed:
                        pass  # the teardown fails it with connection_lost
                    if seq >= b.keys.max_seq - RENEW_SEQ_MARGIN and conn.hs is None:
                        self._start_handshake(conn, True)  # rebind well before the per-binding cap (§6.4)
                break
        try:
            return await fut
        finally:
            if not fut.done():
                b.pending.pop(seq, None)
                self._retire_if_idle(conn, b)

    def _settle(self, conn: _Conn, b: _Binding, seq: int, e: PsimbolsError | None, data: Any = None) -> None:
        fut = b.pending.pop(seq, None)
        if fut is None:
            return
        if not fut.done():
            fut.set_exception(e) if e is not None else fut.set_result(data)
        self._retire_if_idle(conn, b)
        self._leave_if_drained(conn)

    def _leave_if_drained(self, conn: _Conn) -> None:
        if not conn.draining or conn is not self._conn:
            return
        if any(b.pending for b in conn.bindings.values()):
            return
        log.info("node is closing and nothing is in flight: moving to another node")
        self._drop(conn, 1001, None)

    def _on_response(self, conn: _Conn, f: dict[str, Any]) -> None:
        b = conn.bindings.get(f["channel"])
        if b is None or f["seq"] not in b.pending:
            return
        try:
            text = ch.open_with(b.keys.s2c_aead, ch.KIND_RESPONSE, f["seq"], f["channel"], f["response"]).decode("utf-8")
        except (PsimbolsError, UnicodeDecodeError):
            return self._emit_error(PsimbolsError(ErrorCode.PROTOCOL, "a response did not authenticate; ignored"))
        self._confirm_resume(conn, b)
        try:
            inner = decode_inner_response(text)
        except (PsimbolsError, ValueError) as e:
            return self._settle(conn, b, f["seq"], as_protocol(e, "the server sent a malformed response"))
        if "error" in inner:
            self._settle(conn, b, f["seq"], PsimbolsError(wire_error_code(inner["error"]["code"]), _clean(inner["error"]["message"])))
        else:
            self._settle(conn, b, f["seq"], None, inner["data"])

    async def _on_error_frame(self, conn: _Conn, f: dict[str, Any]) -> None:
        e = PsimbolsError(wire_error_code(f["error"]["code"]), f"the server answered: {_clean(f['error']['message'])}", retry_after_ms=f.get("retry_after_ms"))
        if "retry_after_ms" in f and "seq" not in f:
            self._retry_after = f["retry_after_ms"] / 1000  # the next attempt waits this, then its backoff (§11.4)
        if "seq" in f:
            b = conn.bindings.get(f["channel"]) if "channel" in f else conn.current
            if b is None or f["seq"] not in b.pending:
                return
            self._settle(conn, b, f["seq"], e)
            if e.code == ErrorCode.UNAUTHORISED and b is conn.current and conn.hs is None:
                self._channel_lost(conn, "the server does not know the channel")
            return
        if conn.resume is not None:
            conn.resume = None
            if e.code == ErrorCode.UNAUTHORISED:
                self._drop_channel()
                self._start_handshake(conn, False)
            else:
                self._drop(conn, 1000, e)
            return
        if conn.hs is not None:
            return self._handshake_failed(conn, conn.hs, e)
        self._emit_error(e)

    # ---------------------------------------------------------------- pushes (§7)

    def _on_push(self, conn: _Conn, f: dict[str, Any]) -> None:
        b = conn.bindings.get(f["channel"])
        if b is None:
            return
        try:
            text = ch.open_with(b.keys.s2c_aead, ch.KIND_PUSH, f["seq"], f["channel"], f["push"]).decode("utf-8")
        except (PsimbolsError, UnicodeDecodeError):
            return self._emit_error(PsimbolsError(ErrorCode.PROTOCOL, "a push did not authenticate; ignored"))
        self._confirm_resume(conn, b)
        if f["seq"] <= b.last_push:  # checked after authentication: a forged high seq cannot mute real pushes
            return
        b.last_push = f["seq"]
        try:
            p = decode_inner_push(text)
        except (PsimbolsError, ValueError) as e:
            return self._emit_error(as_protocol(e, "the server sent a malformed push; ignored"))
        if "notice" in p:
            return self._on_notice(conn, b, p)
        fresh = self._fresh_push_ids and b is conn.current
        if p["id"] <= self._last_push_id and not fresh:
            return  # delivered already (live and again from the window): at most once (§7.2)
        self._last_push_id = p["id"]
        self._fresh_push_ids = False
        self._emit("push", p["message"], p["id"])

    def _on_notice(self, conn: _Conn, b: _Binding, p: dict[str, Any]) -> None:
        current = b is conn.current
        self._emit("notice", Notice(p["notice"], b.keys.channel, current, p.get("valid_until"), _clean(p["reason"]) if "reason" in p else None))
        if not current or self._close_called:
            return
        renewing = conn.hs is not None and conn.hs.step == "proof"
        kind = p["notice"]
        if kind == "expiring":
            if self._renew_enabled and conn.hs is None:
                self._start_handshake(conn, True)
        elif kind in ("expired", "closed"):
            if not renewing:
                self._channel_lost(conn, f"channel {kind}")
        elif kind in ("revoked", "replaced"):
            if renewing and kind == "replaced":
                return
            e = PsimbolsError(ErrorCode.UNAUTHORISED, f"the channel was {kind} by the server; not reconnecting")
            self._drop(conn, 4005 if kind == "revoked" else 4004, e, final=True)
        elif kind == "closing":
            conn.draining = True
            self._sendable.clear()
            self._leave_if_drained(conn)


async def connect(
    url: str,
    key: SigningKey | str | os.PathLike[str],
    *,
    server_key: str | Sequence[str] | None = None,
    known_servers: KnownServers | None = None,
    known_servers_file: str | os.PathLike[str] | bool | None = None,
    on_server_key_learnt: Callable[[ServerKeyLearnt], None] | None = None,
    **options: Any,
) -> Client:
    """Opens a channel and returns once it is established.

    `key` is a SigningKey or the path of a PKCS#8 PEM file. Without `server_key`
    or `known_servers`, server keys are trusted on first use and kept in the
    known-servers file (`known_servers_file`, default as the Node CLI's;
    False keeps them in memory). Raises PsimbolsError with the first failure,
    without retrying: `server_key_mismatch`, `forbidden`, `unsupported`,
    `protocol`, `too_many`, `unavailable`, `timeout`, `connection_lost`.
    """
    from .keys import load_key

    unknown = sorted(set(options) - set(inspect.signature(Client.__init__).parameters) - {"self", "url", "key"})
    if unknown:
        raise _bad(unknown[0], "no such option: see connect()'s options")
    if known_servers_file is True or not (known_servers_file is None or known_servers_file is False or isinstance(known_servers_file, (str, os.PathLike))):
        raise _bad("known_servers_file", "a path, or False to keep server keys in memory")
    if on_server_key_learnt is not None and not callable(on_server_key_learnt):
        raise _bad("on_server_key_learnt", "a function")
    k = load_key(key) if isinstance(key, (str, os.PathLike)) else key
    if known_servers is None and server_key is None and known_servers_file is not False:
        path = os.fspath(known_servers_file) if isinstance(known_servers_file, (str, os.PathLike)) else default_known_servers_path()
        known_servers = FileKnownServers(path, on_server_key_learnt)
    c = Client(url, k, server_key=server_key, known_servers=known_servers, **options)
    c._run_task = asyncio.ensure_future(c._run())
    try:
        # handshake_timeout bounds connect() as a whole: the WebSocket's opening and the handshake
        await asyncio.wait({c._ready}, timeout=c._handshake_timeout)
        if not c._ready.done():
            c._abort(PsimbolsError(ErrorCode.TIMEOUT, f"no channel within handshake_timeout ({c._handshake_timeout:g} s): the server did not answer ({c.state})"), "handshake timeout")
        c._ready.result()
    except BaseException:
        if not c._run_task.done():
            c._run_task.cancel()
        raise
    return c


_ = (time, loads)
