/**
 * Channel traffic protection (docs/PROTOCOL.md §6).
 *
 * Every binding of a channel to a connection (the handshake, or a resume)
 * derives its own pair of keys from the channel key and both sides' fresh
 * nonces:
 *   key_dir = HKDF-SHA256(ikm = channel key, salt = LP(nonce_c) || LP(nonce_s),
 *                         info = LP(LABEL_dir) || LP(channel id), L = 32)
 * The AES-GCM nonce is `kind (1 byte) || 0x000000 || uint64_be(seq)`. Within a
 * binding, requests use kind 1 with strictly rising `seq` (c2s key); responses
 * use kind 2 with their request's `seq` and pushes kind 3 with their own
 * rising counter (both s2c key). So no (key, nonce) pair repeats: see §6.3.
 */
import { ErrorCode, PsimbolsError } from "./errors.js";
import { b64u, fromB64u, fromUtf8, lp, utf8, wipe } from "./encoding.js";
import { aesKey, hkdf, subtle } from "./crypto.js";
import { MAX_SEQ } from "./frames.js";

export const LABEL_C2S = "psimbols/1 c2s";
export const LABEL_S2C = "psimbols/1 s2c";

/** The first byte of the per-frame nonce. */
export const FrameKind = { request: 1, response: 2, push: 3 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/**
 * One direction of one binding: an AES-256-GCM key behind the one interface
 * the channel code uses. Two engines give the same bytes on the wire: WebCrypto
 * (the default, everywhere, keys non-extractable) and node:crypto
 * (client/node-aead.ts, synchronous and several times cheaper per frame, which
 * the Node entry points install with {@link useTrafficKeys}).
 */
export interface TrafficKey {
  /** Returns base64url(ciphertext || tag). */
  seal(nonce: Uint8Array, aad: string, plaintext: string): Promise<string> | string;
  /** The authenticated plaintext bytes. @throws PsimbolsError `unauthorised` (does not authenticate) or `bad_request` (malformed base64url). */
  open(nonce: Uint8Array, aad: string, ciphertext: string): Promise<Uint8Array> | Uint8Array;
}
export type TrafficKeyFactory = (raw: Uint8Array) => Promise<TrafficKey> | TrafficKey;

/** One binding's traffic keys. */
export interface BindingKeys {
  readonly channel: string;
  readonly c2s: TrafficKey;
  readonly s2c: TrafficKey;
}

const UNAUTHORISED = "unknown channel or bad ciphertext";

/** The WebCrypto engine: a non-extractable AES-GCM CryptoKey. */
export async function webCryptoTrafficKey(raw: Uint8Array): Promise<TrafficKey> {
  const key = await aesKey(raw);
  return {
    async seal(nonce, aad, plaintext) {
      const ct = await subtle().encrypt({ name: "AES-GCM", iv: nonce as BufferSource, additionalData: utf8(aad) as BufferSource }, key, utf8(plaintext) as BufferSource);
      return b64u(new Uint8Array(ct));
    },
    async open(nonce, aad, ciphertext) {
      const ct = fromB64u(ciphertext, "ciphertext");
      let pt: ArrayBuffer;
      try {
        pt = await subtle().decrypt({ name: "AES-GCM", iv: nonce as BufferSource, additionalData: utf8(aad) as BufferSource }, key, ct as BufferSource);
      } catch {
        throw new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED);
      }
      return new Uint8Array(pt);
    },
  };
}

let makeTrafficKey: TrafficKeyFactory = webCryptoTrafficKey;

/** Installs the engine for traffic keys made from now on (Node entry points install node:crypto). */
export function useTrafficKeys(factory: TrafficKeyFactory): void {
  makeTrafficKey = factory;
}

/** A traffic key from 32 raw bytes, on the installed engine. The caller may wipe `raw` afterwards. */
export async function trafficKey(raw: Uint8Array): Promise<TrafficKey> {
  return makeTrafficKey(raw);
}

/** Raw traffic keys of a binding (test vectors use these). */
export async function deriveTrafficKeys(channelKey: Uint8Array, channel: string, nonceC: Uint8Array, nonceS: Uint8Array) {
  const salt = lp(nonceC, nonceS);
  const c2s = await hkdf(channelKey, salt, lp(LABEL_C2S, channel), 32);
  const s2c = await hkdf(channelKey, salt, lp(LABEL_S2C, channel), 32);
  return { c2s, s2c };
}

/** Derives a binding's keys; raw bytes are wiped once imported. */
export async function deriveBinding(channelKey: Uint8Array, channel: string, nonceC: Uint8Array, nonceS: Uint8Array): Promise<BindingKeys> {
  const raw = await deriveTrafficKeys(channelKey, channel, nonceC, nonceS);
  const keys = { channel, c2s: await trafficKey(raw.c2s), s2c: await trafficKey(raw.s2c) };
  wipe(raw.c2s, raw.s2c);
  return keys;
}

/** The 12-byte AES-GCM nonce of a frame. */
export function frameNonce(kind: FrameKind, seq: number): Uint8Array {
  if (!Number.isSafeInteger(seq) || seq < 1 || seq > MAX_SEQ) throw new RangeError(`seq out of range`);
  const n = new Uint8Array(12);
  n[0] = kind;
  new DataView(n.buffer).setBigUint64(4, BigInt(seq), false);
  return n;
}

/** Encrypts one inner payload; returns base64url ciphertext || tag. */
export async function sealFrame(key: TrafficKey, kind: FrameKind, seq: number, channel: string, plaintext: string): Promise<string> {
  return key.seal(frameNonce(kind, seq), channel, plaintext);
}

/**
 * Decrypts one inner payload.
 * @throws PsimbolsError `unauthorised` when it does not authenticate (the same
 *   code as an unknown channel, so a failure tells an outsider nothing more).
 */
export async function openFrame(key: TrafficKey, kind: FrameKind, seq: number, channel: string, ciphertext: string): Promise<string> {
  return innerText(await key.open(frameNonce(kind, seq), channel, ciphertext));
}

/** The authenticated plaintext bytes of a frame (a receiver that must consume the seq before parsing uses this). */
export async function openFrameBytes(key: TrafficKey, kind: FrameKind, seq: number, channel: string, ciphertext: string): Promise<Uint8Array> {
  return key.open(frameNonce(kind, seq), channel, ciphertext);
}

/** Strict UTF-8 of an inner payload. @throws PsimbolsError `bad_request`. */
export function innerText(plaintext: Uint8Array): string {
  try {
    return fromUtf8(plaintext);
  } catch {
    throw new PsimbolsError(ErrorCode.badRequest, "inner payload is not UTF-8");
  }
}
