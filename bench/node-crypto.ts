/**
 * Prototype: the handshake's signatures, hashes and HKDF on node:crypto
 * (issue 7, "a node:crypto path ... behind the crypto interface"). Swapped in
 * for shared/crypto.js in the bench server by bench/resolve-hooks.ts when
 * `PSIMBOLS_BENCH_CRYPTO=node`; every other export is the original's.
 *
 * Why: each WebCrypto call is a promise, a WebIDL normalisation and a hop to
 * libuv's threadpool and back; a handshake makes about twenty of them, and on
 * a server pinned to one core every hop is two context switches. node:crypto
 * runs the same OpenSSL primitives synchronously on the calling thread.
 * Same inputs, same outputs (Ed25519 is deterministic; a wrong hash or HKDF
 * would break every handshake with a WebCrypto client, which the bench uses).
 * Only Ed25519 identity keys take the fast path; ECDSA and RSA keys use the
 * original WebCrypto code.
 */
import { KeyObject, createHash, createPublicKey, hkdfSync, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import * as real from "../shared/crypto.js";
import { ErrorCode, PsimbolsError, badField } from "../shared/errors.js";
import { b64, fromB64u } from "../shared/encoding.js";

export * from "../shared/crypto.js";

const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const privateObjects = new WeakMap<CryptoKey, KeyObject>();
const publicObjects = new WeakMap<object, KeyObject>();

/** `SHA256:` + base64 of SHA-256(SPKI DER), as the original. */
export async function fingerprint(spki: Uint8Array): Promise<string> {
  return "SHA256:" + b64(createHash("sha256").update(spki).digest());
}

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return createHash("sha256").update(data).digest();
}

export async function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  return new Uint8Array(hkdfSync("sha256", ikm, salt, info, length));
}

/** Ed25519 SPKI through node:crypto (the KeyObject stands where the CryptoKey was); other types as the original. */
export async function importSpki(type: real.KeyType, spki: Uint8Array, field = "public_key"): Promise<real.PublicKey> {
  if (type !== real.KeyType.ed25519) return real.importSpki(type, spki, field);
  let key: KeyObject;
  try {
    // An Ed25519 SPKI is a fixed 12-byte header and the 32-byte key (RFC 8410 §4): import the raw key
    // as JWK, ~9 µs, instead of through OpenSSL 3.0's DER decoder, ~80 µs. Anything else takes the DER path.
    // As shared/crypto.ts, only the canonical encoding is accepted (one key, one fingerprint);
    // for Ed25519 that is exactly this prefix and the key.
    const der = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength);
    if (der.length !== 44 || !der.subarray(0, 12).equals(ED25519_SPKI_PREFIX)) throw new Error("not canonical");
    key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: der.subarray(12).toString("base64url") }, format: "jwk" });
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `"${field}.data" is not a canonical ${type} SubjectPublicKeyInfo`, { cause });
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new PsimbolsError(ErrorCode.badRequest, `"${field}.data" is not a valid ${type} SubjectPublicKeyInfo`);
  }
  const pub = { type, spki, key: key as unknown as CryptoKey, fingerprint: await fingerprint(spki) };
  publicObjects.set(pub.key, key);
  return pub;
}

/** The original's parsing, then {@link importSpki} above (the original calls its own). */
export async function importPublicKey(wire: unknown, field = "public_key"): Promise<real.PublicKey> {
  if (typeof wire !== "object" || wire === null || Array.isArray(wire)) throw badField(field, "object {type, data}", wire);
  const { type, data } = wire as { type?: unknown; data?: unknown };
  if (typeof type !== "string") throw badField(`${field}.type`, "string", type);
  if (!real.isKeyType(type)) {
    throw new PsimbolsError(ErrorCode.unsupported, `${field}.type is not supported; accepted: ${real.keyTypes.join(", ")}`);
  }
  return importSpki(type, fromB64u(data, `${field}.data`, real.MAX_SPKI_BYTES), field);
}

export async function sign(key: real.SigningKey, message: Uint8Array): Promise<Uint8Array> {
  if (key.public.type !== real.KeyType.ed25519) return real.sign(key, message);
  let k = privateObjects.get(key.privateKey);
  if (!k) privateObjects.set(key.privateKey, (k = KeyObject.from(key.privateKey)));
  return nodeSign(null, message, k);
}

export async function verify(key: real.PublicKey, signature: Uint8Array, message: Uint8Array): Promise<boolean> {
  if (key.type !== real.KeyType.ed25519) return real.verify(key, signature, message);
  let k = publicObjects.get(key.key);
  if (!k) publicObjects.set(key.key, (k = KeyObject.from(key.key)));
  try {
    return nodeVerify(null, message, k, signature);
  } catch {
    return false;
  }
}
