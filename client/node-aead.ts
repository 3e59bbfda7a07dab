/**
 * The node:crypto engine for channel traffic keys (shared/channel.ts
 * TrafficKey): the same AES-256-GCM, nonces, AAD and base64url text as the
 * WebCrypto engine, byte for byte (test/client/node-aead.test.ts checks both
 * ways), but synchronous on the calling thread, with Buffer's native base64url
 * codec. Measured in bench/ (issue 7): the per-frame cost is a fraction of
 * WebCrypto's promise and thread-pool hop. Node only; installed by client/node.ts.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from "node:crypto";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import type { TrafficKey } from "../shared/channel.js";

const TAG_BYTES = 16;
const B64URL = /^[A-Za-z0-9_-]*$/;
const UNAUTHORISED = "unknown channel or bad ciphertext";
const EMPTY = new Uint8Array(0);

/** Strict base64url as shared/encoding.ts (alphabet, no padding, canonical trailing bits), on Buffer's native codec. */
function fromText(ciphertext: string): Buffer {
  if (ciphertext.length % 4 === 1 || !B64URL.test(ciphertext)) throw new PsimbolsError(ErrorCode.badRequest, '"ciphertext" expected base64url without padding');
  const ct = Buffer.from(ciphertext, "base64url");
  if (ct.toString("base64url") !== ciphertext) throw new PsimbolsError(ErrorCode.badRequest, '"ciphertext" expected canonical base64url');
  return ct;
}

/** A TrafficKey on node:crypto; `raw` is copied into a KeyObject (the caller may wipe it). */
export function nodeTrafficKey(raw: Uint8Array): TrafficKey {
  if (raw.length !== 32) throw new RangeError(`"raw" expected 32 bytes, got ${raw.length}`);
  const key: KeyObject = createSecretKey(Buffer.from(raw));
  let aadText = "";
  let aadBytes = Buffer.alloc(0);
  // A binding's AAD is its channel id, the same for every frame: encode it once.
  const aadOf = (aad: string): Buffer => (aad === aadText ? aadBytes : ((aadText = aad), (aadBytes = Buffer.from(aad, "utf8"))));
  /** `prefix || ciphertext || tag`, written once into one buffer. */
  const encrypt = (nonce: Uint8Array, aad: string, plaintext: string, prefix: Uint8Array): Buffer => {
    const c = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
    c.setAAD(aadOf(aad));
    const body = c.update(plaintext, "utf8");
    const fin = c.final();
    const out = Buffer.allocUnsafe(prefix.length + body.length + fin.length + TAG_BYTES);
    out.set(prefix, 0);
    body.copy(out, prefix.length);
    fin.copy(out, prefix.length + body.length);
    c.getAuthTag().copy(out, prefix.length + body.length + fin.length);
    return out;
  };
  return {
    seal(nonce, aad, plaintext) {
      return encrypt(nonce, aad, plaintext, EMPTY).toString("base64url");
    },
    sealBinary(nonce, aad, plaintext, header) {
      return encrypt(nonce, aad, plaintext, header);
    },
    open(nonce, aad, ciphertext) {
      const ct = typeof ciphertext === "string" ? fromText(ciphertext) : Buffer.from(ciphertext.buffer, ciphertext.byteOffset, ciphertext.byteLength);
      if (ct.length < TAG_BYTES) throw new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED);
      let pt: Buffer;
      try {
        const d = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
        d.setAAD(aadOf(aad));
        d.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
        pt = Buffer.concat([d.update(ct.subarray(0, ct.length - TAG_BYTES)), d.final()]);
      } catch {
        throw new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED);
      }
      return pt;
    },
  };
}
