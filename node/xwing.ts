/**
 * X-Wing (draft-connolly-cfrg-xwing-kem-06, the version @hpke/hybridkem-x-wing 0.7.0 implements; HPKE KEM id 0x647a, the
 * MLKEM768-X25519 of draft-ietf-hpke-pq) as the node:crypto engine's KEM,
 * and HPKE base mode over it with HKDF-SHA256 and AES-256-GCM (RFC 9180 §5).
 * PROTOCOL.md §5.3.1. Node only; node/handshake-crypto.ts hands X-Wing here.
 *
 * Why a second X-Wing: `@hpke/hybridkem-x-wing` (the default engine's) runs
 * X25519 and SHA-3 in JavaScript, ~13 ms of CPU per server encapsulation on
 * the test machine; here X25519 and SHA3-256/SHAKE256 are OpenSSL's and only
 * ML-KEM-768 is JavaScript (`mlkem`, the same author's FIPS 203 code, loaded
 * on first use). Same inputs, same bytes: test/node/xwing.test.ts runs the
 * draft's vectors through both engines and checks them against each other
 * and against @noble/post-quantum's X-Wing.
 *
 *   expandDecapsulationKey(sk):  (d, z, skX) = SHAKE256(sk, 96);  (pkM, skM) = ML-KEM.KeyGen_internal(d, z)
 *                                pkX = X25519(skX, 9);  pk = pkM || pkX                      (1216 bytes)
 *   Encapsulate(pk, eseed):      (m, ekX) = eseed (64 bytes);  ctX = X25519(ekX, 9);  ssX = X25519(ekX, pkX)
 *                                (ssM, ctM) = ML-KEM.Encaps_internal(pkM, m);  enc = ctM || ctX  (1120 bytes)
 *   Combiner:                    ss = SHA3-256(ssM || ssX || ctX || pkX || XWingLabel)
 *   DeriveKeyPair(ikm) (HPKE):   sk = SHAKE256(ikm, 32)
 */
import { type KeyObject, createHash, createPublicKey, diffieHellman, randomBytes } from "node:crypto";
import type { MlKemInterface } from "mlkem";
import { KemType } from "../shared/frames.js";
import { type HpkeSender, type KemKeyPair, type KemPublicKey, sealOnce } from "../shared/hpke.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { type HpkeAeadId, keyScheduleBase, openFirst, sealFirst, x25519PrivateKey } from "./handshake-crypto.js";

/** HPKE KEM id of X-Wing (IANA HPKE KEM registry; draft-ietf-hpke-pq MLKEM768-X25519). */
export const KEM_XWING = 0x647a;
/** XWingLabel, the 6 ASCII bytes `\.//^\` (draft §5.3). */
const XWING_LABEL = Buffer.from("5c2e2f2f5e5c", "hex");
/** Sizes (draft §5): ML-KEM-768 encapsulation key and ciphertext, X25519 share. */
const PK_M = 1184;
const CT_M = 1088;
const X = 32;
export const XWING_PUBLIC_BYTES = PK_M + X;
export const XWING_ENC_BYTES = CT_M + X;
/** The handshake's AEAD: AES-256-GCM (RFC 9180 §7.3 id 0x0002). */
const AEAD: HpkeAeadId = 0x0002;

const wipe = (...bs: Uint8Array[]) => bs.forEach((b) => b.fill(0));
const bytes = (b: Uint8Array): Uint8Array => {
  const u = new Uint8Array(b.length);
  u.set(b);
  return u;
};

let mlkem: Promise<MlKemInterface> | undefined;
/** ML-KEM-768, imported on first use (a process that never meets X-Wing never loads it). Synchronous once made. */
function mlKem768(): Promise<MlKemInterface> {
  return (mlkem ??= import("mlkem").then(
    (m) => m.createMlKem768(),
    (cause: unknown) => {
      mlkem = undefined;
      throw new PsimbolsError(ErrorCode.unsupported, "the X-Wing KEM needs the optional dependency mlkem, which is not installed", { cause });
    },
  ));
}

const shake256 = (data: Uint8Array, n: number): Buffer => createHash("shake256", { outputLength: n }).update(data).digest();

/** The raw 32 bytes of X25519(sk, 9): the public key of a private key given as bytes. */
function x25519Base(sk: Uint8Array): { key: KeyObject; pub: Buffer } {
  const key = x25519PrivateKey(sk);
  return { key, pub: Buffer.from(createPublicKey(key).export({ format: "jwk" }).x!, "base64url") };
}

/** X25519(sk, pk); OpenSSL refuses an all-zero output (a share of small order), so this throws then. */
function x25519(key: KeyObject, pk: Uint8Array): Buffer {
  const pub = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(pk.buffer, pk.byteOffset, pk.byteLength).toString("base64url") }, format: "jwk" });
  return diffieHellman({ privateKey: key, publicKey: pub });
}

/** Draft §5.3 Combiner. Wipes nothing; the caller wipes its inputs. */
function combiner(ssM: Uint8Array, ssX: Uint8Array, ctX: Uint8Array, pkX: Uint8Array): Buffer {
  return createHash("sha3-256").update(ssM).update(ssX).update(ctX).update(pkX).update(XWING_LABEL).digest();
}

/** Draft §5.2 expandDecapsulationKey: ML-KEM's decapsulation key, X25519's private key, and the public key. */
function expand(ml: MlKemInterface, sk: Uint8Array): { skM: Uint8Array; skX: KeyObject; pk: Uint8Array } {
  if (sk.length !== 32) throw new RangeError("an X-Wing private key is a 32-byte seed");
  const e = shake256(sk, 96);
  try {
    const [pkM, skM] = ml.deriveKeyPair(e.subarray(0, 64));
    const x = x25519Base(e.subarray(64, 96));
    const pk = new Uint8Array(XWING_PUBLIC_BYTES);
    pk.set(pkM);
    pk.set(x.pub, PK_M);
    return { skM, skX: x.key, pk };
  } finally {
    wipe(e);
  }
}

/** X-Wing's key pair from its 32-byte seed: the public key (1216 bytes). */
export async function xwingPublicKey(sk: Uint8Array): Promise<Uint8Array> {
  const { skM, pk } = expand(await mlKem768(), sk);
  wipe(skM);
  return pk;
}

/**
 * Draft §5.4 Encapsulate (EncapsulateDerand with `eseed`, 64 bytes, for test
 * vectors): `enc` (1120 bytes) and the shared secret.
 * @throws when the ML-KEM part fails FIPS 203's modulus check, or the X25519 share is of small order.
 */
export async function xwingEncap(pk: Uint8Array, eseed?: Uint8Array): Promise<{ enc: Uint8Array; shared: Buffer }> {
  if (pk.length !== XWING_PUBLIC_BYTES) throw new RangeError("an X-Wing public key is 1216 bytes");
  if (eseed !== undefined && eseed.length !== 64) throw new RangeError("an X-Wing eseed is 64 bytes");
  const ml = await mlKem768();
  const seed = eseed ? Buffer.from(eseed) : randomBytes(64);
  try {
    const pkX = pk.subarray(PK_M);
    const eph = x25519Base(seed.subarray(32, 64));
    const ssX = x25519(eph.key, pkX);
    const [ctM, ssM] = ml.encap(pk.subarray(0, PK_M), seed.subarray(0, 32));
    const enc = new Uint8Array(XWING_ENC_BYTES);
    enc.set(ctM);
    enc.set(eph.pub, CT_M);
    const shared = combiner(ssM, ssX, eph.pub, pkX);
    wipe(ssM, ssX);
    return { enc, shared };
  } finally {
    wipe(seed);
  }
}

/** Decapsulate with an expanded key: ML-KEM's implicit rejection gives a wrong secret, not a throw, for a forged ctM. */
function decapExpanded(ml: MlKemInterface, enc: Uint8Array, k: { skM: Uint8Array; skX: KeyObject; pk: Uint8Array }): Buffer {
  if (enc.length !== XWING_ENC_BYTES) throw new RangeError("an X-Wing ciphertext is 1120 bytes");
  const ctX = enc.subarray(CT_M);
  const ssM = ml.decap(enc.subarray(0, CT_M), k.skM);
  const ssX = x25519(k.skX, ctX);
  const shared = combiner(ssM, ssX, ctX, k.pk.subarray(PK_M));
  wipe(ssM, ssX);
  return shared;
}

/** Draft §5.5 Decapsulate: the shared secret from `enc` and the 32-byte private key. */
export async function xwingDecap(enc: Uint8Array, sk: Uint8Array): Promise<Buffer> {
  const ml = await mlKem768();
  const k = expand(ml, sk);
  try {
    return decapExpanded(ml, enc, k);
  } finally {
    wipe(k.skM);
  }
}

/**
 * A key pair from its seed, expanded once: the handshake's open then skips a
 * second ML-KEM key generation. The expanded key lives as long as the pair,
 * which the client drops once the grant is open (forward secrecy, §5.3).
 */
async function pair(sk: Uint8Array): Promise<KemKeyPair> {
  const ml = await mlKem768();
  const k = expand(ml, sk);
  wipe(sk);
  return {
    kem: KemType.xwing,
    publicKey: k.pk,
    open(enc, info, aad, ciphertext) {
      const { key, baseNonce } = keyScheduleBase(decapExpanded(ml, enc, k), info, AEAD, KEM_XWING);
      return openFirst(AEAD, key, baseNonce, ciphertext, aad);
    },
  };
}

/** The X-Wing part of the node:crypto HPKE engine (shared/hpke.ts HpkeEngine), asynchronous only while ML-KEM loads. */
export const xwingHpke = {
  generateKeyPair(): Promise<KemKeyPair> {
    return pair(bytes(randomBytes(32)));
  },
  /** RFC 9180 DeriveKeyPair as draft-ietf-hpke-pq gives it for X-Wing: sk = SHAKE256(ikm, 32). */
  deriveKeyPair(ikm: Uint8Array): Promise<KemKeyPair> {
    return pair(bytes(shake256(ikm, 32)));
  },
  importPublicKey(raw: Uint8Array): KemPublicKey {
    // Any 1216 bytes import, as with @hpke/hybridkem-x-wing; the ML-KEM modulus check runs at Encap.
    if (raw.length !== XWING_PUBLIC_BYTES) throw new PsimbolsError(ErrorCode.badRequest, `"kem.data" expected ${XWING_PUBLIC_BYTES} bytes for X-Wing`);
    return { kem: KemType.xwing, raw };
  },
  /** SetupBaseS; `ekm` is X-Wing's 64-byte eseed (test vectors only). */
  async createSender(recipient: KemPublicKey, info: Uint8Array, ekm?: Uint8Array): Promise<HpkeSender> {
    const { enc, shared } = await xwingEncap(recipient.raw, ekm);
    const { key, baseNonce } = keyScheduleBase(shared, info, AEAD, KEM_XWING);
    return { enc, seal: sealOnce((pt, aad) => sealFirst(AEAD, key, baseNonce, pt, aad)) };
  },
};
