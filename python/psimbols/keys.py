"""Identity and server keys (PROTOCOL.md §3): import, fingerprints, signatures, PEM files."""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any, Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from .encoding import b64std, b64u, from_b64u
from .errors import ErrorCode, PsimbolsError

ED25519 = "Ed25519"
P256 = "ECDSA-P256"
RSA = "RSA"
KEY_TYPES = (ED25519, P256, RSA)

_PREFIX = {
    ED25519: (bytes.fromhex("302a300506032b6570032100"), 44),
    P256: (bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d03010703420004"), 91),
}

# libsodium's has_small_order list (bit 255 cleared), PROTOCOL.md §3.1
ED25519_SMALL_ORDER = {
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
}


def in_point_list(point: bytes, points: set[bytes]) -> bool:
    """Whether a 32-byte Curve25519 encoding is in `points`, whatever its bit 255."""
    return point[:31] + bytes([point[31] & 0x7F]) in points


def fingerprint(spki: bytes) -> str:
    """`SHA256:` + standard base64 without padding of SHA-256(SPKI DER) (§3.2)."""
    return "SHA256:" + b64std(hashlib.sha256(spki).digest())


_Pub = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey]
_Priv = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@dataclass(frozen=True)
class PublicKey:
    """A public key of §3.1: its type, canonical SPKI DER and fingerprint."""

    type: str
    spki: bytes
    fingerprint: str
    key: _Pub = field(repr=False, compare=False)

    def wire(self) -> dict[str, str]:
        return {"type": self.type, "data": b64u(self.spki)}

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Any failure inside the primitive is "does not verify" (§3.1)."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                if len(signature) != 64:
                    return False
                self.key.verify(signature, message)
            elif isinstance(self.key, ec.EllipticCurvePublicKey):
                if len(signature) != 64:  # IEEE P1363 r || s, never DER
                    return False
                der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
                self.key.verify(der, message, ec.ECDSA(hashes.SHA256()))
            else:
                if len(signature) != (self.key.key_size + 7) // 8:
                    return False
                self.key.verify(signature, message, _PSS, hashes.SHA256())
            return True
        except (InvalidSignature, ValueError):
            return False


@dataclass(frozen=True)
class SigningKey:
    """An identity (or server) key pair."""

    public: PublicKey
    private: _Priv = field(repr=False, compare=False)

    def sign(self, message: bytes) -> bytes:
        k = self.private
        if isinstance(k, ed25519.Ed25519PrivateKey):
            return k.sign(message)
        if isinstance(k, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(k.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return k.sign(message, _PSS, hashes.SHA256())

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint


def _spki_of(pub: _Pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def type_of(key: _Pub | _Priv, source: str = "the key") -> str:
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return ED25519
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return P256
        raise PsimbolsError(ErrorCode.UNSUPPORTED, f"{source} is an EC key on curve {key.curve.name}; accepted: {', '.join(KEY_TYPES)} (RSA 2048..4096 bits)")
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return RSA
    raise PsimbolsError(ErrorCode.UNSUPPORTED, f"{source} is a key of type {type(key).__name__}; accepted: {', '.join(KEY_TYPES)} (RSA 2048..4096 bits)")


def import_spki(key_type: str, spki: bytes, field_name: str = "public_key") -> PublicKey:
    """Imports canonical SPKI DER of `key_type` (§3.1); `bad_request` for anything else."""
    if key_type not in KEY_TYPES:
        raise PsimbolsError(ErrorCode.UNSUPPORTED, f'"{field_name}.type" not supported; accepted: {", ".join(KEY_TYPES)}')
    bad = PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field_name}.data" is not a canonical {key_type} SubjectPublicKeyInfo')
    if len(spki) > 1024:
        raise bad
    pre = _PREFIX.get(key_type)
    if pre and (len(spki) != pre[1] or not spki.startswith(pre[0])):
        raise bad
    try:
        pub = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm):
        raise bad from None
    try:
        if type_of(pub) != key_type:
            raise bad
    except PsimbolsError:
        raise bad from None
    if not hmac.compare_digest(_spki_of(pub), spki):  # DER, not BER; the type's own OID
        raise bad
    if key_type == ED25519 and in_point_list(spki[12:], ED25519_SMALL_ORDER):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field_name}" is a small-order Ed25519 point')
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        if not 2048 <= pub.key_size <= 4096:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field_name}" RSA modulus must be 2048..4096 bits, got {pub.key_size}')
        if n.e % 2 == 0 or n.e < 3:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field_name}" RSA public exponent must be odd and at least 3')
    return PublicKey(key_type, spki, fingerprint(spki), pub)


def import_wire_key(wire: object, field_name: str = "public_key") -> PublicKey:
    """A `{type, data}` key of a frame."""
    if not isinstance(wire, dict) or not isinstance(wire.get("type"), str) or not isinstance(wire.get("data"), str):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{field_name}" expected {{type, data}}')
    if wire["type"] not in KEY_TYPES:
        raise PsimbolsError(ErrorCode.UNSUPPORTED, f'"{field_name}.type" not supported; accepted: {", ".join(KEY_TYPES)}')
    return import_spki(wire["type"], from_b64u(wire["data"], f"{field_name}.data", 1024), field_name)


def signing_key(private: _Priv, source: str = "the key") -> SigningKey:
    t = type_of(private, source)
    pub = private.public_key()
    return SigningKey(import_spki(t, _spki_of(pub), source), private)


def import_pkcs8(der: bytes, source: str = "the key") -> SigningKey:
    try:
        k = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f"{source} is not a PKCS#8 private key") from None
    return signing_key(k, source)


KEY_TYPE_NAMES = {"ed25519": ED25519, "p256": P256, "rsa": RSA}  # the CLI's --type names


def key_type_of(name: object) -> str:
    """`Ed25519`, `ECDSA-P256`, `RSA`, or the CLI's `ed25519`, `p256`, `rsa` (any case)."""
    if not isinstance(name, str):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"key_type" expected a string among {", ".join(KEY_TYPES)} or {", ".join(KEY_TYPE_NAMES)}')
    t = {k.lower(): k for k in KEY_TYPES}.get(name.lower()) or KEY_TYPE_NAMES.get(name.lower())
    if t is None:
        raise PsimbolsError(ErrorCode.UNSUPPORTED, f"key type not supported; accepted: {', '.join(KEY_TYPES)} (or {', '.join(KEY_TYPE_NAMES)})")
    return t


def generate(key_type: str = ED25519) -> SigningKey:
    """A new key pair in memory; `key_type` as :func:`key_type_of`."""
    key_type = key_type_of(key_type)
    if key_type == ED25519:
        return signing_key(ed25519.Ed25519PrivateKey.generate())
    if key_type == P256:
        return signing_key(ec.generate_private_key(ec.SECP256R1()))
    if key_type == RSA:
        return signing_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    raise PsimbolsError(ErrorCode.UNSUPPORTED, f"key type not supported; accepted: {', '.join(KEY_TYPES)}")


# ------------------------------------------------------------------ files (as node/key-files.ts)


def _path(path: object, name: str = "path") -> str:
    """A file path argument; never echoes one that is not a path (PEM text passed by mistake is a secret)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{name}" expected the path of a PEM file (str), got {type(path).__name__}')
    if not path or "-----BEGIN" in path or "\n" in path or len(path) > 4096:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{name}" expected the path of a PEM file, not PEM text (not shown)')
    return path


def load_key(path: str | os.PathLike[str]) -> SigningKey:
    """Reads an unencrypted PKCS#8 PEM private key (as `psimbols keygen` writes, any type)."""
    path = _path(path)
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f"cannot read the key file {path}") from None
    try:
        k = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f"{path} is not an unencrypted PEM private key") from None
    return signing_key(k, path)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """A public key from a PEM file holding a private (PKCS#8) or public (SPKI) key."""
    path = _path(path)
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f"cannot read {path}") from None
    pub: object
    try:
        pub = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        try:
            pub = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f"{path} is not a PEM key") from None
    t = type_of(pub, path)  # type: ignore[arg-type]
    return import_spki(t, _spki_of(pub), path)  # type: ignore[arg-type]


def public_key_path(path: str) -> str:
    """`k.pem` -> `k.pub.pem`, else `path.pub.pem` (as the Node CLI)."""
    return path[:-4] + ".pub.pem" if path.endswith(".pem") else path + ".pub.pem"


def _write_new(path: str, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def generate_key_file(key_type: str, path: str, *, force: bool = False, public_file: bool = False) -> SigningKey:
    """Writes a new key as PKCS#8 PEM, mode 0600 (folder 0700), as node/key-files.ts `generateKeyFile`.

    `force`: overwrite existing files (else `bad_request`). `public_file`: also write the
    SPKI PEM (mode 0644) to :func:`public_key_path` (`k.pem` -> `k.pub.pem`), as the CLI's keygen does.
    """
    path = _path(path)
    for name, v in (("force", force), ("public_file", public_file)):
        if not isinstance(v, bool):
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f'"{name}" expected True or False')
    key = generate(key_type)
    private: Any = key.private  # every key type here serialises; the stubs of cryptography 38 do not say so for all
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        _write_new(path, pem, 0o600, force)
    except FileExistsError:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f"{path} exists; refusing to overwrite a key") from None
    except OSError:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, f"cannot create the key file {path}") from None
    if public_file:
        pub = key.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        pp = public_key_path(path)
        try:
            _write_new(pp, pub, 0o644, force)
        except FileExistsError:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f"{pp} exists; refusing to overwrite it") from None
        except OSError:
            raise PsimbolsError(ErrorCode.BAD_REQUEST, f"cannot create the public key file {pp}") from None
    return key
