"""The handshake (PROTOCOL.md §5): transcript, signatures, HPKE grant, next server key, identity move.

The client side is what the client uses; `accept_hello`, `verify_proof` and `seal_grant`
are the server's half, for the vectors (a Python server is out of scope).
"""
from __future__ import annotations

import builtins
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .encoding import b64u, dumps, from_b64u, lp
from .errors import ErrorCode, PsimbolsError
from .frames import (
    CHANNEL_TYPE_ALIASES,
    F_IDENTITY_MOVE,
    F_SERVER_KEY_NEXT,
    KEM_TYPES,
    PROTOCOL_VERSION,
    SERVER_NONCE_BYTES,
    decode_grant,
)
from . import hpke
from .keys import PublicKey, SigningKey, import_wire_key

LABEL_INFO = "psimbols/1 hpke info"
LABEL_SERVER_SIG = "psimbols/1 server signature"
LABEL_CLIENT_SIG = "psimbols/1 client signature"
LABEL_GRANT_AAD = "psimbols/1 grant"
LABEL_NEXT_KEY = "psimbols/1 next server key"
LABEL_MOVE = "psimbols/1 identity move"
CLIENT_NONCE_BYTES = 32


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def next_key_transcript(nk: dict[str, Any]) -> bytes:
    return lp(from_b64u(nk["key"]["data"], "next_key.key.data"), nk["not_before"], from_b64u(nk["signature"], "next_key.signature"))


def transcript_info(hello_bytes: bytes, c: dict[str, Any], server_spki: bytes) -> bytes:
    """T_info (§5.2), with the next-key statement's fields when server-key-next was chosen (§5.6)."""
    t = lp(hello_bytes, c["source"], server_spki, c["channel_type"], from_b64u(c["nonce"], "nonce"), ",".join(c["features"]))
    if c.get("next_key") is not None and F_SERVER_KEY_NEXT in c["features"]:
        t += next_key_transcript(c["next_key"])
    return t


def hpke_info(t_info: bytes) -> bytes:
    return sha256(lp(LABEL_INFO) + t_info)


def sign_input(label: str, t: bytes) -> bytes:
    return lp(label) + sha256(t)


def grant_aad(t_chal: bytes, sig_s: bytes, sig_c: bytes) -> bytes:
    return lp(LABEL_GRANT_AAD) + sha256(t_chal + lp(sig_s) + lp(sig_c))


def next_key_statement(source: str, current_spki: bytes, next_spki: bytes, not_before: str) -> bytes:
    return lp(LABEL_NEXT_KEY, source, current_spki, next_spki, not_before)


def move_input(t_chal: bytes, sig_s: bytes) -> bytes:
    return lp(LABEL_MOVE) + sha256(t_chal + lp(sig_s))


@dataclass(frozen=True)
class NextKey:
    key: PublicKey
    fingerprint: str
    not_before: str


def verify_next_key(current: PublicKey, source: str, nk: dict[str, Any]) -> NextKey:
    """§5.6: the statement, verified under the presented key for this source; anything wrong is `protocol`."""
    try:
        key = import_wire_key(nk["key"], "next_key.key")
    except PsimbolsError:
        raise PsimbolsError(ErrorCode.PROTOCOL, "the next server key in the challenge is not a usable key") from None
    if key.fingerprint == current.fingerprint:
        raise PsimbolsError(ErrorCode.PROTOCOL, "the next server key is the current one")
    sig = from_b64u(nk["signature"], "next_key.signature")
    if not current.verify(sig, next_key_statement(source, current.spki, key.spki, nk["not_before"])):
        raise PsimbolsError(ErrorCode.PROTOCOL, "the next-server-key statement does not verify under the server key for this source")
    return NextKey(key, key.fingerprint, nk["not_before"])


# ------------------------------------------------------------------ client


@dataclass
class ClientHello:
    identity: SigningKey
    bytes: builtins.bytes
    hello: dict[str, Any]
    nonce_c: builtins.bytes
    kem: str
    kem_pair: hpke.KemKeyPair
    move_to: SigningKey | None = None


@dataclass
class ClientProof:
    hello: ClientHello
    nonce_s: bytes
    server_key: PublicKey
    features: list[str]
    channel_type: str
    next_key: NextKey | None
    aad: bytes
    enc: bytes
    info: bytes
    proof: dict[str, Any] = field(default_factory=dict[str, Any])


def create_hello(
    identity: SigningKey,
    channel_types: list[str] | None = None,
    kem: str = "X25519",
    features: list[str] | None = None,
    move_to: SigningKey | None = None,
    fixed: tuple[bytes, bytes] | None = None,
) -> ClientHello:
    """A hello (§4.1, §5.1) in the canonical serialisation; `fixed` = (nonce_c, kem_ikm) for vectors only."""
    feats = list(features or [])
    if move_to is not None and F_IDENTITY_MOVE not in feats:
        feats.append(F_IDENTITY_MOVE)
    if len(set(feats)) != len(feats):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, '"features" names a feature more than once')
    if kem not in KEM_TYPES:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"kem" expected one of {", ".join(KEM_TYPES)}')
    pair = hpke.derive_key_pair(kem, fixed[1]) if fixed else hpke.generate_key_pair(kem)
    nonce_c = fixed[0] if fixed else os.urandom(CLIENT_NONCE_BYTES)
    hello: dict[str, Any] = {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "public_key": identity.public.wire(),
        "channel_types": list(channel_types or ["AES-256-GCM", "ChaCha20-Poly1305"]),
        "kem": {"type": kem, "data": b64u(pair.public)},
        "nonce": b64u(nonce_c),
        "features": feats,
    }
    if move_to is not None:
        hello["move_to"] = move_to.public.wire()
    return ClientHello(identity, dumps(hello).encode("utf-8"), hello, nonce_c, kem, pair, move_to)


def answer_challenge(h: ClientHello, c: dict[str, Any], check_server_key: Callable[[PublicKey], None]) -> ClientProof:
    """§5.2, client side, in the text's order: server key, choices, signature, statement; then the proof."""
    try:
        server_key = import_wire_key(c["server_key"], "server_key")
    except PsimbolsError as e:
        raise PsimbolsError(ErrorCode.UNSUPPORTED if e.code == ErrorCode.UNSUPPORTED else ErrorCode.PROTOCOL, e.message) from None
    check_server_key(server_key)
    if not any(CHANNEL_TYPE_ALIASES.get(t) == c["channel_type"] for t in h.hello["channel_types"]):
        raise PsimbolsError(ErrorCode.PROTOCOL, "server chose a channel type that was not offered")
    if not all(f in h.hello["features"] for f in c["features"]):
        raise PsimbolsError(ErrorCode.PROTOCOL, "server chose a feature that was not offered")
    if h.move_to is not None and F_IDENTITY_MOVE not in c["features"]:
        raise PsimbolsError(ErrorCode.UNSUPPORTED, "the server does not move identities (it did not choose identity-move)")
    with_next = F_SERVER_KEY_NEXT in c["features"]
    if with_next and c.get("next_key") is None:
        raise PsimbolsError(ErrorCode.PROTOCOL, "server chose server-key-next without a next_key statement")
    t_info = transcript_info(h.bytes, c, server_key.spki)
    enc = from_b64u(c["enc"], "enc")
    t_chal = t_info + lp(enc)
    sig_s = from_b64u(c["signature"], "signature")
    if not server_key.verify(sig_s, sign_input(LABEL_SERVER_SIG, t_chal)):
        raise PsimbolsError(ErrorCode.PROTOCOL, "server signature over the challenge does not verify")
    next_key = verify_next_key(server_key, c["source"], c["next_key"]) if with_next else None
    sig_c = h.identity.sign(sign_input(LABEL_CLIENT_SIG, t_chal + lp(sig_s)))
    proof: dict[str, Any] = {"type": "proof", "signature": b64u(sig_c)}
    if h.move_to is not None:
        proof["move_signature"] = b64u(h.move_to.sign(move_input(t_chal, sig_s)))
    return ClientProof(
        h, from_b64u(c["nonce"], "nonce"), server_key, list(c["features"]), c["channel_type"], next_key,
        grant_aad(t_chal, sig_s, sig_c), enc, hpke_info(t_info), proof,
    )


def open_grant(p: ClientProof, e: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """§5.4: opens `established` under the handshake's HPKE context; `protocol` for anything wrong."""
    try:
        pt = p.hello.kem_pair.open(p.enc, p.info, p.aad, from_b64u(e["response"], "response"))
    except Exception:
        raise PsimbolsError(ErrorCode.PROTOCOL, "grant does not open under the handshake's HPKE context") from None
    finally:
        p.hello.kem_pair.wipe()
    try:
        grant = decode_grant(pt.decode("utf-8"))
    except (PsimbolsError, ValueError, UnicodeDecodeError) as err:
        raise PsimbolsError(ErrorCode.PROTOCOL, f"the grant is malformed: {getattr(err, 'message', 'not JSON')}") from None
    if grant["key"]["type"] != p.channel_type:
        raise PsimbolsError(ErrorCode.PROTOCOL, "the grant's key type is not the channel type of the challenge")
    return grant, from_b64u(grant["key"]["data"], "key.data")


# ------------------------------------------------------------------ server half (vectors)


@dataclass
class Pending:
    identity: PublicKey
    channel_type: str
    features: list[str]
    t_chal: bytes
    sig_s: bytes
    context: hpke.Context
    move_to: PublicKey | None


def choose_channel_type(offered: list[str], accepted: tuple[str, ...] = ("AES-256-GCM", "ChaCha20-Poly1305")) -> str:
    for t in offered:
        c = CHANNEL_TYPE_ALIASES.get(t)
        if c and c in accepted:
            return c
    raise PsimbolsError(ErrorCode.UNSUPPORTED, "no acceptable channel type offered; accepted: " + ", ".join(accepted))


def xwing_public_checks(raw: bytes) -> None:
    """§5.3.1 checks a server makes of an X-Wing `kem.data` (no ML-KEM needed): length, FIPS 203 modulus check, X25519 share."""
    if len(raw) != 1216:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, '"kem.data" expected 1216 bytes for X-Wing')
    pk_m = raw[:1184]
    for i in range(0, 1152, 3):  # ByteDecode12 of the 384*3 coefficient bytes: each coefficient < q = 3329
        b0, b1, b2 = pk_m[i], pk_m[i + 1], pk_m[i + 2]
        if (b0 | ((b1 & 0x0F) << 8)) >= 3329 or ((b1 >> 4) | (b2 << 4)) >= 3329:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, '"kem.data" is not a usable X-Wing public key (ML-KEM modulus check)')
    from .keys import in_point_list

    if in_point_list(raw[1184:], hpke.X25519_LOW_ORDER):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, '"kem.data" is not a usable X-Wing public key (X25519 share of low order)')


def check_hello(hello: dict[str, Any]) -> tuple[str, PublicKey]:
    """The server's checks 4..7 of §5.1 (version, channel type, KEM, identity key) without HPKE work."""
    if hello["version"] != PROTOCOL_VERSION:
        raise PsimbolsError(ErrorCode.UNSUPPORTED, f"protocol version not supported; accepted: {PROTOCOL_VERSION}")
    ct = choose_channel_type(hello["channel_types"])
    kem = hello["kem"]["type"]
    if kem not in KEM_TYPES:
        raise PsimbolsError(ErrorCode.UNSUPPORTED, "kem.type not supported; accepted: " + ", ".join(KEM_TYPES))
    raw = from_b64u(hello["kem"]["data"], "kem.data", 1216)
    if kem == "X-Wing":
        xwing_public_checks(raw)
    else:
        hpke.deserialize_public(kem, raw)
    identity = import_wire_key(hello["public_key"])
    return ct, identity


def accept_hello(hello_bytes: bytes, hello: dict[str, Any], key: SigningKey, source: str, server_features: list[str], nonce_s: bytes, ekm: bytes, next_key: dict[str, Any] | None = None, moves: bool = False) -> tuple[dict[str, Any], Pending]:
    ct, identity = check_hello(hello)
    if (F_IDENTITY_MOVE in hello["features"]) != ("move_to" in hello):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, '"move_to" and the identity-move feature go together')
    move_to = import_wire_key(hello["move_to"], "move_to") if "move_to" in hello else None
    if move_to is not None and move_to.fingerprint == identity.fingerprint:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, '"move_to" is the hello\'s own public_key')
    feats = [f for f in hello["features"] if f in server_features or (f == F_SERVER_KEY_NEXT and next_key is not None) or (f == F_IDENTITY_MOVE and moves)]
    core: dict[str, Any] = {"type": "challenge", "source": source, "server_key": key.public.wire(), "channel_type": ct, "nonce": b64u(nonce_s), "features": feats}
    if next_key is not None and F_SERVER_KEY_NEXT in feats:
        core["next_key"] = next_key
    t_info = transcript_info(hello_bytes, core, key.public.spki)
    enc, ctx = hpke.setup_base_s(hello["kem"]["type"], from_b64u(hello["kem"]["data"], "kem.data"), hpke_info(t_info), ekm)
    t_chal = t_info + lp(enc)
    sig_s = key.sign(sign_input(LABEL_SERVER_SIG, t_chal))
    challenge = {**core, "enc": b64u(enc), "signature": b64u(sig_s)}
    return challenge, Pending(identity, ct, feats, t_chal, sig_s, ctx, move_to if F_IDENTITY_MOVE in feats else None)


def verify_proof(p: Pending, sig_c: bytes) -> bool:
    return p.identity.verify(sig_c, sign_input(LABEL_CLIENT_SIG, p.t_chal + lp(p.sig_s)))


def seal_grant(p: Pending, sig_c: bytes, grant: dict[str, Any], source: str) -> dict[str, Any]:
    ct = p.context.seal(grant_aad(p.t_chal, p.sig_s, sig_c), dumps(grant).encode("utf-8"))
    return {"type": "established", "source": source, "response": b64u(ct)}


assert SERVER_NONCE_BYTES == 32
