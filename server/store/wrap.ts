/**
 * At-rest encryption of channel keys and kept pushes (DESIGN.md §6): a dump of
 * the shared store alone must reveal no channel key and no pushed data. Values
 * are sealed with AES-256-GCM on node:crypto under a 32-byte key-wrapping key
 * from the service's configuration, with additional data naming where the
 * value belongs (a channel key: the channel id; a push: `identity:seq`), so a
 * wrapped value copied onto another record or another push does not open.
 *
 * Wrapped form: `base64url(iv || ciphertext || tag)`, `iv` 12 random bytes,
 * `tag` 16 bytes (NIST SP 800-38D §5.2.1.1, §8.2.2: random 96-bit IVs keep the
 * collision bound below 2^-32 for up to 2^32 wraps under one key). The same
 * bytes as WebCrypto's AES-GCM (each opens what the other sealed,
 * test/server/store.test.ts); node:crypto opens a record synchronously in
 * about 10 µs of CPU, where WebCrypto's promise and thread-pool hop cost
 * about 50 µs, twice per resume on the Redis store (docs/PERFORMANCE.md).
 */
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type KeyObject, createCipheriv, createDecipheriv, createSecretKey } from "node:crypto";
import { b64u, fromB64u, utf8, wipe } from "../../shared/encoding.js";
import { randomBytes } from "../../shared/crypto.js";

/** Length of the key-wrapping key: AES-256. */
export const WRAP_KEY_BYTES = 32;
/** Length of the random GCM IV prepended to each wrapped key. */
export const WRAP_IV_BYTES = 12;
/** Length of the GCM authentication tag appended to each wrapped value. */
export const WRAP_TAG_BYTES = 16;
/** Default bound of {@link KeyWrapper.unwrap}'s input (decoded bytes); channel keys are 32 bytes. */
export const MAX_WRAPPED_BYTES = 4096;
/** Bytes a wrapped value adds to its plaintext: IV and tag. */
export const WRAP_OVERHEAD_BYTES = WRAP_IV_BYTES + WRAP_TAG_BYTES;

/**
 * A wrapped value did not open: wrong key-wrapping key, wrong channel id, or
 * a tampered record. Carries code `unavailable` (the store cannot serve it)
 * and never the wrapped text.
 */
export class KeyUnwrapError extends PsimbolsError {
  constructor(options?: { cause?: unknown }) {
    super(ErrorCode.unavailable, "stored key did not unwrap (wrong key-wrapping key or tampered record)", options);
    this.name = "KeyUnwrapError";
  }
}

/**
 * Parses the configured key-wrapping key: base64url without padding, exactly
 * 32 bytes. The error names the setting and the decoded length, never the text.
 * @param text the configured value.
 * @param setting the setting's name, for the error message.
 * @throws TypeError when `text` is not a string or not base64url.
 * @throws RangeError when it does not decode to 32 bytes.
 */
export function parseWrapKey(text: unknown, setting = "store-wrap-key"): Uint8Array {
  if (typeof text !== "string") throw new TypeError(`setting ${setting}: expected a base64url string, got ${typeof text}`);
  let raw: Uint8Array;
  try {
    raw = fromB64u(text.trim(), setting, 1024);
  } catch {
    throw new TypeError(`setting ${setting}: expected ${WRAP_KEY_BYTES} bytes as base64url without padding`);
  }
  if (raw.length !== WRAP_KEY_BYTES) {
    raw.fill(0);
    throw new RangeError(`setting ${setting}: expected ${WRAP_KEY_BYTES} bytes, got ${raw.length}`);
  }
  return raw;
}

/** Seals and opens channel keys and kept pushes under one key-wrapping key. */
export class KeyWrapper {
  readonly #key: KeyObject;

  private constructor(key: KeyObject) {
    this.#key = key;
  }

  /**
   * Takes a raw key-wrapping key as an AES-256-GCM key (a copy: the caller
   * keeps ownership of `raw`, and may wipe it afterwards).
   * @throws TypeError when `raw` is not a Uint8Array.
   * @throws RangeError when it is not 32 bytes long.
   */
  static async create(raw: Uint8Array): Promise<KeyWrapper> {
    checkWrapKey(raw);
    return new KeyWrapper(createSecretKey(raw));
  }

  /**
   * Seals `plaintext` with `aad` (where it belongs: channel id, `identity:seq`) as additional data.
   * @returns `base64url(iv || ciphertext || tag)`.
   */
  async wrap(plaintext: Uint8Array, aad: string): Promise<string> {
    if (!(plaintext instanceof Uint8Array)) throw new TypeError(`"plaintext" expected Uint8Array, got ${typeof plaintext}`);
    if (typeof aad !== "string") throw new TypeError(`"aad" expected string, got ${typeof aad}`);
    const iv = randomBytes(WRAP_IV_BYTES);
    const c = createCipheriv("aes-256-gcm", this.#key, iv, { authTagLength: WRAP_TAG_BYTES });
    c.setAAD(utf8(aad));
    const body = c.update(plaintext);
    const last = c.final();
    const out = new Uint8Array(WRAP_IV_BYTES + body.length + last.length + WRAP_TAG_BYTES);
    out.set(iv, 0);
    out.set(body, WRAP_IV_BYTES);
    out.set(last, WRAP_IV_BYTES + body.length);
    out.set(c.getAuthTag(), WRAP_IV_BYTES + body.length + last.length);
    return b64u(out);
  }

  /**
   * Opens a value made by {@link KeyWrapper.wrap} under the same `aad`.
   * @param maxBytes largest wrapped value accepted (decoded), default {@link MAX_WRAPPED_BYTES}.
   * @throws KeyUnwrapError when the text is malformed or too long, the tag does not verify
   *   (any flipped bit, another channel id or push, another key-wrapping key).
   */
  async unwrap(wrapped: string, aad: string, maxBytes = MAX_WRAPPED_BYTES): Promise<Uint8Array> {
    if (typeof aad !== "string") throw new TypeError(`"aad" expected string, got ${typeof aad}`);
    let bytes: Uint8Array;
    try {
      bytes = fromB64u(wrapped, "wrapped", maxBytes);
    } catch (cause) {
      throw new KeyUnwrapError({ cause });
    }
    if (bytes.length < WRAP_IV_BYTES + WRAP_TAG_BYTES) throw new KeyUnwrapError();
    const end = bytes.length - WRAP_TAG_BYTES;
    let body: Buffer | undefined;
    let last: Buffer | undefined;
    try {
      const d = createDecipheriv("aes-256-gcm", this.#key, bytes.subarray(0, WRAP_IV_BYTES), { authTagLength: WRAP_TAG_BYTES });
      d.setAAD(utf8(aad));
      d.setAuthTag(bytes.subarray(end));
      body = d.update(bytes.subarray(WRAP_IV_BYTES, end));
      last = d.final(); // throws when the tag does not verify
      const out = new Uint8Array(body.length + last.length);
      out.set(body, 0);
      out.set(last, body.length);
      return out;
    } catch {
      // Which check failed says nothing useful and must not be retried.
      throw new KeyUnwrapError();
    } finally {
      wipe(body, last);
    }
  }
}

/**
 * Checks a raw key-wrapping key's type and length.
 * @throws TypeError, RangeError.
 */
export function checkWrapKey(raw: unknown): asserts raw is Uint8Array {
  if (!(raw instanceof Uint8Array)) throw new TypeError(`"wrapKey" expected Uint8Array, got ${raw === null ? "null" : typeof raw}`);
  if (raw.length !== WRAP_KEY_BYTES) throw new RangeError(`"wrapKey" expected ${WRAP_KEY_BYTES} bytes, got ${raw.length}`);
}
