/**
 * The node:crypto engine for the handshake's primitives (shared/crypto.ts
 * HandshakeCrypto): SHA-256, HKDF, Ed25519 import, sign and verify, and HPKE
 * base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM
 * (RFC 9180), all synchronous on the calling thread. Node only; installed by
 * node/engines.ts.
 *
 * Why: each WebCrypto call is a promise, a WebIDL normalisation and a hop to
 * libuv's thread pool and back, and `@hpke/core` makes many of them per seal
 * or open; a handshake made ~20 such calls on the server. node:crypto runs the
 * same OpenSSL primitives directly. Same inputs, same bytes:
 * test/client/node-handshake-crypto.test.ts checks RFC 9180's vectors and
 * this engine against the default one both ways.
 *
 * X-Wing (PROTOCOL.md §5.3.1) runs in node/xwing.ts: X25519 and SHA-3 on node:crypto,
 * ML-KEM-768 in JavaScript.
 *
 * ECDSA P-256 and RSA identities and the P-256 KEM go to the default engine
 * (webCryptoHandshake) unchanged. Keys cross engines by their bytes: a
 * handle this engine did not make is imported again from its SPKI or raw key.
 *
 * Keys go in and out of OpenSSL as JWK (the raw key bytes), not DER: OpenSSL
 * 3.0's DER decoders and encoders cost ~70-80 µs of CPU per key here, JWK
 * ~1-9 µs.
 */
import {
  KeyObject,
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { type HandshakeCrypto, type KeyHandle, KeyType, type PublicKey, type SigningKey, webCryptoHandshake } from "../shared/crypto.js";
import { type HpkeEngine, type HpkeSender, type KemKeyPair, type KemPublicKey, sealOnce } from "../shared/hpke.js";
import { KemType } from "../shared/frames.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { xwingHpke } from "./xwing.js";

const fallback = webCryptoHandshake;

/**
 * A plain Uint8Array copy of a Buffer's bytes: small Buffers (Buffer.concat,
 * Buffer.from) are views into Node's shared 8 KiB pool, which must not leave
 * this module (`.buffer` would expose the whole pool).
 */
const bytes = (b: Buffer): Uint8Array => {
  const u = new Uint8Array(b.length);
  u.set(b);
  return u;
};
const buf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

// ------------------------------------------------------------------ Ed25519

const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
/** KeyObjects of WebCrypto private keys (KeyObject.from shares OpenSSL's key; nothing is exported). */
const privateObjects = new WeakMap<CryptoKey, KeyObject>();
/** KeyObjects this engine made for public keys, and those it imported again for another engine's PublicKey. */
const publicObjects = new WeakSet<object>();
const reimported = new WeakMap<PublicKey, KeyObject>();

function ed25519Public(spki: Uint8Array): KeyObject {
  // An Ed25519 SPKI is a fixed 12-byte header and the 32-byte key (RFC 8410 §4);
  // importSpki has checked the header and length, checked again here.
  const der = buf(spki);
  if (der.length !== 44 || !der.subarray(0, 12).equals(ED25519_SPKI_PREFIX)) throw new RangeError("not a canonical Ed25519 SPKI");
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: der.subarray(12).toString("base64url") }, format: "jwk" });
  if (key.asymmetricKeyType !== "ed25519") throw new RangeError("not an Ed25519 key");
  return key;
}

function importSpki(type: KeyType, spki: Uint8Array, field: string): Promise<KeyHandle> | KeyHandle {
  if (type !== KeyType.ed25519) return fallback.importSpki(type, spki, field);
  let key: KeyObject;
  try {
    key = ed25519Public(spki);
  } catch (cause) {
    // The default's message for a key WebCrypto does not import.
    throw new PsimbolsError(ErrorCode.badRequest, `"${field}.data" is not a valid ${type} SubjectPublicKeyInfo`, { cause });
  }
  publicObjects.add(key);
  return key;
}

function publicObject(key: PublicKey): KeyObject {
  if (publicObjects.has(key.key)) return key.key as KeyObject;
  let k = reimported.get(key);
  if (!k) reimported.set(key, (k = ed25519Public(key.spki)));
  return k;
}

/**
 * The KeyObject of a WebCrypto private key, or undefined for a key of another
 * WebCrypto provider or one WebCrypto would not sign with (no "sign" usage):
 * those go to the default engine, which signs or refuses as before.
 */
function privateObject(k: CryptoKey): KeyObject | undefined {
  let o = privateObjects.get(k);
  if (!o) {
    if (k.type !== "private" || !k.usages.includes("sign")) return undefined;
    try {
      o = KeyObject.from(k);
    } catch {
      return undefined;
    }
    privateObjects.set(k, o);
  }
  return o;
}

function sign(key: SigningKey, message: Uint8Array): Promise<Uint8Array> | Uint8Array {
  const k = key.public.type === KeyType.ed25519 ? privateObject(key.privateKey) : undefined;
  if (!k || k.asymmetricKeyType !== "ed25519") return fallback.sign(key, message);
  return bytes(nodeSign(null, message, k));
}

function verify(key: PublicKey, signature: Uint8Array, message: Uint8Array): Promise<boolean> | boolean {
  if (key.type !== KeyType.ed25519) return fallback.verify(key, signature, message);
  try {
    return nodeVerify(null, message, publicObject(key), signature);
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------ HKDF

/**
 * HKDF-SHA256 (RFC 5869) on HMAC: one HMAC to extract and one per 32 bytes
 * of output, ~5 µs for 32 bytes where hkdfSync, which makes a KeyObject of
 * the key material first, takes ~11 µs.
 */
function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return hkdfEach(ikm, salt, [info], length)[0]!;
}

/**
 * HKDF-SHA256 of one key and salt for each of `infos`: one extract for all
 * (it depends on the key and salt only), then one expand per info. The same
 * bytes as {@link hkdf} with each info; a binding's two traffic keys take
 * three HMACs instead of four.
 */
function hkdfEach(ikm: Uint8Array, salt: Uint8Array, infos: readonly Uint8Array[], length: number): Uint8Array[] {
  if (!Number.isSafeInteger(length) || length < 0 || length > 255 * 32) throw new RangeError("hkdf: length must be 0..8160 bytes");
  const prk = createHmac("sha256", salt).update(ikm).digest();
  try {
    return infos.map((info) => {
      const out = new Uint8Array(length);
      let t: Buffer = EMPTY;
      for (let i = 1, at = 0; at < length; i++, at += 32) {
        const next = createHmac("sha256", prk).update(t).update(info).update(COUNTER[i]!).digest();
        wipe(t);
        t = next;
        out.set(t.subarray(0, Math.min(32, length - at)), at);
      }
      wipe(t);
      return out;
    });
  } finally {
    wipe(prk);
  }
}

/** HKDF-Expand's one-byte block counters, 1..255 (RFC 5869 §2.3), made once. */
const COUNTER: readonly Uint8Array[] = Array.from({ length: 256 }, (_, i) => Uint8Array.of(i));

// ------------------------------------------------------------------ HPKE (RFC 9180)

/** RFC 9180 §7 identifiers. */
const KEM_X25519 = 0x0020;
const KDF_HKDF_SHA256 = 0x0001;
/** AEADs by id (§7.3): 0x0002 AES-256-GCM is the handshake's; 0x0001 AES-128-GCM is for RFC 9180 A.1's vectors. */
export const HPKE_AEADS = { 0x0001: { nk: 16, cipher: "aes-128-gcm" }, 0x0002: { nk: 32, cipher: "aes-256-gcm" } } as const;
export type HpkeAeadId = keyof typeof HPKE_AEADS;
const NN = 12;
const NT = 16;
const VERSION = Buffer.from("HPKE-v1");
const i2osp2 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const KEM_SUITE = Buffer.concat([Buffer.from("KEM"), i2osp2(KEM_X25519)]);
const EMPTY = Buffer.alloc(0);
/** DER prefix of an X25519 private key (RFC 8410 PKCS#8) around its 32 raw bytes (DeriveKeyPair only). */
const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");

const wipe = (...bs: Buffer[]) => bs.forEach((b) => b.fill(0));

/** HKDF-Extract (RFC 5869): HMAC pads the key with zeros, so an empty salt is the RFC's Nh zero bytes. */
function labeledExtract(suite: Buffer, salt: Uint8Array, label: string, ikm: Uint8Array): Buffer {
  const input = Buffer.concat([VERSION, suite, Buffer.from(label), ikm]);
  const prk = createHmac("sha256", salt).update(input).digest();
  wipe(input);
  return prk;
}

/** HKDF-Expand (RFC 5869) to at most one SHA-256 block, which is all RFC 9180 needs here. */
function labeledExpand(suite: Buffer, prk: Uint8Array, label: string, info: Uint8Array, length: number): Buffer {
  if (length > 32) throw new RangeError("labeledExpand: at most 32 bytes");
  const t = createHmac("sha256", prk).update(Buffer.concat([i2osp2(length), VERSION, suite, Buffer.from(label), info])).update(Buffer.from([1])).digest();
  const out = Buffer.from(t.subarray(0, length));
  wipe(t);
  return out;
}

/** The raw 32 bytes of an X25519 public key. */
function rawPublic(k: KeyObject): Buffer {
  return Buffer.from(k.export({ format: "jwk" }).x!, "base64url");
}

function x25519Public(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new RangeError("an X25519 public key is 32 bytes");
  return createPublicKey({ key: { kty: "OKP", crv: "X25519", x: buf(raw).toString("base64url") }, format: "jwk" });
}

/** An X25519 private key from its 32 raw bytes (test vectors and DeriveKeyPair; the DER copy is wiped). */
export function x25519PrivateKey(sk: Uint8Array): KeyObject {
  if (sk.length !== 32) throw new RangeError("an X25519 private key is 32 bytes");
  const der = Buffer.concat([PKCS8_X25519, sk]);
  try {
    return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  } finally {
    wipe(der);
  }
}

/** RFC 9180 §7.1.3 DeriveKeyPair for X25519: skR (wiped once imported) and pkR. */
export function deriveKeyPairX25519(ikm: Uint8Array): { privateKey: KeyObject; publicKey: Buffer } {
  const prk = labeledExtract(KEM_SUITE, EMPTY, "dkp_prk", ikm);
  const sk = labeledExpand(KEM_SUITE, prk, "sk", EMPTY, 32);
  wipe(prk);
  try {
    const privateKey = x25519PrivateKey(sk);
    return { privateKey, publicKey: rawPublic(createPublicKey(privateKey)) };
  } finally {
    wipe(sk);
  }
}

/** DH, refusing an all-zero output (RFC 9180 §7.1.4; OpenSSL refuses it too). Constant time over the bytes. */
function dh(privateKey: KeyObject, publicKey: KeyObject): Buffer {
  const z = diffieHellman({ privateKey, publicKey });
  let acc = 0;
  for (let i = 0; i < z.length; i++) acc |= z[i]!;
  if (acc === 0) throw new PsimbolsError(ErrorCode.badRequest, "X25519 shared secret is all zero");
  return z;
}

/** RFC 9180 §4.1 ExtractAndExpand of DHKEM(X25519, HKDF-SHA256); wipes `dhOut`. */
function extractAndExpand(dhOut: Buffer, enc: Uint8Array, pkRm: Uint8Array): Buffer {
  const eaePrk = labeledExtract(KEM_SUITE, EMPTY, "eae_prk", dhOut);
  wipe(dhOut);
  const shared = labeledExpand(KEM_SUITE, eaePrk, "shared_secret", Buffer.concat([enc, pkRm]), 32);
  wipe(eaePrk);
  return shared;
}

/** RFC 9180 §4.1 Encap: `enc` and the shared secret, with an ephemeral key from `ekm` (test vectors) or fresh. */
export function encapX25519(pkR: KeyObject, pkRm: Uint8Array, ekm?: Uint8Array): { enc: Buffer; shared: Buffer } {
  const eph = ekm ? deriveKeyPairX25519(ekm) : generateKeyPairSync("x25519");
  const enc = ekm ? (eph.publicKey as Buffer) : rawPublic(eph.publicKey as KeyObject);
  return { enc, shared: extractAndExpand(dh(eph.privateKey, pkR), enc, pkRm) };
}

/** RFC 9180 §4.1 Decap. */
export function decapX25519(enc: Uint8Array, skR: KeyObject, pkRm: Uint8Array): Buffer {
  return extractAndExpand(dh(skR, x25519Public(enc)), enc, pkRm);
}

const hpkeSuiteId = (aead: HpkeAeadId, kem: number) => Buffer.concat([Buffer.from("HPKE"), i2osp2(kem), i2osp2(KDF_HKDF_SHA256), i2osp2(aead)]);
/**
 * Per KEM and AEAD: suite_id, and `mode_base || psk_id_hash` (the PSK id is
 * empty in base mode), the constant start of key_schedule_context. Made on
 * first use: DHKEM(X25519) 0x0020, and X-Wing 0x647a (node/xwing.ts).
 */
const SCHEDULE = new Map<number, { suite: Buffer; head: Buffer }>();
function schedule(aead: HpkeAeadId, kem: number): { suite: Buffer; head: Buffer } {
  let s = SCHEDULE.get(kem * 0x10000 + aead);
  if (!s) {
    const suite = hpkeSuiteId(aead, kem);
    s = { suite, head: Buffer.concat([Buffer.from([0]), labeledExtract(suite, EMPTY, "psk_id_hash", EMPTY)]) };
    SCHEDULE.set(kem * 0x10000 + aead, s);
  }
  return s;
}

/**
 * RFC 9180 §5.1 KeySchedule, mode_base (no PSK): the AEAD key and base nonce;
 * wipes `shared`. `kem` is the suite's KEM id (default DHKEM(X25519) 0x0020).
 */
export function keyScheduleBase(shared: Buffer, info: Uint8Array, aead: HpkeAeadId, kem: number = KEM_X25519): { key: Buffer; baseNonce: Buffer } {
  const { suite, head } = schedule(aead, kem);
  const ksc = Buffer.concat([head, labeledExtract(suite, EMPTY, "info_hash", info)]);
  const secret = labeledExtract(suite, shared, "secret", EMPTY);
  wipe(shared);
  const key = labeledExpand(suite, secret, "key", ksc, HPKE_AEADS[aead].nk);
  const baseNonce = labeledExpand(suite, secret, "base_nonce", ksc, NN);
  wipe(secret);
  return { key, baseNonce };
}

/** §5.2 Seal of the context's first message (sequence 0: the nonce is base_nonce). Wipes `key`. */
export function sealFirst(aead: HpkeAeadId, key: Buffer, baseNonce: Buffer, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  try {
    const c = createCipheriv(HPKE_AEADS[aead].cipher, key, baseNonce, { authTagLength: NT });
    c.setAAD(aad);
    return bytes(Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]));
  } finally {
    wipe(key);
  }
}

/** §5.2 Open of the context's first message. Wipes `key`. @throws when it does not authenticate. */
export function openFirst(aead: HpkeAeadId, key: Buffer, baseNonce: Buffer, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array {
  try {
    if (ciphertext.length < NT) throw new Error("HPKE ciphertext shorter than its tag");
    const ct = buf(ciphertext);
    const d = createDecipheriv(HPKE_AEADS[aead].cipher, key, baseNonce, { authTagLength: NT });
    d.setAAD(aad);
    d.setAuthTag(ct.subarray(ct.length - NT));
    // The plaintext (the grant, with the channel key) goes into its own array; Node's pieces are wiped.
    const body = d.update(ct.subarray(0, ct.length - NT));
    try {
      const fin = d.final();
      const out = new Uint8Array(body.length + fin.length);
      out.set(body);
      out.set(fin, body.length);
      wipe(fin);
      return out;
    } finally {
      wipe(body);
    }
  } finally {
    wipe(key);
  }
}

/** The handshake's AEAD: AES-256-GCM. */
const AEAD: HpkeAeadId = 0x0002;

/** X25519 recipient keys this engine imported, by their KemPublicKey. */
const kemPublics = new WeakMap<KemPublicKey, KeyObject>();

function x25519Pair(privateKey: KeyObject, publicKey: Buffer): KemKeyPair {
  const pkRm = bytes(publicKey);
  return {
    kem: KemType.x25519,
    publicKey: pkRm,
    open(enc, info, aad, ciphertext) {
      const { key, baseNonce } = keyScheduleBase(decapX25519(enc, privateKey, pkRm), info, AEAD);
      return openFirst(AEAD, key, baseNonce, ciphertext, aad);
    },
  };
}

const nodeHpke: HpkeEngine = {
  generateKeyPair(kem) {
    if (kem === KemType.xwing) return xwingHpke.generateKeyPair();
    if (kem !== KemType.x25519) return fallback.hpke.generateKeyPair(kem);
    const pair = generateKeyPairSync("x25519");
    return x25519Pair(pair.privateKey, rawPublic(pair.publicKey));
  },
  deriveKeyPair(kem, ikm) {
    if (kem === KemType.xwing) return xwingHpke.deriveKeyPair(ikm);
    if (kem !== KemType.x25519) return fallback.hpke.deriveKeyPair(kem, ikm);
    const pair = deriveKeyPairX25519(ikm);
    return x25519Pair(pair.privateKey, pair.publicKey);
  },
  importPublicKey(kem, raw) {
    if (kem === KemType.xwing) return xwingHpke.importPublicKey(raw);
    if (kem !== KemType.x25519) return fallback.hpke.importPublicKey(kem, raw);
    const pub: KemPublicKey = { kem, raw };
    kemPublics.set(pub, x25519Public(raw));
    return pub;
  },
  createSender(recipient, info, ekm): HpkeSender | Promise<HpkeSender> {
    if (recipient.kem === KemType.xwing) return xwingHpke.createSender(recipient, info, ekm);
    if (recipient.kem !== KemType.x25519) return fallback.hpke.createSender(recipient, info, ekm);
    const pkR = kemPublics.get(recipient) ?? x25519Public(recipient.raw);
    const { enc, shared } = encapX25519(pkR, recipient.raw, ekm);
    const { key, baseNonce } = keyScheduleBase(shared, info, AEAD);
    return { enc: bytes(enc), seal: sealOnce((pt, aad) => sealFirst(AEAD, key, baseNonce, pt, aad)) };
  },
};

// ------------------------------------------------------------------ the engine

/** The node:crypto engine; node/engines.ts installs it with useHandshakeCrypto. */
export const nodeHandshakeCrypto: HandshakeCrypto = {
  name: "node:crypto",
  sha256: (data) => bytes(createHash("sha256").update(data).digest()),
  hkdf,
  hkdfEach,
  importSpki,
  sign,
  verify,
  hpke: nodeHpke,
};
