"""Error codes (PROTOCOL.md §9) and close codes (§10), as shared/errors.ts has them."""
from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    BAD_REQUEST = "bad_request"
    UNSUPPORTED = "unsupported"
    UNAUTHORISED = "unauthorised"
    FORBIDDEN = "forbidden"
    TOO_MANY = "too_many"
    UNAVAILABLE = "unavailable"
    NOT_FOUND = "not_found"
    INTERNAL = "internal"
    TIMEOUT = "timeout"
    CONNECTION_LOST = "connection_lost"
    SERVER_KEY_MISMATCH = "server_key_mismatch"
    PROTOCOL = "protocol"
    CLOSED = "closed"


_CODES = {c.value for c in ErrorCode}


def wire_error_code(code: str) -> ErrorCode:
    """A code received from a server; one this client does not know is `protocol` (§9)."""
    return ErrorCode(code) if code in _CODES else ErrorCode.PROTOCOL


class PsimbolsError(Exception):
    """An error with a code of PROTOCOL.md §9. The message never carries key material."""

    def __init__(self, code: ErrorCode, message: str, hint: str | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        # A busy node's `too_many` says when to try again (PROTOCOL.md §11.4); None otherwise.
        self.retry_after_ms = retry_after_ms

    def __str__(self) -> str:
        return f"{self.message} ({self.code.value})"


def as_protocol(e: BaseException, message: str) -> PsimbolsError:
    """A client refuses every server frame as `protocol`, never `bad_request` (§4)."""
    if isinstance(e, PsimbolsError):
        if e.code == ErrorCode.BAD_REQUEST:
            return PsimbolsError(ErrorCode.PROTOCOL, e.message)
        return e
    return PsimbolsError(ErrorCode.PROTOCOL, message)


# PROTOCOL.md §10: code -> (reason, reconnect)
CLOSE_CODES: dict[int, tuple[str, bool]] = {
    1000: ("normal", False),
    1001: ("going away", True),
    1003: ("unsupported data", False),
    1007: ("invalid payload", False),
    1009: ("too big", False),
    4000: ("protocol violation", False),
    4001: ("handshake timeout", True),
    4002: ("rate limited", True),
    4003: ("send buffer full", True),
    4004: ("channel replaced", False),
    4005: ("channel revoked", False),
    4006: ("node shutting down", True),
    4007: ("no pong", True),
    4008: ("forbidden", False),
    4009: ("store unreachable", True),
}


def close_reason(code: int) -> str:
    return CLOSE_CODES[code][0] if code in CLOSE_CODES else ("connection dropped" if code == 1006 else "unknown close code")


def is_terminal_close(code: int) -> bool:
    """A close code after which a client does not reconnect on its own; unknown codes are transient."""
    return code in CLOSE_CODES and not CLOSE_CODES[code][1]
