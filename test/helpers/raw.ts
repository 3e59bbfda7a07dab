/**
 * A raw protocol peer for tests: sends exact frames over a real WebSocket and
 * reads exact answers, using the shared protocol functions (no client library).
 */
import WebSocket from "ws";
import { type SigningKey, randomBytes } from "../../shared/crypto.js";
import { b64u, fromB64u, fromUtf8 } from "../../shared/encoding.js";
import { createCipheriv } from "node:crypto";
import { type BindingKeys, FrameKind, deriveBinding, deriveTrafficKeys, frameNonce, openFrame, sealBinaryFrame, sealFrame } from "../../shared/channel.js";
import { type Challenge, ChannelType, type Established, type Grant, decodeServerBinary, decodeServerFrame, isChannelType } from "../../shared/frames.js";
import { useNodeCrypto } from "../../node/engines.js";
import { type HelloOptions, answerChallenge, createHello, openGrant } from "../../shared/handshake.js";

export type Frame = Record<string, any>;

export class Raw {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  #waiters: ((f: Frame) => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (d: Buffer, isBinary) => {
      // A binary channel frame (§4.11) is decoded into the fields of its JSON form, plus `binary: true`;
      // one that does not decode is kept as `{type: "undecodable", bytes}`.
      let f: Frame;
      if (!isBinary) f = JSON.parse(d.toString()) as Frame;
      else {
        try {
          f = { ...decodeServerBinary(new Uint8Array(d)), binary: true };
        } catch {
          f = { type: "undecodable", bytes: new Uint8Array(d) };
        }
      }
      const w = this.#waiters.shift();
      if (w) w(f);
      else this.frames.push(f);
    });
    this.closed = new Promise((r) => ws.once("close", (code, reason) => r({ code, reason: reason.toString() })));
  }

  static open(url: string, options: WebSocket.ClientOptions = {}): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, options);
      ws.once("open", () => resolve(new Raw(ws)));
      ws.once("error", reject);
    });
  }

  /** Sends a string as text, bytes as a binary message, anything else as JSON text. */
  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" || frame instanceof Uint8Array ? frame : JSON.stringify(frame));
  }

  /** The next frame, or rejects after `ms` (or when the socket closes). */
  next(ms = 5000): Promise<Frame> {
    const f = this.frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no frame within ${ms} ms`)), ms);
      void this.closed.then((c) => reject(new Error(`socket closed (${c.code}) while waiting for a frame`)));
      this.#waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  }

  /** Resolves true if no frame arrives within `ms`. */
  async silent(ms: number): Promise<boolean> {
    try {
      await this.next(ms);
      return false;
    } catch {
      return true;
    }
  }

  close(): void {
    this.ws.terminate();
  }
}

/** A channel as a raw peer holds it. */
export interface RawChannel {
  grant: Grant;
  channelKey: Uint8Array;
  keys: BindingKeys;
  /** The same traffic keys as raw bytes, for tests that must build frames no engine would seal. */
  rawKeys: { c2s: Uint8Array; s2c: Uint8Array };
  seq: number;
  pushSeq: number;
}

/**
 * The channel types a raw handshake offers unless told otherwise: AES-256-GCM,
 * whatever engine this process has installed (a Node `connect` installs
 * Node's, whose default offer puts ChaCha20-Poly1305 first), so that a test
 * file gets the same type from its first row to its last. The ChaCha20-Poly1305
 * run of the hostile matrix sets its own (test/hostile/matrix-chacha.test.ts).
 */
let offered: readonly string[] = [ChannelType.aes256gcm];
/**
 * `PSIMBOLS_TEST_CHANNEL_TYPE=ChaCha20-Poly1305` runs a whole test file's raw
 * peers on that type, with the Node engines installed (test/properties/
 * channel-types.test.ts reruns the property files so).
 */
const ENV_TYPE = process.env.PSIMBOLS_TEST_CHANNEL_TYPE;
if (ENV_TYPE !== undefined) {
  if (!isChannelType(ENV_TYPE)) throw new Error(`PSIMBOLS_TEST_CHANNEL_TYPE: expected a channel type, got ${JSON.stringify(ENV_TYPE)}`);
  await useNodeCrypto();
  offered = [ENV_TYPE];
}
export function offerChannelTypes(types: readonly string[]): void {
  offered = [...types];
}

/** Runs the full handshake on `raw` as `identity`. */
export async function handshake(raw: Raw, identity: SigningKey, o: HelloOptions = {}): Promise<RawChannel> {
  const h = await createHello(identity, { channelTypes: offered, ...o });
  raw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
  if (c.type !== "challenge") throw new Error(`expected challenge, got ${JSON.stringify(c)}`);
  const { proof, state } = await answerChallenge(h, c, () => {});
  raw.send(proof);
  const e = (await raw.next()) as Established;
  if (e.type !== "established") throw new Error(`expected established, got ${JSON.stringify(e)}`);
  const { grant, channelKey } = await openGrant(state, e);
  return rawChannel(grant, channelKey, h.nonceC, state.nonceS);
}

/** The channel state of a fresh binding (handshake or resume nonces). */
export async function rawChannel(grant: Grant, channelKey: Uint8Array, nonceC: Uint8Array, nonceS: Uint8Array): Promise<RawChannel> {
  const keys = await deriveBinding(channelKey, grant.channel, nonceC, nonceS, grant.key.type);
  const rawKeys = await deriveTrafficKeys(channelKey, grant.channel, nonceC, nonceS);
  return { grant, channelKey, keys, rawKeys, seq: 0, pushSeq: 0 };
}

/** Resumes `ch` on a fresh raw socket (without sending the activating request), asking for `features` if given. */
export async function resume(raw: Raw, ch: RawChannel, features?: string[]): Promise<Frame> {
  const nonceC = randomBytes(32);
  raw.send({ type: "resume", channel: ch.grant.channel, nonce: b64u(nonceC), ...(features ? { features } : {}) });
  const f = await raw.next();
  if (f.type === "resumed") {
    Object.assign(ch, await rawChannel(ch.grant, ch.channelKey, nonceC, fromB64u(f.nonce, "nonce")));
  }
  return f;
}

/** The request frame for `op` (does not send it). */
export async function requestFrame(ch: RawChannel, op: string, data?: unknown, seq = ++ch.seq): Promise<Frame> {
  const request = await sealFrame(ch.keys.c2s, FrameKind.request, seq, ch.grant.channel, JSON.stringify({ op, data }));
  return { type: "request", channel: ch.grant.channel, seq, request };
}

/** The binary request frame for `op` (PROTOCOL.md §4.11; does not send it). */
export async function binaryRequestFrame(ch: RawChannel, op: string, data?: unknown, seq = ++ch.seq): Promise<Uint8Array> {
  return sealBinaryFrame(ch.keys, FrameKind.request, seq, JSON.stringify({ op, data }));
}

/**
 * Seals arbitrary bytes (not a string: tests of non-UTF-8 plaintexts) as the
 * ciphertext || tag of a request under `ch`'s c2s key, with the channel's own
 * AEAD on node:crypto.
 */
export function sealRequestBytes(ch: RawChannel, seq: number, plaintext: Uint8Array): Uint8Array {
  const cipher = ch.grant.key.type === ChannelType.chacha20poly1305 ? "chacha20-poly1305" : "aes-256-gcm";
  const c = createCipheriv(cipher as "aes-256-gcm", ch.rawKeys.c2s, frameNonce(FrameKind.request, seq), { authTagLength: 16 });
  c.setAAD(Buffer.from(ch.grant.channel, "utf8"));
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** Sends a request and returns the decrypted inner response, or the outer error frame. */
export async function call(raw: Raw, ch: RawChannel, op: string, data?: unknown): Promise<Frame> {
  const f = await requestFrame(ch, op, data);
  raw.send(f);
  return readResponse(raw, ch);
}

/** Reads frames until a response or error, opening pushes on the way (returned in `pushes`). */
export async function readResponse(raw: Raw, ch: RawChannel, pushes: Frame[] = []): Promise<Frame> {
  for (;;) {
    const r = await raw.next();
    if (r.type === "push") {
      pushes.push(await openPush(ch, r));
      continue;
    }
    if (r.type === "error") return r;
    return JSON.parse(await openFrame(ch.keys.s2c, FrameKind.response, r.seq, r.channel, r.response));
  }
}

export async function openPush(ch: RawChannel, f: Frame): Promise<Frame> {
  return JSON.parse(await openFrame(ch.keys.s2c, FrameKind.push, f.seq, f.channel, f.push));
}
