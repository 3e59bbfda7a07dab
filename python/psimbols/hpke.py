"""HPKE (RFC 9180) base mode, single shot, composed from `cryptography`'s primitives.

DHKEM(X25519, HKDF-SHA256) 0x0020 and DHKEM(P-256, HKDF-SHA256) 0x0010 with
HKDF-SHA256 and AES-256-GCM (PROTOCOL.md §5.3). AES-128-GCM and
ChaCha20-Poly1305 are here only so that RFC 9180's own vectors can be run.
X-Wing (0x647a, §5.3.1) needs ML-KEM-768, which `cryptography` does not
offer in the versions this package supports: asking for it is `unsupported`.
"""
from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives import serialization

from .errors import ErrorCode, PsimbolsError
from .keys import in_point_list

KEM_X25519 = 0x0020
KEM_P256 = 0x0010
KEM_XWING = 0x647A
KDF_HKDF_SHA256 = 0x0001
AEAD_AES128GCM = 0x0001
AEAD_AES256GCM = 0x0002
AEAD_CHACHA20POLY1305 = 0x0003

KEM_IDS = {"X25519": KEM_X25519, "P-256": KEM_P256, "X-Wing": KEM_XWING}
KEM_PUBLIC_BYTES = {"X25519": 32, "P-256": 65, "X-Wing": 1216}

# X25519 points whose DH output is all zero or that are of low order (bit 255 cleared), as shared/handshake.ts
X25519_LOW_ORDER = {
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
}

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_AEAD: dict[int, tuple[int, type[AESGCM] | type[ChaCha20Poly1305]]] = {AEAD_AES128GCM: (16, AESGCM), AEAD_AES256GCM: (32, AESGCM), AEAD_CHACHA20POLY1305: (32, ChaCha20Poly1305)}


def _i2osp(n: int, w: int) -> bytes:
    return n.to_bytes(w, "big")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt if salt else b"\x00" * 32, hashes.SHA256())  # RFC 5869: an empty salt is HashLen zeros
    h.update(ikm)
    return h.finalize()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(prk, _i2osp(length, 2) + b"HPKE-v1" + suite + label + info, length)


def _kem_suite(kem_id: int) -> bytes:
    return b"KEM" + _i2osp(kem_id, 2)


class KemKeyPair:
    """An ephemeral DHKEM key pair (the client's side of the grant, §5.3)."""

    def __init__(self, kem: str, private: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self.kem = kem
        self.kem_id = KEM_IDS[kem]
        self._private: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey | None = private
        self.public = serialize_public(private.public_key())

    def wipe(self) -> None:
        """Drops the private key (forward secrecy, §5.3); Python cannot zero it, only let it go."""
        self._private = None

    def decap(self, enc: bytes) -> bytes:
        if self._private is None:
            raise PsimbolsError(ErrorCode.PROTOCOL, "the ephemeral key was already used")
        pk_e = deserialize_public(self.kem, enc)
        dh = _dh(self._private, pk_e)
        return _extract_and_expand(self.kem_id, dh, enc + self.public)

    def open(self, enc: bytes, info: bytes, aad: bytes, ct: bytes, aead_id: int = AEAD_AES256GCM) -> bytes:
        ctx = key_schedule(self.kem_id, KDF_HKDF_SHA256, aead_id, self.decap(enc), info)
        return ctx.open(aad, ct)


def serialize_public(pub: x25519.X25519PublicKey | ec.EllipticCurvePublicKey) -> bytes:
    if isinstance(pub, x25519.X25519PublicKey):
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def deserialize_public(kem: str, raw: bytes) -> x25519.X25519PublicKey | ec.EllipticCurvePublicKey:
    """RFC 9180 §7.1.1 DeserializePublicKey; `bad_request` for a key of the wrong length or off the curve."""
    if kem not in ("X25519", "P-256"):
        raise PsimbolsError(ErrorCode.UNSUPPORTED, f"kem.type {kem} is not available in this client (X-Wing needs ML-KEM-768)")
    if len(raw) != KEM_PUBLIC_BYTES[kem]:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"kem.data" expected {KEM_PUBLIC_BYTES[kem]} bytes for {kem}')
    try:
        if kem == "X25519":
            if in_point_list(raw, X25519_LOW_ORDER):
                raise ValueError("low order")
            return x25519.X25519PublicKey.from_public_bytes(raw)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"kem.data" is not a valid {kem} public key') from None


def _dh(sk: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey, pk: x25519.X25519PublicKey | ec.EllipticCurvePublicKey) -> bytes:
    if isinstance(sk, x25519.X25519PrivateKey) and isinstance(pk, x25519.X25519PublicKey):
        dh = sk.exchange(pk)  # cryptography refuses an all-zero output itself
    elif isinstance(sk, ec.EllipticCurvePrivateKey) and isinstance(pk, ec.EllipticCurvePublicKey):
        dh = sk.exchange(ec.ECDH(), pk)
    else:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, "KEM key types differ")
    if dh == b"\x00" * len(dh):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, "the DH output is all zero (RFC 9180 §7.1.4)")
    return dh


def _extract_and_expand(kem_id: int, dh: bytes, kem_context: bytes) -> bytes:
    suite = _kem_suite(kem_id)
    prk = _labeled_extract(suite, b"", b"eae_prk", dh)
    return _labeled_expand(suite, prk, b"shared_secret", kem_context, 32)


def derive_key_pair(kem: str, ikm: bytes) -> KemKeyPair:
    """RFC 9180 §7.1.3 DeriveKeyPair (test vectors only; real keys are random)."""
    kem_id = KEM_IDS.get(kem)
    if kem_id is None or kem == "X-Wing":
        raise PsimbolsError(ErrorCode.UNSUPPORTED, f"kem.type {kem} is not available in this client")
    suite = _kem_suite(kem_id)
    prk = _labeled_extract(suite, b"", b"dkp_prk", ikm)
    if kem == "X25519":
        sk = _labeled_expand(suite, prk, b"sk", b"", 32)
        return KemKeyPair(kem, x25519.X25519PrivateKey.from_private_bytes(sk))
    for counter in range(256):
        cand = _labeled_expand(suite, prk, b"candidate", _i2osp(counter, 1), 32)
        d = int.from_bytes(cand, "big")
        if 0 < d < _P256_ORDER:
            return KemKeyPair(kem, ec.derive_private_key(d, ec.SECP256R1()))
    raise PsimbolsError(ErrorCode.INTERNAL, "DeriveKeyPair failed")


def generate_key_pair(kem: str) -> KemKeyPair:
    if kem == "X25519":
        return KemKeyPair(kem, x25519.X25519PrivateKey.generate())
    if kem == "P-256":
        return KemKeyPair(kem, ec.generate_private_key(ec.SECP256R1()))
    raise PsimbolsError(ErrorCode.UNSUPPORTED, f"kem {kem} is not available in this client: it does not implement X-Wing (which needs ML-KEM-768)")


def encap(kem: str, pk_r: bytes, ekm: bytes | None = None) -> tuple[bytes, bytes]:
    """Encap(pkR) -> (shared_secret, enc); with `ekm`, the ephemeral key is DeriveKeyPair(ekm) (vectors)."""
    pk = deserialize_public(kem, pk_r)
    eph = derive_key_pair(kem, ekm) if ekm is not None else generate_key_pair(kem)
    assert eph._private is not None
    dh = _dh(eph._private, pk)
    enc = eph.public
    return _extract_and_expand(KEM_IDS[kem], dh, enc + pk_r), enc


@dataclass
class Context:
    """An HPKE context (RFC 9180 §5.2) for sequence numbers from 0."""

    aead_id: int
    key: bytes
    base_nonce: bytes
    secret: bytes
    key_schedule_context: bytes
    seq: int = 0

    def _nonce(self) -> bytes:
        n = int.from_bytes(self.base_nonce, "big") ^ self.seq
        return n.to_bytes(len(self.base_nonce), "big")

    def seal(self, aad: bytes, pt: bytes) -> bytes:
        ct = _AEAD[self.aead_id][1](self.key).encrypt(self._nonce(), pt, aad)
        self.seq += 1
        return ct

    def open(self, aad: bytes, ct: bytes) -> bytes:
        pt = _AEAD[self.aead_id][1](self.key).decrypt(self._nonce(), ct, aad)
        self.seq += 1
        return pt


def key_schedule(kem_id: int, kdf_id: int, aead_id: int, shared_secret: bytes, info: bytes) -> Context:
    """RFC 9180 §5.1 KeySchedule for mode_base (no PSK). `shared_secret` enters as it is, whatever the KEM."""
    if kdf_id != KDF_HKDF_SHA256 or aead_id not in _AEAD:
        raise PsimbolsError(ErrorCode.UNSUPPORTED, "HPKE suite not supported")
    suite = b"HPKE" + _i2osp(kem_id, 2) + _i2osp(kdf_id, 2) + _i2osp(aead_id, 2)
    psk_id_hash = _labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite, b"", b"info_hash", info)
    ksc = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite, shared_secret, b"secret", b"")
    nk = _AEAD[aead_id][0]
    key = _labeled_expand(suite, secret, b"key", ksc, nk)
    base_nonce = _labeled_expand(suite, secret, b"base_nonce", ksc, 12)
    return Context(aead_id, key, base_nonce, secret, ksc)


def setup_base_s(kem: str, pk_r: bytes, info: bytes, ekm: bytes | None = None) -> tuple[bytes, Context]:
    ss, enc = encap(kem, pk_r, ekm)
    return enc, key_schedule(KEM_IDS[kem], KDF_HKDF_SHA256, AEAD_AES256GCM, ss, info)
