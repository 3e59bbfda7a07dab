/**
 * Prototype: the server's half of HPKE (RFC 9180) base mode on node:crypto,
 * for DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM — the suite
 * psimbols uses by default (issue 7: "a node:crypto HPKE path that
 * reproduces RFC 9180's vectors and agrees with @hpke/core"). Swapped in for
 * shared/hpke.js in the bench server by bench/resolve-hooks.ts when
 * `PSIMBOLS_BENCH_CRYPTO=node` (the server, and the load generator's client
 * side in the node:crypto rows). X25519 only: encap, decap, key generation,
 * key schedule, single-message seal and open; the P-256 KEM and anything else
 * stay on @hpke/core. bench/node-hpke-check.ts runs RFC 9180 A.1-style
 * differential checks against @hpke/core (same ekm → same enc and ciphertext).
 */
import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from "node:crypto";
import type { CipherSuite } from "@hpke/core";
import * as real from "../shared/hpke.js";
import { KemType } from "../shared/frames.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";

// Everything else is the original's; hpkeSuite and importKemPublic below shadow theirs.
export * from "../shared/hpke.js";
const KEM_PUBLIC_BYTES = real.KEM_PUBLIC_BYTES;

/** RFC 9180 §7: identifiers of the suite. */
const KEM_X25519 = 0x0020;
const KDF_HKDF_SHA256 = 0x0001;
/** AEAD ids and key lengths (§7.3); 0x0001 is here for RFC 9180 A.1's vectors only. */
const AEADS = { 0x0001: { nk: 16, cipher: "aes-128-gcm" }, 0x0002: { nk: 32, cipher: "aes-256-gcm" } } as const;
type AeadId = keyof typeof AEADS;
const NN = 12;
const VERSION = Buffer.from("HPKE-v1");
const i2osp2 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const KEM_SUITE = Buffer.concat([Buffer.from("KEM"), i2osp2(KEM_X25519)]);
/** DER prefix of an X25519 private key (RFC 8410 PKCS#8) around the 32 raw bytes. */
const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");

function extract(salt: Uint8Array, ikm: Uint8Array): Buffer {
  // HMAC pads the key with zeros, so an empty salt is the RFC's Nh zero bytes.
  return createHmac("sha256", salt).update(ikm).digest();
}
function expand(prk: Uint8Array, info: Uint8Array, length: number): Buffer {
  if (length > 32) throw new RangeError("expand: at most one SHA-256 block is needed here");
  return createHmac("sha256", prk).update(info).update(Buffer.from([1])).digest().subarray(0, length);
}
function labeledExtract(suite: Buffer, salt: Uint8Array, label: string, ikm: Uint8Array): Buffer {
  return extract(salt, Buffer.concat([VERSION, suite, Buffer.from(label), ikm]));
}
function labeledExpand(suite: Buffer, prk: Uint8Array, label: string, info: Uint8Array, length: number): Buffer {
  return expand(prk, Buffer.concat([i2osp2(length), VERSION, suite, Buffer.from(label), info]), length);
}

function toArrayBuffer(b: Buffer): ArrayBuffer {
  const out = new ArrayBuffer(b.length);
  new Uint8Array(out).set(b);
  return out;
}

/*
 * Raw keys go in and out through JWK, not DER: OpenSSL 3.0's DER encoders and
 * decoders cost ~70-80 µs CPU per key here, JWK (raw key bytes) ~1-9 µs.
 */
function rawPublic(k: KeyObject): Buffer {
  return Buffer.from(k.export({ format: "jwk" }).x!, "base64url");
}

/** RFC 9180 §7.1.3 DeriveKeyPair for X25519. */
function deriveKeyPair(ikm: Uint8Array): { privateKey: KeyObject; publicKey: KeyObject } {
  const prk = labeledExtract(KEM_SUITE, new Uint8Array(0), "dkp_prk", ikm);
  const sk = labeledExpand(KEM_SUITE, prk, "sk", new Uint8Array(0), 32);
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, sk]), format: "der", type: "pkcs8" });
  sk.fill(0);
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/** A recipient's X25519 public key as node:crypto holds it, plus its raw bytes (pkRm). */
interface RecipientKey {
  readonly object: KeyObject;
  readonly raw: Buffer;
}
const recipientKeys = new WeakMap<object, RecipientKey>();

function importX25519(raw: Uint8Array): RecipientKey {
  const bytes = Buffer.from(raw);
  return { object: createPublicKey({ key: { kty: "OKP", crv: "X25519", x: bytes.toString("base64url") }, format: "jwk" }), raw: bytes };
}

/** Sender context of base mode: `enc` and single-use `seal` (seq 0, as the grant needs). */
export interface SenderContext {
  readonly enc: ArrayBuffer;
  seal(plaintext: Uint8Array, aad?: Uint8Array): Promise<ArrayBuffer>;
}

/** Recipient context of base mode: single-use `open` (seq 0). */
export interface RecipientContext {
  open(ciphertext: Uint8Array, aad?: Uint8Array): Promise<ArrayBuffer>;
}

/** RFC 9180 §4.1 ExtractAndExpand of DHKEM(X25519, HKDF-SHA256). */
function sharedSecret(dh: Buffer, enc: Buffer, pkRm: Buffer): Buffer {
  const eaePrk = labeledExtract(KEM_SUITE, new Uint8Array(0), "eae_prk", dh);
  dh.fill(0);
  return labeledExpand(KEM_SUITE, eaePrk, "shared_secret", Buffer.concat([enc, pkRm]), 32);
}

/** RFC 9180 §5.1 KeySchedule, mode_base (no PSK): the AEAD key and base nonce. */
function keySchedule(shared: Buffer, info: Uint8Array, aeadId: AeadId): { key: Buffer; baseNonce: Buffer } {
  const suite = Buffer.concat([Buffer.from("HPKE"), i2osp2(KEM_X25519), i2osp2(KDF_HKDF_SHA256), i2osp2(aeadId)]);
  const empty = new Uint8Array(0);
  const ksc = Buffer.concat([Buffer.from([0]), labeledExtract(suite, empty, "psk_id_hash", empty), labeledExtract(suite, empty, "info_hash", info)]);
  const secret = labeledExtract(suite, shared, "secret", empty);
  shared.fill(0);
  const key = labeledExpand(suite, secret, "key", ksc, AEADS[aeadId].nk);
  const baseNonce = labeledExpand(suite, secret, "base_nonce", ksc, NN);
  secret.fill(0);
  return { key, baseNonce };
}

/**
 * RFC 9180 §4.1 Encap + §5.1 KeySchedule (mode_base) + §5.2 Seal, on node:crypto.
 * @param ekm fixed ephemeral key material (test vectors only).
 */
export function createSender(pkR: RecipientKey, info: Uint8Array, aeadId: AeadId = 0x0002, ekm?: Uint8Array): SenderContext {
  const eph = ekm ? deriveKeyPair(ekm) : generateKeyPairSync("x25519");
  const enc = rawPublic(eph.publicKey);
  const shared = sharedSecret(diffieHellman({ privateKey: eph.privateKey, publicKey: pkR.object }), enc, pkR.raw);
  const { key, baseNonce } = keySchedule(shared, info, aeadId);
  let used = false;
  return {
    enc: toArrayBuffer(enc),
    async seal(plaintext: Uint8Array, aad: Uint8Array = new Uint8Array(0)): Promise<ArrayBuffer> {
      // The grant is one message: sequence 0, nonce = base_nonce. A second seal would need seq 1.
      if (used) throw new PsimbolsError(ErrorCode.internal, "this prototype sender seals one message only");
      used = true;
      const c = createCipheriv(AEADS[aeadId].cipher, key, baseNonce);
      c.setAAD(aad);
      const out = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
      key.fill(0);
      return toArrayBuffer(out);
    },
  };
}

/** RFC 9180 §4.1 Decap + §5.1 KeySchedule (mode_base) + §5.2 Open, on node:crypto. */
export function createRecipient(skR: KeyObject, pkRm: Buffer, enc: Uint8Array, info: Uint8Array, aeadId: AeadId = 0x0002): RecipientContext {
  const encB = Buffer.from(enc);
  const pkE = importX25519(encB).object;
  const shared = sharedSecret(diffieHellman({ privateKey: skR, publicKey: pkE }), encB, pkRm);
  const { key, baseNonce } = keySchedule(shared, info, aeadId);
  let used = false;
  return {
    async open(ciphertext: Uint8Array, aad: Uint8Array = new Uint8Array(0)): Promise<ArrayBuffer> {
      if (used) throw new PsimbolsError(ErrorCode.internal, "this prototype recipient opens one message only");
      used = true;
      const ct = Buffer.from(ciphertext);
      if (ct.length < 16) throw new PsimbolsError(ErrorCode.protocol, "HPKE ciphertext shorter than its tag");
      const d = createDecipheriv(AEADS[aeadId].cipher, key, baseNonce);
      d.setAAD(aad);
      d.setAuthTag(ct.subarray(ct.length - 16));
      const out = Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
      key.fill(0);
      return toArrayBuffer(out);
    },
  };
}

/** Private halves made by the fast suite's generateKeyPair, by their opaque handle. */
const privateKeys = new WeakMap<object, { object: KeyObject; pkRm: Buffer }>();

/** Wraps @hpke/core's suite: X25519 sender, recipient and key generation replaced, the rest delegated. */
function fastSuite(): CipherSuite {
  const base = real.hpkeSuite(KemType.x25519);
  const handle = (type: "public" | "private") => Object.freeze({ type, algorithm: { name: "X25519" } }) as unknown as CryptoKey;
  const kem = Object.create(base.kem) as CipherSuite["kem"];
  kem.deserializePublicKey = async (raw: ArrayBuffer | Uint8Array) => {
    const k = importX25519(raw instanceof Uint8Array ? raw : new Uint8Array(raw));
    const h = handle("public");
    recipientKeys.set(h, k);
    return h;
  };
  kem.generateKeyPair = async () => {
    const pair = generateKeyPairSync("x25519");
    const raw = rawPublic(pair.publicKey);
    const pub = handle("public");
    const priv = handle("private");
    recipientKeys.set(pub, { object: pair.publicKey, raw });
    privateKeys.set(priv, { object: pair.privateKey, pkRm: raw });
    return { publicKey: pub, privateKey: priv };
  };
  kem.serializePublicKey = async (k: CryptoKey) => {
    const r = recipientKeys.get(k);
    return r ? toArrayBuffer(r.raw) : base.kem.serializePublicKey(k);
  };
  const s = Object.create(base) as CipherSuite;
  Object.defineProperty(s, "kem", { value: kem });
  s.createSenderContext = (async (params: { recipientPublicKey: CryptoKey; info?: ArrayBuffer | Uint8Array; ekm?: ArrayBuffer | Uint8Array }) => {
    const k = recipientKeys.get(params.recipientPublicKey);
    if (!k) return base.createSenderContext(params as Parameters<CipherSuite["createSenderContext"]>[0]);
    const info = params.info ? new Uint8Array(params.info) : new Uint8Array(0);
    return createSender(k, info, 0x0002, params.ekm ? new Uint8Array(params.ekm) : undefined);
  }) as unknown as CipherSuite["createSenderContext"];
  s.createRecipientContext = (async (params: { recipientKey: CryptoKeyPair | CryptoKey; enc: ArrayBuffer | Uint8Array; info?: ArrayBuffer | Uint8Array }) => {
    const sk = "privateKey" in params.recipientKey ? params.recipientKey.privateKey : params.recipientKey;
    const k = privateKeys.get(sk);
    if (!k) return base.createRecipientContext(params as Parameters<CipherSuite["createRecipientContext"]>[0]);
    const info = params.info ? new Uint8Array(params.info) : new Uint8Array(0);
    return createRecipient(k.object, k.pkRm, new Uint8Array(params.enc), info);
  }) as unknown as CipherSuite["createRecipientContext"];
  return s;
}

let fast: CipherSuite | undefined;

/** The HPKE suite for an ephemeral key type: node:crypto sender for X25519, @hpke/core otherwise. */
export function hpkeSuite(kem: KemType): CipherSuite {
  if (kem !== KemType.x25519) return real.hpkeSuite(kem);
  return (fast ??= fastSuite());
}

/** Imports a client's ephemeral public key, mapping errors to `bad_request`, as the original. */
export async function importKemPublic(kem: KemType, raw: Uint8Array): Promise<CryptoKey> {
  if (kem !== KemType.x25519) return real.importKemPublic(kem, raw);
  if (raw.length !== KEM_PUBLIC_BYTES[kem]) {
    throw new PsimbolsError(ErrorCode.badRequest, `"kem.data" expected ${KEM_PUBLIC_BYTES[kem]} bytes for ${kem}`);
  }
  try {
    return await hpkeSuite(kem).kem.deserializePublicKey(raw as Uint8Array<ArrayBuffer>);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `"kem.data" is not a valid ${kem} public key`, { cause });
  }
}
