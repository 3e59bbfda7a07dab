/**
 * ChaCha20-Poly1305 channel traffic keys (RFC 8439 §2.8, the IETF variant: a
 * 32-byte key, a 96-bit nonce, a 16-byte tag) through libsodium's
 * `crypto_aead_chacha20poly1305_ietf_*`, as the optional dependency
 * `sodium-native` ships it (prebuilt binaries inside the npm package). Where it
 * does not load, node/aead.ts's node:crypto `chacha20-poly1305` gives the same
 * bytes (test/node/chacha.test.ts checks both against RFC 8439 §2.8.2 and
 * against each other); node/engines.ts chooses. Same nonces, AAD and frame
 * layouts as every other channel type (PROTOCOL.md §6.3). Node only.
 *
 * Measured (docs/PERFORMANCE.md, this machine): a 256-byte seal costs about 1.2 µs here,
 * 6.0 µs on node:crypto's ChaCha20-Poly1305 and 4.4 µs on its AES-256-GCM,
 * which set up a new cipher context per frame.
 */
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { KeyWords } from "./key-words.js";
import type { TrafficKey } from "../shared/channel.js";
import type { Ciphertext } from "../shared/frames.js";

/** The part of sodium-native's API used here (it ships no types). */
interface Sodium {
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Uint8Array, nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array): number;
  sodium_memzero(b: Uint8Array): void;
}

/**
 * libsodium, once {@link loadSodium} has found `sodium-native` (an optional
 * dependency: it may be missing, or have no binary for this platform). Loaded
 * on first use by a dynamic ES import, not at module load: no top-level await,
 * so `require()` of the Node entry points works, and a loader hook can still
 * hide it (test/helpers/hide-sodium.ts).
 */
const SODIUM = "sodium-native"; // a name in a variable: it ships no types, and may be absent
let sodium: Sodium | undefined;
let loading: Promise<boolean> | undefined;

/** Loads `sodium-native` once; resolves whether ChaCha20-Poly1305 now runs on libsodium in this process. */
export function loadSodium(): Promise<boolean> {
  loading ??= import(SODIUM).then(
    (m: { default?: unknown }) => ((sodium = (m.default ?? m) as Sodium), true),
    () => false,
  );
  return loading;
}

/** True when ChaCha20-Poly1305 runs on libsodium in this process (false until {@link loadSodium} has resolved). */
export function sodiumLoaded(): boolean {
  return sodium !== undefined;
}

const TAG_BYTES = 16;
const KEY_BYTES = 32;
const B64URL = /^[A-Za-z0-9_-]*$/;
const UNAUTHORISED = "unknown channel or bad ciphertext";

/** Strict base64url as shared/encoding.ts (alphabet, no padding, canonical trailing bits), on Buffer's native codec. */
function fromText(ciphertext: string): Buffer {
  if (ciphertext.length % 4 === 1 || !B64URL.test(ciphertext)) throw new PsimbolsError(ErrorCode.badRequest, '"ciphertext" expected base64url without padding');
  const ct = Buffer.from(ciphertext, "base64url");
  if (ct.toString("base64url") !== ciphertext) throw new PsimbolsError(ErrorCode.badRequest, '"ciphertext" expected canonical base64url');
  return ct;
}

/**
 * Where a key's words are put together for one libsodium call, zeroed right
 * after it (calls are synchronous): the key itself is eight int32 words in its
 * object, as node/aead.ts keeps AES keys (a Buffer of its own, or a view on a
 * shared slab, costs a few hundred bytes per key; a server holds two keys per
 * bound socket, docs/PERFORMANCE.md).
 */
const keyScratch = Buffer.alloc(KEY_BYTES);
const keyWords = new Int32Array(keyScratch.buffer, keyScratch.byteOffset, KEY_BYTES / 4);

/** The AAD (a channel id: short) is written here for each call, no buffer allocated. Bytes (RFC 8439's vector) pass as they are. */
const aadScratch = Buffer.alloc(256);
function aadBytes(aad: string | Uint8Array): Uint8Array {
  if (typeof aad !== "string") return aad;
  const n = Buffer.byteLength(aad, "utf8");
  if (n > aadScratch.length) return Buffer.from(aad, "utf8");
  aadScratch.write(aad, 0, "utf8");
  return aadScratch.subarray(0, n);
}

/** Plaintext of a JSON frame is written here, sealed in place, and leaves as base64url text: calls are synchronous. */
let scratch = Buffer.alloc(4096);

/**
 * A ChaCha20-Poly1305 TrafficKey on libsodium. The 32 key bytes are kept as
 * eight int32 words in the object (`raw` is copied; the caller may wipe it),
 * put together in a scratch buffer only for the one synchronous libsodium call
 * and zeroed with `sodium_memzero` right after. `wipe()` zeroes the words once
 * the binding is over; a wiped key refuses to seal or open.
 */
export class SodiumTrafficKey extends KeyWords implements TrafficKey {
  readonly #s: Sodium;

  constructor(raw: Uint8Array) {
    if (!sodium) throw new PsimbolsError(ErrorCode.unsupported, "sodium-native is not available in this process");
    super(raw, keyWords);
    this.#s = sodium;
  }

  seal(nonce: Uint8Array, aad: string | Uint8Array, plaintext: string): string {
    if (this.wiped) throw new Error("this traffic key was wiped");
    const n = Buffer.byteLength(plaintext, "utf8");
    if (scratch.length < n + TAG_BYTES) scratch = Buffer.alloc(Math.max(n + TAG_BYTES, scratch.length * 2));
    scratch.write(plaintext, 0, "utf8");
    const ct = scratch.subarray(0, n + TAG_BYTES);
    try {
      this.#s.crypto_aead_chacha20poly1305_ietf_encrypt(ct, scratch.subarray(0, n), aadBytes(aad), null, nonce, this.#bytes());
    } finally {
      this.#s.sodium_memzero(keyScratch);
    }
    return ct.toString("base64url");
  }

  sealBinary(nonce: Uint8Array, aad: string | Uint8Array, plaintext: string, header: Uint8Array): Uint8Array {
    if (this.wiped) throw new Error("this traffic key was wiped");
    const n = Buffer.byteLength(plaintext, "utf8");
    const h = header.length;
    // `header || ciphertext || tag` in one buffer: the plaintext is written where its ciphertext goes and sealed in place.
    const out = Buffer.allocUnsafe(h + n + TAG_BYTES);
    out.set(header, 0);
    out.write(plaintext, h, "utf8");
    try {
      this.#s.crypto_aead_chacha20poly1305_ietf_encrypt(out.subarray(h), out.subarray(h, h + n), aadBytes(aad), null, nonce, this.#bytes());
    } finally {
      this.#s.sodium_memzero(keyScratch);
    }
    return out;
  }

  open(nonce: Uint8Array, aad: string | Uint8Array, ciphertext: Ciphertext): Uint8Array {
    const ct = typeof ciphertext === "string" ? fromText(ciphertext) : ciphertext;
    if (ct.length < TAG_BYTES || this.wiped) throw new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED);
    const pt = Buffer.allocUnsafe(ct.length - TAG_BYTES);
    try {
      this.#s.crypto_aead_chacha20poly1305_ietf_decrypt(pt, null, ct, aadBytes(aad), nonce, this.#bytes());
    } catch {
      pt.fill(0);
      throw new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED);
    } finally {
      this.#s.sodium_memzero(keyScratch);
    }
    return pt;
  }

  /** The key bytes, in the scratch buffer: the caller zeroes it once libsodium has used them. */
  #bytes(): Buffer {
    this.writeKey(keyWords);
    return keyScratch;
  }
}
