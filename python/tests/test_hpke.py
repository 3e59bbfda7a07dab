"""RFC 9180's own test vectors for what psimbols composes: DHKEM (X25519, P-256), the key schedule, the AEADs."""
from __future__ import annotations

import json
import os

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from psimbols import hpke

HERE = os.path.dirname(__file__)
INFO = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")


def _pair(kem: str, sk: bytes) -> hpke.KemKeyPair:
    if kem == "X25519":
        return hpke.KemKeyPair(kem, x25519.X25519PrivateKey.from_private_bytes(sk))
    return hpke.KemKeyPair(kem, ec.derive_private_key(int.from_bytes(sk, "big"), ec.SECP256R1()))


def check_rfc9180() -> list[str]:
    """Runs every vector; returns the names checked. Raises AssertionError naming the first mismatch."""
    data = json.load(open(os.path.join(HERE, "rfc9180.json")))
    done = []
    for v in data["vectors"]:
        name = f"RFC 9180 {v['name']}"
        kem = {0x20: "X25519", 0x10: "P-256"}[v["kem_id"]]
        recipient = _pair(kem, bytes.fromhex(v["skRm"]))
        if "ikmR" in v:
            derived = hpke.derive_key_pair(kem, bytes.fromhex(v["ikmR"]))
            assert derived.public.hex() == v["pkRm"] == recipient.public.hex(), f"{name}: DeriveKeyPair(ikmR)"
            eph = hpke.derive_key_pair(kem, bytes.fromhex(v["ikmE"]))
            assert eph.public.hex() == _pair(kem, bytes.fromhex(v["skEm"])).public.hex() == v["enc"], f"{name}: DeriveKeyPair(ikmE)"
            ss, enc = hpke.encap(kem, bytes.fromhex(v["pkRm"]), bytes.fromhex(v["ikmE"]))
            assert enc.hex() == v["enc"] and ss.hex() == v["shared_secret"], f"{name}: Encap"
        ss = recipient.decap(bytes.fromhex(v["enc"]))
        assert ss.hex() == v["shared_secret"], f"{name}: Decap"
        ctx = hpke.key_schedule(v["kem_id"], v["kdf_id"], v["aead_id"], ss, INFO)
        assert ctx.key.hex() == v["key"] and ctx.base_nonce.hex() == v["base_nonce"], f"{name}: key schedule"
        opener = hpke.key_schedule(v["kem_id"], v["kdf_id"], v["aead_id"], ss, INFO)
        for e in v.get("encryptions", []):
            ct = ctx.seal(bytes.fromhex(e["aad"]), bytes.fromhex(e["pt"]))
            assert ct.hex() == e["ct"], f"{name}: Seal"
            assert opener.open(bytes.fromhex(e["aad"]), ct).hex() == e["pt"], f"{name}: Open"
        done.append(name)
    return done


if __name__ == "__main__":
    print(f"{len(check_rfc9180())} RFC 9180 vectors passed")
