/**
 * The node:crypto engine for channel traffic keys (shared/channel.ts
 * TrafficKey): the same AES-256-GCM, nonces, AAD and bytes as the WebCrypto
 * engine (and ChaCha20-Poly1305, RFC 8439, where libsodium is missing:
 * node/chacha.ts), for JSON frames (base64url text) and binary frames alike
 * (test/node/aead.test.ts checks both ways), but synchronous on the
 * calling thread, with Buffer's native base64url codec. Measured in bench/
 * (docs/PERFORMANCE.md): the per-frame cost is a fraction of WebCrypto's promise and
 * thread-pool hop. Node only; installed by node/engines.ts.
 */
import { type CipherGCMTypes, createCipheriv, createDecipheriv } from "node:crypto";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { KeyWords } from "./key-words.js";
import type { TrafficKey } from "../shared/channel.js";
import { type Ciphertext, ChannelType } from "../shared/frames.js";

/** node:crypto's cipher of each channel type. */
const CIPHERS = { "AES-256-GCM": "aes-256-gcm", "ChaCha20-Poly1305": "chacha20-poly1305" } as const satisfies Record<ChannelType, string>;
type Cipher = (typeof CIPHERS)[ChannelType];
// (@types/node overloads createCipheriv per mode; ChaCha20-Poly1305 takes the same AEAD options as GCM, hence the casts below.)

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

/** Where a key's words are put together for one cipher init, zeroed right after (calls are synchronous). */
const scratchWords = new Int32Array(8);
const scratch = new Uint8Array(scratchWords.buffer);

/**
 * A TrafficKey on node:crypto. The 32 key bytes are kept as eight int32 words
 * in the object itself ({@link KeyWords}; `raw` is copied, the caller may wipe
 * it), put together in a scratch buffer only for the moment node:crypto copies
 * them into a cipher. `wipe()` zeroes them once the binding is over; a wiped
 * key refuses to seal or open.
 */
export class NodeTrafficKey extends KeyWords implements TrafficKey {
  readonly #cipher: Cipher;

  /** A key of `type` (default AES-256-GCM). */
  constructor(raw: Uint8Array, type: ChannelType = ChannelType.aes256gcm) {
    super(raw, scratchWords);
    this.#cipher = CIPHERS[type];
    if (!this.#cipher) throw new RangeError(`"type" expected a channel type`);
  }

  seal(nonce: Uint8Array, aad: string | Uint8Array, plaintext: string): string {
    return this.#encrypt(nonce, aad, plaintext, EMPTY).toString("base64url");
  }

  sealBinary(nonce: Uint8Array, aad: string | Uint8Array, plaintext: string, header: Uint8Array): Uint8Array {
    return this.#encrypt(nonce, aad, plaintext, header);
  }

  open(nonce: Uint8Array, aad: string | Uint8Array, ciphertext: Ciphertext): Uint8Array {
    const ct = typeof ciphertext === "string" ? fromText(ciphertext) : Buffer.from(ciphertext.buffer, ciphertext.byteOffset, ciphertext.byteLength);
    if (ct.length < TAG_BYTES || this.wiped) throw new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED);
    let pt: Buffer;
    try {
      let d;
      try {
        d = createDecipheriv(this.#cipher as CipherGCMTypes, this.#bytes(), nonce, { authTagLength: TAG_BYTES });
      } finally {
        scratch.fill(0);
      }
      d.setAAD(typeof aad === "string" ? Buffer.from(aad, "utf8") : aad);
      d.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
      // GCM's and ChaCha20-Poly1305's final() output nothing; it only checks the tag. One buffer of its own, no concat.
      pt = d.update(ct.subarray(0, ct.length - TAG_BYTES));
      try {
        d.final();
      } catch (e) {
        pt.fill(0);
        throw e;
      }
    } catch {
      throw new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED);
    }
    return pt;
  }

  /** `prefix || ciphertext || tag`, written once into one buffer. */
  #encrypt(nonce: Uint8Array, aad: string | Uint8Array, plaintext: string, prefix: Uint8Array): Buffer {
    if (this.wiped) throw new Error("this traffic key was wiped");
    let c;
    try {
      c = createCipheriv(this.#cipher as CipherGCMTypes, this.#bytes(), nonce, { authTagLength: TAG_BYTES });
    } finally {
      scratch.fill(0);
    }
    c.setAAD(typeof aad === "string" ? Buffer.from(aad, "utf8") : aad);
    const body = c.update(plaintext, "utf8");
    const fin = c.final();
    const out = Buffer.allocUnsafe(prefix.length + body.length + fin.length + TAG_BYTES);
    out.set(prefix, 0);
    body.copy(out, prefix.length);
    fin.copy(out, prefix.length + body.length);
    c.getAuthTag().copy(out, prefix.length + body.length + fin.length);
    return out;
  }

  /** The key bytes, in the scratch buffer: the caller zeroes it once node:crypto has them. */
  #bytes(): Uint8Array {
    this.writeKey(scratchWords);
    return scratch;
  }
}

/** The node:crypto factory (shared/channel.ts useTrafficKeys), for either channel type. */
export function nodeTrafficKey(raw: Uint8Array, type: ChannelType = ChannelType.aes256gcm): TrafficKey {
  return new NodeTrafficKey(raw, type);
}
