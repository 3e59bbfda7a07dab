"""Binding keys and channel frames (PROTOCOL.md §6.1, §6.3, §4.11)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .encoding import b64u, from_b64u, lp
from .errors import ErrorCode, PsimbolsError
from .frames import AES, MAX_SEQ_BY_TYPE, encode_binary
from .hpke import hkdf

LABEL_C2S = "psimbols/1 c2s"
LABEL_S2C = "psimbols/1 s2c"
KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_PUSH = 3


@dataclass(frozen=True)
class BindingKeys:
    channel: str
    type: str
    c2s: bytes
    s2c: bytes
    # one cipher object per traffic key, for the binding's life: setting one up costs as much as sealing a frame
    c2s_aead: Any = field(init=False, repr=False, compare=False)
    s2c_aead: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "c2s_aead", _aead(self.type, self.c2s))
        object.__setattr__(self, "s2c_aead", _aead(self.type, self.s2c))

    @property
    def max_seq(self) -> int:
        return MAX_SEQ_BY_TYPE[self.type]


def binding_salt(nonce_c: bytes, nonce_s: bytes) -> bytes:
    return lp(nonce_c, nonce_s)


def derive_binding(channel_key: bytes, channel: str, nonce_c: bytes, nonce_s: bytes, channel_type: str) -> BindingKeys:
    """§6.1: HKDF-SHA256 over the channel key, salt LP(nonce_c) || LP(nonce_s), info LP(label) || LP(channel id string)."""
    salt = binding_salt(nonce_c, nonce_s)
    c2s = hkdf(channel_key, salt, lp(LABEL_C2S, channel), 32)
    s2c = hkdf(channel_key, salt, lp(LABEL_S2C, channel), 32)
    return BindingKeys(channel, channel_type, c2s, s2c)


def nonce(kind: int, seq: int) -> bytes:
    """kind (1 byte) || 0x000000 || uint64_be(seq) (§6.3)."""
    return bytes([kind, 0, 0, 0]) + seq.to_bytes(8, "big")


def _aead(channel_type: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if channel_type == AES else ChaCha20Poly1305(key)


def seal(channel_type: str, key: bytes, kind: int, seq: int, channel: str, plaintext: bytes) -> bytes:
    return _aead(channel_type, key).encrypt(nonce(kind, seq), plaintext, channel.encode("utf-8"))


def open_(channel_type: str, key: bytes, kind: int, seq: int, channel: str, ct: bytes | str) -> bytes:
    """Opens a sealed payload; anything that does not authenticate is `unauthorised` (§6.4)."""
    return open_with(_aead(channel_type, key), kind, seq, channel, ct)


def open_with(aead: AESGCM | ChaCha20Poly1305, kind: int, seq: int, channel: str, ct: bytes | str) -> bytes:
    try:
        raw = from_b64u(ct, "ciphertext") if isinstance(ct, str) else ct
        return aead.decrypt(nonce(kind, seq), raw, channel.encode("utf-8"))
    except (InvalidTag, PsimbolsError, ValueError):
        raise PsimbolsError(ErrorCode.UNAUTHORISED, "unknown channel or bad ciphertext") from None


def request_frame(keys: BindingKeys, seq: int, payload: bytes, binary: bool) -> str | bytes:
    ct = keys.c2s_aead.encrypt(nonce(KIND_REQUEST, seq), payload, keys.channel.encode("utf-8"))
    if binary:
        return encode_binary(KIND_REQUEST, keys.channel, seq, ct)
    from .encoding import dumps

    return dumps({"type": "request", "channel": keys.channel, "seq": seq, "request": b64u(ct)})
