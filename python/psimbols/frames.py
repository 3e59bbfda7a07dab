"""Frame decoders (PROTOCOL.md §4): each refusal is `bad_request` naming the field.

A client maps a refusal of a server frame to `protocol` (errors.as_protocol, §4).
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .encoding import b64u, from_b64u, loads, utf16_len
from .errors import ErrorCode, PsimbolsError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
MAX_INNER_BYTES = ((MAX_FRAME_BYTES - 256) * 3) // 4 - 16
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
SERVER_NONCE_BYTES = 32
MAX_ENC_BYTES = 1120
MAX_LIST_ITEMS = 16
MAX_TOKEN_CHARS = 64
# Largest retry_after_ms of an error frame (§4.10).
MAX_RETRY_AFTER_MS = 60_000
MAX_SIGNATURE_BYTES = 512
MAX_SEQ = 2**24
MAX_WIRE_SEQ = 2**32 - 1
CHANNEL_ID_CHARS = 22
CHANNEL_ID_BYTES = 16
BINARY_HEADER_BYTES = 21
MAX_SAFE_INTEGER = 2**53 - 1

AES = "AES-256-GCM"
CHACHA = "ChaCha20-Poly1305"
CHANNEL_TYPES = (AES, CHACHA)
CHANNEL_TYPE_ALIASES = {"AES": AES, AES: AES, CHACHA: CHACHA}
MAX_SEQ_BY_TYPE = {AES: MAX_SEQ, CHACHA: MAX_WIRE_SEQ}
KEM_TYPES = ("X25519", "P-256", "X-Wing")

F_BINARY = "binary"
F_SERVER_KEY_NEXT = "server-key-next"
F_IDENTITY_MOVE = "identity-move"

NOTICES = ("expiring", "expired", "revoked", "replaced", "closed", "closing", "pushes_lost")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
_FEATURE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_B64URL_TEXT = re.compile(r"^[A-Za-z0-9_-]+$")

Obj = dict[str, Any]


def bad(field: str, expected: str) -> PsimbolsError:
    return PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field}" expected {expected}')


def obj(x: Any, field: str) -> Obj:
    if not isinstance(x, dict):
        raise bad(field, "object")
    return x


def string(o: Obj, k: str, max_chars: int = 4096, field: str | None = None) -> str:
    v = o.get(k)
    if not isinstance(v, str):
        raise bad(field or k, "string")
    if utf16_len(v) > max_chars:
        raise bad(field or k, f"at most {max_chars} characters")
    return v


def integer(o: Obj, k: str, lo: int, hi: int, field: str | None = None) -> int:
    """An integer by its value, however it is spelt (§2.1): 1, 1.0, 1e0 and 10E-1 are all 1."""
    v = o.get(k)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(field or k, "integer")
    if isinstance(v, float):
        if not v.is_integer() or abs(v) > MAX_SAFE_INTEGER:
            raise bad(field or k, "integer")
        v = int(v)
    if abs(v) > MAX_SAFE_INTEGER:
        raise bad(field or k, "integer")
    if v < lo or v > hi:
        raise bad(field or k, f"integer in {lo}..{hi}")
    return v


def tokens(o: Obj, k: str) -> list[str]:
    v = o.get(k)
    if not isinstance(v, list):
        raise bad(k, "array of strings")
    if len(v) > MAX_LIST_ITEMS:
        raise bad(k, f"at most {MAX_LIST_ITEMS} items")
    for i, t in enumerate(v):
        if not isinstance(t, str):
            raise bad(f"{k}[{i}]", "string")
        if not 1 <= utf16_len(t) <= MAX_TOKEN_CHARS:
            raise bad(f"{k}[{i}]", f"1..{MAX_TOKEN_CHARS} characters")
    return list(v)


def features(o: Obj) -> list[str]:
    if o.get("features") is None and "features" not in o:
        return []
    lst = tokens(o, "features")
    for i, f in enumerate(lst):
        if not _FEATURE.match(f):
            raise bad(f"features[{i}]", "a name of letters, digits and . _ + -")
        if lst.index(f) != i:
            raise bad(f"features[{i}]", "a feature not already in the list")
    return lst


def wire_key(o: Obj, k: str) -> dict[str, str]:
    v = obj(o.get(k), k)
    return {"type": string(v, "type", MAX_TOKEN_CHARS, f"{k}.type"), "data": string(v, "data", 2048, f"{k}.data")}


def b64_field(o: Obj, k: str, lo: int, hi: int) -> str:
    s = string(o, k, -(-hi * 4 // 3) + 4)
    n = len(from_b64u(s, k, hi))
    if n < lo:
        raise bad(k, f"{lo} bytes" if lo == hi else f"at least {lo} bytes")
    return s


def channel_id(o: Obj) -> str:
    s = string(o, "channel", CHANNEL_ID_CHARS)
    if len(s) != CHANNEL_ID_CHARS:
        raise bad("channel", f"{CHANNEL_ID_CHARS}-character channel id")
    from_b64u(s, "channel")
    return s


def ciphertext(o: Obj, k: str) -> str:
    s = string(o, k, -(-MAX_FRAME_BYTES * 4 // 3))
    if len(s) < 22 or len(s) % 4 == 1 or not _B64URL_TEXT.match(s):
        raise bad(k, "base64url ciphertext of at least 16 bytes")
    return s


def rfc3339(s: str) -> bool:
    """An RFC 3339 time (§2.3); a grant's `valid_until` may carry an offset, the strict form is UTC with Z."""
    try:
        datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
        return bool(re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", s))
    except ValueError:
        return False


def decode_next_key(x: Any) -> Obj:
    o = obj(x, "next_key")
    k = obj(o.get("key"), "next_key.key")
    key = {"type": string(k, "type", MAX_TOKEN_CHARS, "next_key.key.type"), "data": string(k, "data", 2048, "next_key.key.data")}
    nb = string(o, "not_before", 40, "next_key.not_before")
    if not RFC3339_UTC.match(nb) or not rfc3339(nb):
        raise bad("next_key.not_before", "RFC 3339 UTC time")
    sig = string(o, "signature", -(-MAX_SIGNATURE_BYTES * 4 // 3) + 4, "next_key.signature")
    if len(from_b64u(sig, "next_key.signature", MAX_SIGNATURE_BYTES)) < 1:
        raise bad("next_key.signature", "at least 1 byte")
    return {"key": key, "not_before": nb, "signature": sig}


def parse_json(text: str | bytes) -> Obj:
    try:
        v = loads(text)
    except (ValueError, UnicodeDecodeError):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, "frame is not valid JSON") from None
    o = obj(v, "frame")
    if not isinstance(o.get("type"), str):
        raise bad("type", "string")
    return o


def decode_client_frame(text: str | bytes) -> Obj:
    """What a server accepts from a client (hello, proof, request, resume)."""
    o = parse_json(text)
    t = o["type"]
    if t == "hello":
        h: Obj = {
            "type": "hello",
            "version": integer(o, "version", 0, 255),
            "public_key": wire_key(o, "public_key"),
            "channel_types": tokens(o, "channel_types"),
            "kem": wire_key(o, "kem"),
            "nonce": b64_field(o, "nonce", MIN_NONCE_BYTES, MAX_NONCE_BYTES),
            "features": features(o),
        }
        if "move_to" in o:
            h["move_to"] = wire_key(o, "move_to")
        return h
    if t == "proof":
        p: Obj = {"type": "proof", "signature": b64_field(o, "signature", 1, MAX_SIGNATURE_BYTES)}
        if "move_signature" in o:
            p["move_signature"] = b64_field(o, "move_signature", 1, MAX_SIGNATURE_BYTES)
        return p
    if t == "request":
        return {"type": "request", "channel": channel_id(o), "seq": integer(o, "seq", 1, MAX_WIRE_SEQ), "request": ciphertext(o, "request")}
    if t == "resume":
        r: Obj = {"type": "resume", "channel": channel_id(o), "nonce": b64_field(o, "nonce", MIN_NONCE_BYTES, MAX_NONCE_BYTES)}
        if "last_push" in o:
            r["last_push"] = integer(o, "last_push", 0, MAX_SAFE_INTEGER)
        if "features" in o:
            r["features"] = features(o)
        return r
    raise PsimbolsError(ErrorCode.BAD_REQUEST, '"type" is not a client frame type')


def decode_server_frame(text: str | bytes) -> Obj:
    """What a client accepts from a server; a refusal is `bad_request` here, reported as `protocol`."""
    o = parse_json(text)
    t = o["type"]
    if t == "challenge":
        ct = string(o, "channel_type", MAX_TOKEN_CHARS)
        if ct not in CHANNEL_TYPES:
            raise bad("channel_type", " or ".join(CHANNEL_TYPES))
        c: Obj = {
            "type": "challenge",
            "source": string(o, "source", 2048),
            "server_key": wire_key(o, "server_key"),
            "channel_type": ct,
            "nonce": b64_field(o, "nonce", SERVER_NONCE_BYTES, SERVER_NONCE_BYTES),
            "features": features(o),
            "enc": b64_field(o, "enc", 1, MAX_ENC_BYTES),
            "signature": b64_field(o, "signature", 1, MAX_SIGNATURE_BYTES),
        }
        if "next_key" in o:
            c["next_key"] = decode_next_key(o["next_key"])
        return c
    if t == "established":
        return {"type": "established", "source": string(o, "source", 2048), "response": ciphertext(o, "response")}
    if t in ("response", "push"):
        return {"type": t, "source": string(o, "source", 2048), "channel": channel_id(o), "seq": integer(o, "seq", 1, MAX_WIRE_SEQ), t: ciphertext(o, t)}
    if t == "resumed":
        r: Obj = {"type": "resumed", "source": string(o, "source", 2048), "channel": channel_id(o), "nonce": b64_field(o, "nonce", SERVER_NONCE_BYTES, SERVER_NONCE_BYTES)}
        if "features" in o:
            r["features"] = features(o)
        return r
    if t == "error":
        e = obj(o.get("error"), "error")
        f: Obj = {"type": "error", "error": {"code": string(e, "code", MAX_TOKEN_CHARS, "error.code"), "message": string(e, "message", 1024, "error.message")}}
        if "seq" in o:
            f["seq"] = integer(o, "seq", 1, MAX_WIRE_SEQ)
        if "channel" in o:
            f["channel"] = string(o, "channel", CHANNEL_ID_CHARS)
        if "retry_after_ms" in o:  # a busy node: wait at least this long (§4.10, §11.4)
            f["retry_after_ms"] = integer(o, "retry_after_ms", 0, MAX_RETRY_AFTER_MS)
        return f
    raise PsimbolsError(ErrorCode.BAD_REQUEST, '"type" is not a server frame type')


# ------------------------------------------------------------------ binary channel frames (§4.11)

_KINDS = {1: "request", 2: "response", 3: "push"}


def encode_binary(kind: int, channel: str, seq: int, ct: bytes) -> bytes:
    return bytes([kind]) + from_b64u(channel, "channel") + seq.to_bytes(4, "big") + ct


def _decode_binary(data: bytes, accept: tuple[str, ...]) -> Obj:
    if len(data) < BINARY_HEADER_BYTES + 16:
        raise bad("frame", f"binary frame of at least {BINARY_HEADER_BYTES + 16} bytes")
    t = _KINDS.get(data[0])
    if t is None or t not in accept:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, "binary frame kind is not one this side accepts")
    seq = int.from_bytes(data[17:21], "big")
    if seq < 1:
        raise bad("seq", f"integer in 1..{MAX_WIRE_SEQ}")
    return {"type": t, "channel": b64u(data[1:17]), "seq": seq, t: data[21:]}


def decode_client_binary(data: bytes) -> Obj:
    return _decode_binary(data, ("request",))


def decode_server_binary(data: bytes) -> Obj:
    return _decode_binary(data, ("response", "push"))


# ------------------------------------------------------------------ sealed payloads


def decode_grant(text: str) -> Obj:
    o = obj(loads(text), "grant")
    key = obj(o.get("key"), "key")
    kt = string(key, "type", MAX_TOKEN_CHARS, "key.type")
    if kt not in CHANNEL_TYPES:
        raise bad("key.type", " or ".join(CHANNEL_TYPES))
    data = string(key, "data", 64, "key.data")
    if len(from_b64u(data, "key.data")) != 32:
        raise bad("key.data", "32 bytes")
    vu = string(o, "valid_until", 64)
    if not rfc3339(vu):
        raise bad("valid_until", "RFC 3339 time")
    return {"channel": channel_id(o), "key": {"type": kt, "data": data}, "valid_until": vu, "ttl": integer(o, "ttl", 1, 10 * 365 * 86400)}


def decode_inner_response(text: str) -> Obj:
    o = obj(loads(text), "response")
    if o.get("error") is not None:
        e = obj(o["error"], "error")
        return {"error": {"code": string(e, "code", MAX_TOKEN_CHARS, "error.code"), "message": string(e, "message", 1024, "error.message")}}
    if "data" not in o:
        raise bad("data", "a member data or error")
    return {"data": o["data"]}


def decode_inner_push(text: str) -> Obj:
    o = obj(loads(text), "push")
    if "notice" in o:
        n = o["notice"]
        if n not in NOTICES:
            raise bad("notice", "a notice kind of PROTOCOL.md §7")
        p: Obj = {"notice": n}
        if "valid_until" in o:
            p["valid_until"] = string(o, "valid_until", 64)
        if "reason" in o:
            p["reason"] = string(o, "reason", 1024)
        return p
    if "message" in o:
        return {"message": o["message"], "id": integer(o, "id", 1, MAX_SAFE_INTEGER)}
    raise bad("push", "a notice or a message")
