/**
 * Prototype: the channel's AES-256-GCM on node:crypto instead of WebCrypto
 * (issue 7, "node:crypto for AES-GCM on the Node side, behind the crypto
 * interface"). Same exports and the same bytes on the wire as
 * shared/channel.ts — keys, nonces, AAD and the base64url text are
 * identical, so a WebCrypto peer interoperates — only the engine differs:
 *   - `createCipheriv`/`createDecipheriv` run synchronously on the calling
 *     thread: no threadpool hop, no promise per call inside WebCrypto;
 *   - base64url goes through Buffer's native codec instead of the
 *     `btoa` + string loop + regex of shared/encoding.ts;
 *   - traffic keys are imported once per binding as `KeyObject`s.
 * The bench server swaps it in for shared/channel.js with
 * `--import ./dist/bench/hooks.js` and `PSIMBOLS_BENCH_AEAD=node`; the load
 * generator imports it directly. Kept out of shared/ because shared/ must
 * stay free of Node imports: the lead moves it behind the crypto interface.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from "node:crypto";
import { isUtf8 } from "node:buffer";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { wipe } from "../shared/encoding.js";
import { MAX_SEQ } from "../shared/frames.js";
import { FrameKind, deriveTrafficKeys } from "../shared/channel.js";

// Everything else is the original's; the three functions below shadow theirs.
export * from "../shared/channel.js";

/** One binding's traffic keys as node:crypto secret keys (non-exportable in practice: never exported). */
export interface BindingKeys {
  readonly channel: string;
  readonly c2s: KeyObject;
  readonly s2c: KeyObject;
  /** The channel id as bytes: the AAD of every frame of this binding, encoded once. */
  readonly aad: Buffer;
}

const TAG_BYTES = 16;
const B64URL = /^[A-Za-z0-9_-]*$/;
const aadCache = new Map<string, Buffer>();

function aadOf(channel: string): Buffer {
  // A binding's AAD is fixed; the cache only avoids re-encoding it per frame.
  let a = aadCache.get(channel);
  if (!a) {
    if (aadCache.size > 100_000) aadCache.clear();
    a = Buffer.from(channel, "utf8");
    aadCache.set(channel, a);
  }
  return a;
}

/** Derives a binding's keys (the same HKDF as shared/channel.ts); raw bytes are wiped once imported. */
export async function deriveBinding(channelKey: Uint8Array, channel: string, nonceC: Uint8Array, nonceS: Uint8Array): Promise<BindingKeys> {
  const raw = await deriveTrafficKeys(channelKey, channel, nonceC, nonceS);
  const keys = { channel, c2s: createSecretKey(raw.c2s), s2c: createSecretKey(raw.s2c), aad: Buffer.from(channel, "utf8") };
  wipe(raw.c2s, raw.s2c);
  return keys;
}

/** Writes `kind || 0x000000 || uint64_be(seq)` (PROTOCOL.md §6.3) into a fresh 12-byte IV. */
function nonce(kind: FrameKind, seq: number): Buffer {
  if (!Number.isSafeInteger(seq) || seq < 1 || seq > MAX_SEQ) throw new RangeError(`seq out of range`);
  const n = Buffer.alloc(12);
  n[0] = kind;
  n.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 4);
  n.writeUInt32BE(seq >>> 0, 8);
  return n;
}

function keyOf(key: KeyObject | CryptoKey): KeyObject {
  // A WebCrypto key from shared/channel.ts's deriveBinding would be a CryptoKey; the swap replaces both together.
  if ((key as KeyObject).type !== "secret") throw new TypeError('"key" expected a node:crypto secret KeyObject');
  return key as KeyObject;
}

/** Seals one inner payload; returns base64url(ciphertext || tag), as shared/channel.ts does. */
export async function sealFrame(key: KeyObject | CryptoKey, kind: FrameKind, seq: number, channel: string, plaintext: string): Promise<string> {
  return sealFrameSync(keyOf(key), kind, seq, channel, plaintext);
}

/** Synchronous core of {@link sealFrame}. */
export function sealFrameSync(key: KeyObject, kind: FrameKind, seq: number, channel: string, plaintext: string): string {
  const c = createCipheriv("aes-256-gcm", key, nonce(kind, seq));
  c.setAAD(aadOf(channel));
  const body = c.update(plaintext, "utf8");
  const fin = c.final();
  const tag = c.getAuthTag();
  return (fin.length ? Buffer.concat([body, fin, tag]) : Buffer.concat([body, tag], body.length + TAG_BYTES)).toString("base64url");
}

/**
 * Opens one inner payload.
 * @throws PsimbolsError `unauthorised` when it does not authenticate (also for
 *   malformed base64url, as shared/channel.ts's callers see after decoding),
 *   `bad_request` when the plaintext is not UTF-8.
 */
export async function openFrame(key: KeyObject | CryptoKey, kind: FrameKind, seq: number, channel: string, ciphertext: string): Promise<string> {
  return openFrameSync(keyOf(key), kind, seq, channel, ciphertext);
}

/** Synchronous core of {@link openFrame}. */
export function openFrameSync(key: KeyObject, kind: FrameKind, seq: number, channel: string, ciphertext: string): string {
  // Strict base64url as in shared/encoding.ts: alphabet, no padding, canonical trailing bits.
  if (typeof ciphertext !== "string" || ciphertext.length % 4 === 1 || !B64URL.test(ciphertext)) {
    throw new PsimbolsError(ErrorCode.badRequest, '"ciphertext" expected base64url without padding');
  }
  const ct = Buffer.from(ciphertext, "base64url");
  if (ct.toString("base64url") !== ciphertext) throw new PsimbolsError(ErrorCode.badRequest, '"ciphertext" expected canonical base64url');
  if (ct.length < TAG_BYTES) throw new PsimbolsError(ErrorCode.unauthorised, "unknown channel or bad ciphertext");
  let pt: Buffer;
  try {
    const d = createDecipheriv("aes-256-gcm", key, nonce(kind, seq));
    d.setAAD(aadOf(channel));
    d.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
    const body = d.update(ct.subarray(0, ct.length - TAG_BYTES));
    const fin = d.final();
    pt = fin.length ? Buffer.concat([body, fin]) : body;
  } catch {
    throw new PsimbolsError(ErrorCode.unauthorised, "unknown channel or bad ciphertext");
  }
  if (!isUtf8(pt)) throw new PsimbolsError(ErrorCode.badRequest, "inner payload is not UTF-8");
  return pt.toString("utf8");
}
