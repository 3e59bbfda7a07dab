/**
 * Channel traffic protection (docs/PROTOCOL.md §6).
 *
 * Every binding of a channel to a connection (the handshake, or a resume)
 * derives its own pair of keys from the channel key and both sides' fresh
 * nonces:
 *   key_dir = HKDF-SHA256(ikm = channel key, salt = LP(nonce_c) || LP(nonce_s),
 *                         info = LP(LABEL_dir) || LP(channel id), L = 32)
 * The AEAD nonce (AES-256-GCM or ChaCha20-Poly1305, the channel's type) is
 * `kind (1 byte) || 0x000000 || uint64_be(seq)`. Within a
 * binding, requests use kind 1 with strictly rising `seq` (c2s key); responses
 * use kind 2 with their request's `seq` and pushes kind 3 with their own
 * rising counter (both s2c key). So no (key, nonce) pair repeats: see §6.3.
 */
import { ErrorCode, PsimbolsError } from "./errors.js";
import { b64u, concat, fromB64u, fromUtf8, lp, utf8, wipe } from "./encoding.js";
import { aesKey, hkdfEach, subtle } from "./crypto.js";
import { type Ciphertext, ChannelType, MAX_WIRE_SEQ, encodeBinaryHeader, maxSeqFor } from "./frames.js";

export const LABEL_C2S = "psimbols/1 c2s";
export const LABEL_S2C = "psimbols/1 s2c";

/** The first byte of the per-frame nonce. */
export const FrameKind = { request: 1, response: 2, push: 3 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/**
 * One direction of one binding: a key of the channel's type behind the one
 * interface the channel code uses. Every engine gives the same bytes on the
 * wire for a type: WebCrypto (the default, everywhere, keys non-extractable;
 * AES-256-GCM only: WebCrypto has no ChaCha20-Poly1305), node:crypto
 * (node/aead.ts, both types) and libsodium (node/chacha.ts, ChaCha20-Poly1305),
 * which node/engines.ts installs with {@link useTrafficKeys}.
 */
export interface TrafficKey {
  /** Returns base64url(ciphertext || tag), for a JSON frame. */
  seal(nonce: Uint8Array, aad: string, plaintext: string): Promise<string> | string;
  /** Returns `header || ciphertext || tag` in one buffer, for a binary frame (PROTOCOL.md §4.11). */
  sealBinary(nonce: Uint8Array, aad: string, plaintext: string, header: Uint8Array): Promise<Uint8Array> | Uint8Array;
  /**
   * The authenticated plaintext bytes of `ciphertext || tag`, given as base64url
   * text (JSON frame) or bytes (binary frame).
   * @throws PsimbolsError `unauthorised` (does not authenticate) or `bad_request` (malformed base64url).
   */
  open(nonce: Uint8Array, aad: string, ciphertext: Ciphertext): Promise<Uint8Array> | Uint8Array;
  /** Zeroes the key where the engine can (node:crypto's can; a CryptoKey cannot): it then seals and opens nothing. */
  wipe?(): void;
}
export type TrafficKeyFactory = (raw: Uint8Array, type: ChannelType) => Promise<TrafficKey> | TrafficKey;

/** One binding's traffic keys. */
export interface BindingKeys {
  readonly channel: string;
  /** The channel's type: the AEAD of both keys. */
  readonly type: ChannelType;
  /** Frames per direction this binding may seal: {@link maxSeqFor} of its type (§6.4). */
  readonly maxSeq: number;
  /**
   * The channel id's 16 raw bytes, as a binary frame carries them (§4.11):
   * decoded on the first binary frame and kept (an idle binding holds none).
   */
  channelBytes?: Uint8Array;
  readonly c2s: TrafficKey;
  readonly s2c: TrafficKey;
}

const UNAUTHORISED = "unknown channel or bad ciphertext";

/**
 * The WebCrypto engine: a non-extractable AES-GCM CryptoKey.
 * @throws PsimbolsError `unsupported` for ChaCha20-Poly1305 (WebCrypto has none).
 */
export async function webCryptoTrafficKey(raw: Uint8Array, type: ChannelType = ChannelType.aes256gcm): Promise<TrafficKey> {
  if (type !== ChannelType.aes256gcm) throw new PsimbolsError(ErrorCode.unsupported, `this runtime's engine does not run ${type}`);
  const key = await aesKey(raw);
  const encrypt = async (nonce: Uint8Array, aad: string, plaintext: string) =>
    new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv: nonce as BufferSource, additionalData: utf8(aad) as BufferSource }, key, utf8(plaintext) as BufferSource));
  return {
    async seal(nonce, aad, plaintext) {
      return b64u(await encrypt(nonce, aad, plaintext));
    },
    async sealBinary(nonce, aad, plaintext, header) {
      return concat(header, await encrypt(nonce, aad, plaintext));
    },
    async open(nonce, aad, ciphertext) {
      const ct = typeof ciphertext === "string" ? fromB64u(ciphertext, "ciphertext") : ciphertext;
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
let engineTypes: readonly ChannelType[] = [ChannelType.aes256gcm];

/**
 * Installs the engine for traffic keys made from now on (the Node entry points
 * select node:crypto and libsodium: node/engines.ts), with the channel types it
 * runs in this side's order of preference (a client's default offer, §5.1).
 */
export function useTrafficKeys(factory: TrafficKeyFactory, types: readonly ChannelType[] = [ChannelType.aes256gcm]): void {
  if (types.length === 0) throw new RangeError('"types" expected at least one channel type');
  makeTrafficKey = factory;
  engineTypes = [...types];
}

/** The channel types the installed engine runs, preferred first (WebCrypto: AES-256-GCM only). */
export function engineChannelTypes(): readonly ChannelType[] {
  return engineTypes;
}

/** A traffic key of `type` (default AES-256-GCM) from 32 raw bytes, on the installed engine. The caller may wipe `raw` afterwards. */
export async function trafficKey(raw: Uint8Array, type: ChannelType = ChannelType.aes256gcm): Promise<TrafficKey> {
  return makeTrafficKey(raw, type);
}

/** Raw traffic keys of a binding (test vectors use these). */
export async function deriveTrafficKeys(channelKey: Uint8Array, channel: string, nonceC: Uint8Array, nonceS: Uint8Array) {
  const [c2s, s2c] = await hkdfEach(channelKey, lp(nonceC, nonceS), [lp(LABEL_C2S, channel), lp(LABEL_S2C, channel)], 32);
  return { c2s: c2s!, s2c: s2c! };
}

/**
 * Derives a binding's keys for the channel's `type` (the derivation is the same
 * for every type, §6.1); raw bytes are wiped once imported.
 * @throws PsimbolsError `unsupported` when the installed engine does not run `type`.
 */
export async function deriveBinding(channelKey: Uint8Array, channel: string, nonceC: Uint8Array, nonceS: Uint8Array, type: ChannelType): Promise<BindingKeys> {
  const raw = await deriveTrafficKeys(channelKey, channel, nonceC, nonceS);
  try {
    const c2s = await trafficKey(raw.c2s, type);
    let s2c: TrafficKey;
    try {
      s2c = await trafficKey(raw.s2c, type);
    } catch (e) {
      c2s.wipe?.();
      throw e;
    }
    return { channel, type, maxSeq: maxSeqFor(type), c2s, s2c };
  } finally {
    wipe(raw.c2s, raw.s2c);
  }
}

/** The 12-byte AEAD nonce of a frame (the same layout for every channel type, §6.3). */
export function frameNonce(kind: FrameKind, seq: number): Uint8Array {
  if (!Number.isSafeInteger(seq) || seq < 1 || seq > MAX_WIRE_SEQ) throw new RangeError(`seq out of range`);
  // seq < 2^32, so the uint64 is four zero bytes and a uint32 (no BigInt on the per-frame path).
  const n = new Uint8Array(12);
  n[0] = kind;
  n[8] = seq >>> 24;
  n[9] = (seq >>> 16) & 0xff;
  n[10] = (seq >>> 8) & 0xff;
  n[11] = seq & 0xff;
  return n;
}

/** Encrypts one inner payload; returns base64url ciphertext || tag. */
export async function sealFrame(key: TrafficKey, kind: FrameKind, seq: number, channel: string, plaintext: string): Promise<string> {
  return key.seal(frameNonce(kind, seq), channel, plaintext);
}

/**
 * Encrypts one inner payload into a whole binary channel frame (PROTOCOL.md
 * §4.11), under the binding's key for the direction `kind` travels.
 */
export function sealBinaryFrame(keys: BindingKeys, kind: FrameKind, seq: number, plaintext: string): Promise<Uint8Array> | Uint8Array {
  const key = kind === FrameKind.request ? keys.c2s : keys.s2c;
  keys.channelBytes ??= fromB64u(keys.channel, "channel");
  return key.sealBinary(frameNonce(kind, seq), keys.channel, plaintext, encodeBinaryHeader(kind, keys.channelBytes, seq));
}

/**
 * Decrypts one inner payload.
 * @throws PsimbolsError `unauthorised` when it does not authenticate (the same
 *   code as an unknown channel, so a failure tells an outsider nothing more).
 */
export async function openFrame(key: TrafficKey, kind: FrameKind, seq: number, channel: string, ciphertext: Ciphertext): Promise<string> {
  return innerText(await key.open(frameNonce(kind, seq), channel, ciphertext));
}

/** The authenticated plaintext bytes of a frame (a receiver that must consume the seq before parsing uses this). */
export async function openFrameBytes(key: TrafficKey, kind: FrameKind, seq: number, channel: string, ciphertext: Ciphertext): Promise<Uint8Array> {
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
