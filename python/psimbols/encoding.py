"""base64url, length prefixes, strict JSON (PROTOCOL.md §2)."""
from __future__ import annotations

import base64
import json
import re
from typing import Any

from .errors import ErrorCode, PsimbolsError

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64u(text: str, field: str = "value", max_bytes: int | None = None) -> bytes:
    """Canonical base64url without padding (§2.2); anything else is `bad_request` naming `field`."""
    bad = PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field}" expected canonical base64url')
    if not isinstance(text, str) or not _B64URL.match(text) or len(text) % 4 == 1:
        raise bad
    if max_bytes is not None and len(text) > (max_bytes * 4 + 2) // 3:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field}" expected at most {max_bytes} bytes')
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64u(raw) != text:  # unused low bits not zero
        raise bad
    return raw


def b64std(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def lp(*parts: bytes | str) -> bytes:
    """LP(x1, x2, ...) = uint32_be(len(x1)) || x1 || ... (§2.3); text as UTF-8."""
    out = bytearray()
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        out += len(b).to_bytes(4, "big") + b
    return bytes(out)


def dumps(value: Any) -> str:
    """The canonical serialisation's whitespace and string style (§2.4): as ECMAScript JSON.stringify."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def loads(text: str | bytes) -> Any:
    """RFC 8259 JSON: no NaN/Infinity; a repeated member keeps the last (as JSON.parse)."""
    return json.loads(text, parse_constant=_no_constant)


def utf16_len(s: str) -> int:
    """String length as ECMAScript counts it (UTF-16 code units): the limits of §4 are in these."""
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)
