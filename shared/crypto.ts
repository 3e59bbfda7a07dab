/**
 * Signature keys, fingerprints, hashes and randomness (docs/PROTOCOL.md §3).
 * The one place in shared/ that reaches `crypto.subtle`.
 *
 * The handshake's primitives (SHA-256, HKDF, SPKI import, sign, verify and
 * HPKE) run on the installed {@link HandshakeCrypto} engine. The default,
 * {@link webCryptoHandshake}, is WebCrypto and `@hpke/core` and runs
 * everywhere; Node entry points install node:crypto's
 * (node/handshake-crypto.ts), the same bytes without WebCrypto's
 * promise and thread-pool hop per call. The checks on keys that do not
 * depend on the provider (canonical SPKI, small-order Ed25519 points) run
 * here, before and after the engine, whichever is installed.
 */
import { ErrorCode, PsimbolsError, badField } from "./errors.js";
import { b64, b64u, ctEqual, fromB64u } from "./encoding.js";
import { type HpkeEngine, webCryptoHpke } from "./hpke.js";

/** The one guarded accessor for WebCrypto; a runtime without it fails here, loudly. */
export function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new PsimbolsError(ErrorCode.unsupported, "this runtime has no WebCrypto (globalThis.crypto.subtle)");
  return s;
}

/**
 * Fresh random bytes from the platform CSPRNG, one call each: no pool, so no
 * future nonce or key sits in memory before it is used (a pool saved about
 * 2 µs a call, three calls a resume: not worth it in security code).
 */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** Identity and server key types, PROTOCOL.md §3.1. */
export const KeyType = { ed25519: "Ed25519", p256: "ECDSA-P256", rsa: "RSA" } as const;
export type KeyType = (typeof KeyType)[keyof typeof KeyType];
export const keyTypes: readonly KeyType[] = Object.values(KeyType);

/** RSA modulus bounds: below 2048 is weak; above 4096 costs the server too much per hello. */
export const RSA_MIN_BITS = 2048;
export const RSA_MAX_BITS = 4096;
/** Largest SubjectPublicKeyInfo accepted (an RSA-4096 SPKI is 550 bytes). */
export const MAX_SPKI_BYTES = 1024;

interface Algo {
  importParams: RsaHashedImportParams | EcKeyImportParams | Algorithm;
  signParams: RsaPssParams | EcdsaParams | Algorithm;
}
const ALGOS: Record<KeyType, Algo> = {
  Ed25519: { importParams: { name: "Ed25519" }, signParams: { name: "Ed25519" } },
  "ECDSA-P256": {
    importParams: { name: "ECDSA", namedCurve: "P-256" } as EcKeyImportParams,
    signParams: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
  },
  RSA: {
    importParams: { name: "RSA-PSS", hash: "SHA-256" } as RsaHashedImportParams,
    signParams: { name: "RSA-PSS", saltLength: 32 } as RsaPssParams,
  },
};

export function isKeyType(x: unknown): x is KeyType {
  return typeof x === "string" && (keyTypes as readonly string[]).includes(x);
}

/**
 * The handle of an imported public key inside the engine that imported it: a
 * WebCrypto CryptoKey with the default engine, the engine's own object
 * otherwise (node:crypto: a KeyObject). Only engines look inside; an engine
 * given another engine's handle imports the key again from its SPKI.
 */
export type KeyHandle = CryptoKey | object;

/** A verified-importable public key: its type, its SPKI DER and the engine's handle. */
export interface PublicKey {
  readonly type: KeyType;
  readonly spki: Uint8Array;
  readonly key: KeyHandle;
  readonly fingerprint: string;
}

/** A signing key: the public half plus a (possibly non-extractable) private CryptoKey. */
export interface SigningKey {
  readonly public: PublicKey;
  readonly privateKey: CryptoKey;
}

/**
 * A fingerprint's text form (PROTOCOL.md §3): "SHA256:" and the unpadded
 * base64 of 32 bytes, canonical: the last of its 43 characters carries two
 * zero bits, so no other text names the same hash (and none names no key).
 * The server API refuses any other form (docs/BACKEND.md: 400).
 */
export const FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$/;

/** `SHA256:` + base64 (no padding) of SHA-256(SPKI DER). PROTOCOL.md §3.2. */
export async function fingerprint(spki: Uint8Array): Promise<string> {
  return "SHA256:" + b64(await engine.sha256(spki));
}

/** SHA-256, on the installed engine. */
export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return engine.sha256(data);
}

/**
 * Parses and imports a wire public key `{type, data}`.
 * @throws PsimbolsError `unsupported` for an unknown type, `bad_request` for a
 *   malformed or invalid key (bad DER, point not on the curve, RSA out of bounds).
 */
export async function importPublicKey(wire: unknown, field = "public_key"): Promise<PublicKey> {
  if (typeof wire !== "object" || wire === null || Array.isArray(wire)) throw badField(field, "object {type, data}", wire);
  const { type, data } = wire as { type?: unknown; data?: unknown };
  if (typeof type !== "string") throw badField(`${field}.type`, "string", type);
  if (!isKeyType(type)) {
    throw new PsimbolsError(ErrorCode.unsupported, `${field}.type is not supported; accepted: ${keyTypes.join(", ")}`);
  }
  const spki = fromB64u(data, `${field}.data`, MAX_SPKI_BYTES);
  return importSpki(type, spki, field);
}

/**
 * The fixed DER prefix of Ed25519 (RFC 8410) and uncompressed P-256 (RFC 5480)
 * SubjectPublicKeyInfo: the whole encoding but the key bytes. Checked here, not
 * left to the WebCrypto provider, since providers differ in what they accept.
 */
const SPKI_PREFIX: Partial<Record<KeyType, { hex: string; total: number }>> = {
  Ed25519: { hex: "302a300506032b6570032100", total: 44 },
  "ECDSA-P256": { hex: "3059301306072a8648ce3d020106082a8648ce3d03010703420004", total: 91 },
};

function hasPrefix(type: KeyType, spki: Uint8Array): boolean {
  const p = SPKI_PREFIX[type];
  if (!p) return true;
  if (spki.length !== p.total) return false;
  for (let i = 0; i < p.hex.length / 2; i++) if (spki[i] !== parseInt(p.hex.slice(2 * i, 2 * i + 2), 16)) return false;
  return true;
}

/**
 * Encodings (sign bit cleared) of the Ed25519 points of small order, canonical
 * and not: the blocklist of libsodium's `has_small_order` (RFC 8032 §5.1.3
 * decoding accepts them; verification must not).
 */
const ED25519_SMALL_ORDER: readonly string[] = [
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "0000000000000000000000000000000000000000000000000000000000000000",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/**
 * Whether a 32-byte Curve25519 point encoding is in `list` (hex, bit 255
 * cleared), whatever its bit 255: the small-order blocklists of Ed25519 (here)
 * and X25519 (shared/handshake.ts) are matched the same way.
 */
export function inPointList(point: Uint8Array, list: readonly string[]): boolean {
  let hex = "";
  point.forEach((b, i) => (hex += (i === 31 ? b & 0x7f : b).toString(16).padStart(2, "0")));
  return list.includes(hex);
}

/**
 * Imports SPKI DER bytes of a known type; see {@link importPublicKey}.
 * Whichever engine is installed, the SPKI must be canonical and an Ed25519
 * point must not be of small order: those checks are made here, around the
 * engine's import.
 */
export async function importSpki(type: KeyType, spki: Uint8Array, field = "public_key"): Promise<PublicKey> {
  if (!hasPrefix(type, spki)) {
    throw new PsimbolsError(ErrorCode.badRequest, `"${field}.data" is not a canonical ${type} SubjectPublicKeyInfo`);
  }
  const key = await engine.importSpki(type, spki, field);
  if (type === KeyType.ed25519 && inPointList(spki.subarray(12), ED25519_SMALL_ORDER)) {
    // A small-order point verifies a signature (R = identity, S = 0) over every message.
    throw new PsimbolsError(ErrorCode.badRequest, `"${field}" is a small-order Ed25519 point`);
  }
  return { type, spki, key, fingerprint: await fingerprint(spki) };
}

/** CryptoKeys made by {@link webImportSpki}; another handle is imported again (see {@link webVerifyKey}). */
const webPublicKeys = new WeakSet<object>();
const webReimported = new WeakMap<PublicKey, CryptoKey>();

/**
 * The default engine's SPKI import: WebCrypto's import, then the checks that
 * need the provider's view of the key (the SPKI is what the key re-exports
 * to; RSA modulus and exponent).
 */
async function webImportSpki(type: KeyType, spki: Uint8Array, field: string): Promise<CryptoKey> {
  let key: CryptoKey;
  try {
    key = await subtle().importKey("spki", spki as BufferSource, ALGOS[type].importParams, true, ["verify"]);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `"${field}.data" is not a valid ${type} SubjectPublicKeyInfo`, { cause });
  }
  // One key, one encoding, one fingerprint: the SPKI must be exactly what the key re-exports
  // to (canonical DER, the type's own OID), or the same key could pose as several identities.
  const canonical = new Uint8Array(await subtle().exportKey("spki", key));
  if (!ctEqual(canonical, spki)) {
    throw new PsimbolsError(ErrorCode.badRequest, `"${field}.data" is not a canonical ${type} SubjectPublicKeyInfo`);
  }
  if (type === KeyType.rsa) {
    const bits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
    if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
      throw new PsimbolsError(ErrorCode.badRequest, `"${field}" RSA modulus must be ${RSA_MIN_BITS}..${RSA_MAX_BITS} bits, got ${bits}`);
    }
    // e = 1 makes every PSS encoding its own signature: anyone could sign. Odd e ≥ 3 only.
    const e = (key.algorithm as RsaHashedKeyAlgorithm).publicExponent;
    const even = (e[e.length - 1] ?? 0) % 2 === 0;
    const small = e.every((b, i) => (i === e.length - 1 ? b < 3 : b === 0));
    if (even || small) throw new PsimbolsError(ErrorCode.badRequest, `"${field}" RSA public exponent must be odd and at least 3`);
  }
  webPublicKeys.add(key);
  return key;
}

/** The CryptoKey of `key`: its own handle when the default engine made it, else imported again from its SPKI. */
async function webVerifyKey(key: PublicKey): Promise<CryptoKey> {
  if (webPublicKeys.has(key.key)) return key.key as CryptoKey;
  let k = webReimported.get(key);
  if (!k) {
    k = await subtle().importKey("spki", key.spki as BufferSource, ALGOS[key.type].importParams, true, ["verify"]);
    webReimported.set(key, k);
  }
  return k;
}

/**
 * Imports a PKCS#8 private key and derives its public half.
 * Ed25519/ECDSA public keys come from the JWK of the (temporarily extractable) key;
 * callers that need a non-extractable key get one back.
 */
export async function importPkcs8(type: KeyType, pkcs8: Uint8Array, extractable = false): Promise<SigningKey> {
  const s = subtle();
  const params = ALGOS[type].importParams;
  let priv: CryptoKey;
  try {
    priv = await s.importKey("pkcs8", pkcs8 as BufferSource, params, true, ["sign"]);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `not a valid ${type} PKCS#8 private key`, { cause });
  }
  const jwk = await s.exportKey("jwk", priv);
  delete jwk.d, delete jwk.p, delete jwk.q, delete jwk.dp, delete jwk.dq, delete jwk.qi;
  jwk.key_ops = ["verify"];
  const pub = await s.importKey("jwk", jwk, params, true, ["verify"]);
  const spki = new Uint8Array(await s.exportKey("spki", pub));
  const publicKey = await importSpki(type, spki);
  const privateKey = extractable ? priv : await s.importKey("pkcs8", pkcs8 as BufferSource, params, false, ["sign"]);
  return { public: publicKey, privateKey };
}

/** Generates a signing key of `type`; the private key is non-extractable unless asked. */
export async function generateSigningKey(type: KeyType = KeyType.ed25519, extractable = false): Promise<SigningKey> {
  const s = subtle();
  const gen: Algorithm =
    type === KeyType.rsa
      ? ({ name: "RSA-PSS", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" } as RsaHashedKeyGenParams)
      : (ALGOS[type].importParams as Algorithm);
  const pair = (await s.generateKey(gen, extractable, ["sign", "verify"])) as CryptoKeyPair;
  const spki = new Uint8Array(await s.exportKey("spki", pair.publicKey));
  return { public: await importSpki(type, spki), privateKey: pair.privateKey };
}

/** Signs `message` with the identity or server key, on the installed engine. */
export async function sign(key: SigningKey, message: Uint8Array): Promise<Uint8Array> {
  return engine.sign(key, message);
}

/** Verifies a signature on the installed engine; any failure inside the engine counts as "does not verify". */
export async function verify(key: PublicKey, signature: Uint8Array, message: Uint8Array): Promise<boolean> {
  try {
    return (await engine.verify(key, signature, message)) === true;
  } catch {
    return false;
  }
}

/** HKDF-SHA256 (RFC 5869) extract-and-expand to `length` bytes, on the installed engine. */
export async function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  return engine.hkdf(ikm, salt, info, length);
}

/**
 * HKDF-SHA256 of one key and salt for each of `infos` (the same bytes as
 * {@link hkdf} with each): one extract for all where the engine offers it.
 */
export async function hkdfEach(ikm: Uint8Array, salt: Uint8Array, infos: readonly Uint8Array[], length: number): Promise<Uint8Array[]> {
  if (engine.hkdfEach) return engine.hkdfEach(ikm, salt, infos, length);
  return Promise.all(infos.map((info) => engine.hkdf(ikm, salt, info, length)));
}

/** Imports 32 raw bytes as a non-extractable AES-256-GCM key. */
export async function aesKey(raw: Uint8Array): Promise<CryptoKey> {
  return subtle().importKey("raw", raw as BufferSource, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/** Wire form `{type, data}` of a public key. */
export function wirePublicKey(k: PublicKey): { type: KeyType; data: string } {
  return { type: k.type, data: b64u(k.spki) };
}

// ------------------------------------------------------------------ engines

/**
 * The primitives of the handshake (PROTOCOL.md §3, §5) behind one interface,
 * as shared/channel.ts does for traffic keys with `TrafficKey`. Every engine
 * gives the same bytes for the same inputs (Ed25519 signatures included:
 * they are deterministic), verifies what the others sign, and refuses every
 * key the default refuses, with the same code and message. An engine may
 * hand any case it does not speed up (ECDSA P-256, RSA, the P-256 KEM) to
 * {@link webCryptoHandshake}. Synchronous results are allowed.
 */
export interface HandshakeCrypto {
  /** For diagnostics: "webcrypto", "node:crypto". */
  readonly name: string;
  sha256(data: Uint8Array): Promise<Uint8Array> | Uint8Array;
  /** HKDF-SHA256 (RFC 5869), extract and expand, to `length` bytes. */
  hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> | Uint8Array;
  /** Optional: {@link hkdf} for each of `infos` with one extract (a binding's two traffic keys, §6.1). */
  hkdfEach?(ikm: Uint8Array, salt: Uint8Array, infos: readonly Uint8Array[], length: number): Promise<Uint8Array[]> | Uint8Array[];
  /**
   * Imports SPKI DER of `type` for verifying. {@link importSpki} has already
   * checked the canonical DER prefix of Ed25519 and P-256 keys, and checks
   * small-order Ed25519 points afterwards; the engine refuses everything
   * else the default refuses (invalid or non-canonical keys, RSA outside
   * 2048..4096 bits or with an even or small exponent) with the default's
   * PsimbolsError.
   */
  importSpki(type: KeyType, spki: Uint8Array, field: string): Promise<KeyHandle> | KeyHandle;
  /** Signs with a key from {@link importPkcs8} or {@link generateSigningKey} (a WebCrypto private key). */
  sign(key: SigningKey, message: Uint8Array): Promise<Uint8Array> | Uint8Array;
  /** Verifies with a key from {@link importSpki}, whichever engine imported it. */
  verify(key: PublicKey, signature: Uint8Array, message: Uint8Array): Promise<boolean> | boolean;
  /** HPKE base mode for the grant (shared/hpke.ts). */
  readonly hpke: HpkeEngine;
}

/** The default engine: WebCrypto (`crypto.subtle`) and `@hpke/core`, in browsers and in Node. */
export const webCryptoHandshake: HandshakeCrypto = {
  name: "webcrypto",
  async sha256(data) {
    return new Uint8Array(await subtle().digest("SHA-256", data as BufferSource));
  },
  async hkdf(ikm, salt, info, length) {
    const s = subtle();
    const base = await s.importKey("raw", ikm as BufferSource, "HKDF", false, ["deriveBits"]);
    return new Uint8Array(
      await s.deriveBits({ name: "HKDF", hash: "SHA-256", salt: salt as BufferSource, info: info as BufferSource }, base, length * 8),
    );
  },
  importSpki: webImportSpki,
  async sign(key, message) {
    return new Uint8Array(await subtle().sign(ALGOS[key.public.type].signParams, key.privateKey, message as BufferSource));
  },
  async verify(key, signature, message) {
    return subtle().verify(ALGOS[key.type].signParams, await webVerifyKey(key), signature as BufferSource, message as BufferSource);
  },
  hpke: webCryptoHpke,
};

let engine: HandshakeCrypto = webCryptoHandshake;

/** Installs the engine for the handshake's primitives from now on (Node entry points install node:crypto's). */
export function useHandshakeCrypto(e: HandshakeCrypto): void {
  engine = e;
}

/** The installed engine (the handshake reaches HPKE through its `hpke`). */
export function handshakeCrypto(): HandshakeCrypto {
  return engine;
}
