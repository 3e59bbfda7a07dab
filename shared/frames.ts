/**
 * Frames of psimbols protocol version 1 (docs/PROTOCOL.md §4) and their
 * decoders. Decoding is validation: a decoder returns a typed frame or throws
 * `bad_request` naming the field; nothing past this module sees raw JSON.
 * Receivers ignore fields they do not know (new fields may be added beside).
 */
import { ErrorCode, PsimbolsError, badField, describe, isErrorCode } from "./errors.js";
import { b64u, fromB64u } from "./encoding.js";

export const PROTOCOL_VERSION = 1;
/** Longest `error.message`, in characters (UTF-16 code units), outer or inner. PROTOCOL.md §4. */
export const MAX_ERROR_MESSAGE_CHARS = 1024;
/** Largest WebSocket message either side accepts (bytes). PROTOCOL.md §11. */
export const MAX_FRAME_BYTES = 64 * 1024;
/**
 * Largest inner payload (UTF-8 bytes of its JSON) either side seals: the JSON
 * frame around it (base64url of payload and tag, plus the envelope) then fits
 * MAX_FRAME_BYTES. PROTOCOL.md §11.
 */
export const MAX_INNER_BYTES = Math.floor(((MAX_FRAME_BYTES - 256) * 3) / 4) - 16;
/** Client nonces (hello, resume): at least 16 bytes, at most 64. PROTOCOL.md §4. */
export const MIN_NONCE_BYTES = 16;
export const MAX_NONCE_BYTES = 64;
/** Server nonces (challenge, resumed): exactly 32 bytes; a client refuses any other length. PROTOCOL.md §4. */
export const SERVER_NONCE_BYTES = 32;
/** Largest HPKE `enc` in a challenge: X-Wing's ciphertext, 1088 + 32 bytes (PROTOCOL.md §5.3.1). */
export const MAX_ENC_BYTES = 1120;
/** Bounds on lists and tokens in a hello. */
export const MAX_LIST_ITEMS = 16;
export const MAX_TOKEN_CHARS = 64;
/** Largest signature accepted (RSA-4096 is 512 bytes). */
export const MAX_SIGNATURE_BYTES = 512;
/** Frames per binding and direction for AES-256-GCM (TLS 1.3's AES-GCM record limit, rounded down). PROTOCOL.md §6.4. */
export const MAX_SEQ = 2 ** 24;
/**
 * Largest seq any frame may carry: the 4-byte seq of a binary frame (§4.11)
 * and of the nonce (§6.3). A binding's own cap, {@link maxSeqFor}, may be lower.
 */
export const MAX_WIRE_SEQ = 2 ** 32 - 1;
/** Channel ids are 16 random bytes, base64url: 22 characters. */
export const CHANNEL_ID_CHARS = 22;
export const CHANNEL_ID_BYTES = 16;

/**
 * Features a hello (or a resume) may offer. PROTOCOL.md §4.11.
 * `binary`: request, response and push frames of the binding may travel as
 * WebSocket binary messages in the layout of {@link encodeBinaryHeader}.
 */
export const Feature = {
  binary: "binary",
  /**
   * `server-key-next` (PROTOCOL.md §5.6): the challenge carries `next_key`, the
   * current server key's statement naming its successor, inside the transcript.
   * Chosen only when the server has a next key; never a binding feature.
   */
  serverKeyNext: "server-key-next",
  /**
   * `identity-move` (PROTOCOL.md §5.7): the hello names a new identity key in
   * `move_to` and the proof carries that key's signature too; the service moves
   * the identity's registration and kept pushes to it. A hello feature only.
   */
  identityMove: "identity-move",
} as const;
export type Feature = (typeof Feature)[keyof typeof Feature];
/** Bytes before the ciphertext in a binary channel frame: kind, channel id, seq. */
export const BINARY_HEADER_BYTES = 1 + CHANNEL_ID_BYTES + 4;

/**
 * Channel types (PROTOCOL.md §6.3): AES-256-GCM (NIST SP 800-38D) and
 * ChaCha20-Poly1305 (RFC 8439 §2.8), each with a 32-byte key, a 12-byte nonce
 * and a 16-byte tag. `AES` is the original design's alias for `AES-256-GCM`.
 */
export const ChannelType = { aes256gcm: "AES-256-GCM", chacha20poly1305: "ChaCha20-Poly1305" } as const;
export type ChannelType = (typeof ChannelType)[keyof typeof ChannelType];
export const channelTypes: readonly ChannelType[] = Object.values(ChannelType);
const CHANNEL_TYPE_ALIASES: ReadonlyMap<string, ChannelType> = new Map([
  ["AES", "AES-256-GCM"],
  ["AES-256-GCM", "AES-256-GCM"],
  ["ChaCha20-Poly1305", "ChaCha20-Poly1305"],
]);
/**
 * Frames per binding and direction, by channel type (PROTOCOL.md §6.4).
 * AES-256-GCM: 2^24, TLS 1.3's record limit per key (RFC 8446 §5.5, 2^24.5,
 * rounded down), which keeps the attacker's advantage against the AEAD's
 * confidentiality below about 2^-57 for full-size frames. ChaCha20-Poly1305:
 * RFC 8446 §5.5 sets no practical limit ("the record sequence number would
 * wrap before the safety limit is reached"; RFC 8439 §4 bounds the forgery
 * probability per frame, not the frame count), so the cap is what the 4-byte
 * seq of the wire allows, 2^32 − 1.
 */
export const MAX_SEQ_BY_TYPE: Readonly<Record<ChannelType, number>> = { "AES-256-GCM": MAX_SEQ, "ChaCha20-Poly1305": MAX_WIRE_SEQ };
/** The per-binding frame cap of a channel type. */
export function maxSeqFor(type: ChannelType): number {
  return MAX_SEQ_BY_TYPE[type];
}
/** True for the exact name of a channel type (not an alias): what a challenge, a grant and a store record carry. */
export function isChannelType(name: unknown): name is ChannelType {
  return name === ChannelType.aes256gcm || name === ChannelType.chacha20poly1305;
}
/** The channel type an offered name stands for, or undefined (a Map: no prototype keys such as `toString`). */
export function channelTypeFor(name: string): ChannelType | undefined {
  return CHANNEL_TYPE_ALIASES.get(name);
}

/**
 * KEM types for the ephemeral key: HPKE DHKEM(X25519) or DHKEM(P-256), or the
 * post-quantum hybrid X-Wing (ML-KEM-768 + X25519, HPKE KEM 0x647a; PROTOCOL.md §5.3.1),
 * each with HKDF-SHA256 and AES-256-GCM. PROTOCOL.md §5.3, §5.3.1.
 */
export const KemType = { x25519: "X25519", p256: "P-256", xwing: "X-Wing" } as const;
export type KemType = (typeof KemType)[keyof typeof KemType];
export const kemTypes: readonly KemType[] = Object.values(KemType);

/** Frame kinds (the `type` field). */
export const FrameType = {
  hello: "hello",
  challenge: "challenge",
  proof: "proof",
  established: "established",
  request: "request",
  response: "response",
  push: "push",
  resume: "resume",
  resumed: "resumed",
  error: "error",
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export interface WireKey {
  type: string;
  data: string;
}
export interface Hello {
  type: "hello";
  version: number;
  public_key: WireKey;
  channel_types: string[];
  kem: WireKey;
  nonce: string;
  features: string[];
  /** With `identity-move` only: the identity key to move to (PROTOCOL.md §5.7). */
  move_to?: WireKey;
}
export interface Challenge {
  type: "challenge";
  source: string;
  server_key: WireKey;
  channel_type: ChannelType;
  nonce: string;
  enc: string;
  features: string[];
  signature: string;
  /** With the `server-key-next` feature only (PROTOCOL.md §5.6). */
  next_key?: NextKeyWire;
}
/** The rotation statement `next_key` of a challenge (PROTOCOL.md §5.6). */
export interface NextKeyWire {
  key: WireKey;
  /** RFC 3339 UTC, the exact string that was signed. */
  not_before: string;
  signature: string;
}
export interface Proof {
  type: "proof";
  signature: string;
  /** With `identity-move` only: the new key's signature (PROTOCOL.md §5.7). */
  move_signature?: string;
}
export interface Established {
  type: "established";
  source: string;
  response: string;
}
/**
 * Channel frames carry their ciphertext as base64url text (a JSON frame) or as
 * the raw bytes (a binary frame, §4.11); both open the same way.
 */
export type Ciphertext = string | Uint8Array;
export interface RequestFrame {
  type: "request";
  channel: string;
  seq: number;
  request: Ciphertext;
}
export interface ResponseFrame {
  type: "response";
  /** Absent in a binary frame. */
  source?: string;
  channel: string;
  seq: number;
  response: Ciphertext;
}
export interface PushFrame {
  type: "push";
  /** Absent in a binary frame. */
  source?: string;
  channel: string;
  seq: number;
  push: Ciphertext;
}
export interface Resume {
  type: "resume";
  channel: string;
  nonce: string;
  /** Highest application push `id` the client has seen; the server sends what came after (§7.2). */
  last_push?: number;
  /** Features wanted for this binding (§4.11); absent means none. */
  features?: string[];
}
export interface Resumed {
  type: "resumed";
  source: string;
  channel: string;
  nonce: string;
  /** The features of this binding: a subset of the resume's. */
  features?: string[];
}
export interface ErrorFrame {
  type: "error";
  error: { code: string; message: string };
  seq?: number;
  channel?: string;
  /** With `too_many` from admission by capacity (PROTOCOL.md §11.4): wait at least this many ms before trying again. */
  retry_after_ms?: number;
}

export type ClientFrame = Hello | Proof | RequestFrame | Resume;
export type ServerFrame = Challenge | Established | ResponseFrame | PushFrame | Resumed | ErrorFrame;

/** The decrypted content of `established.response`. PROTOCOL.md §5.4. */
export interface Grant {
  channel: string;
  key: { type: ChannelType; data: string };
  valid_until: string;
  ttl: number;
}

/** Inner request `{op, data}`; inner response `{data}` or `{error}`. PROTOCOL.md §6.2. */
export interface InnerRequest {
  op: string;
  data?: unknown;
}
export type InnerResponse = { data: unknown } | { error: { code: string; message: string } };

/** Operation names reserved for operators (PROTOCOL.md §6.6). */
export const ADMIN_PREFIX = "admin.";

/**
 * Whether `op` is in the reserved `admin.` namespace (PROTOCOL.md §6.6): its
 * first six characters spell `admin.` in any case (`Admin.x`, `ADMIN.x`, and
 * `admın.x`, whose dotless ı upper-cases to I). Op names are otherwise matched
 * exactly; the namespace ignores case so that no spelling an application might
 * case-fold into `admin.` ever reaches it (docs/BACKEND.md §2 "Op names").
 */
export function isAdminOp(op: string): boolean {
  const head = op.slice(0, ADMIN_PREFIX.length);
  return head.toLowerCase() === ADMIN_PREFIX || head.toUpperCase() === "ADMIN.";
}
/** Inner push: a notice or an application message (its `id` is required). PROTOCOL.md §7. */
export type InnerPush = { notice: NoticeKind; valid_until?: string; reason?: string } | { message: unknown; id: number };

/**
 * The inner payload of an application push (PROTOCOL.md §7.2): `{"message":M,"id":N}`,
 * `messageJson` the JSON text of M. The broker seals exactly this text; the test
 * vectors are made with it too.
 */
export function applicationPushText(messageJson: string, id: number): string {
  if (!Number.isSafeInteger(id) || id < 1) throw new RangeError("push id expected a positive integer");
  return `{"message":${messageJson},"id":${id}}`;
}

/** Counters of one broker node, as /metrics exports them and the `admin.channels` operation returns them. */
export interface NodeStats {
  handshakes: { started: number; established: number; rejected: number; forbidden: number; rateLimited: number };
  resumes: { ok: number; rejected: number };
  requests: { ok: number; failed: number; unauthorised: number; tooMany: number };
  notices: number;
  pushes: number;
  storeErrors: number;
}

export const NoticeKind = {
  expiring: "expiring",
  expired: "expired",
  revoked: "revoked",
  replaced: "replaced",
  closed: "closed",
  closing: "closing",
  /** Application pushes fell out of the server's window while the client was away (§7.2). */
  pushesLost: "pushes_lost",
} as const;
export type NoticeKind = (typeof NoticeKind)[keyof typeof NoticeKind];
/**
 * The `reason` of a `revoked` notice sent because the service refused the key
 * at a renewal (PROTOCOL.md §7): the server then answers the renewal with
 * `forbidden` and closes with 4008, and the client reports that.
 */
export const NOTICE_REASON_FORBIDDEN = "forbidden";
const noticeKinds: ReadonlySet<string> = new Set(Object.values(NoticeKind));

// ---- field readers: each throws bad_request naming the field ----

type Obj = Record<string, unknown>;

function obj(x: unknown, field: string): Obj {
  if (typeof x !== "object" || x === null || Array.isArray(x)) throw badField(field, "object", x);
  return x as Obj;
}
function str(o: Obj, k: string, max = 4096, field = k): string {
  const v = o[k];
  if (typeof v !== "string") throw badField(field, "string", v);
  if (v.length > max) throw badField(field, `at most ${max} characters`);
  return v;
}
/**
 * An integer member, taken by its value (PROTOCOL.md §2.1): any JSON number that
 * denotes an integer in min..max passes, whatever its form (`1`, `1.0`, `1e0`).
 */
function int(o: Obj, k: string, min: number, max: number, field = k): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw badField(field, "integer", v);
  if (v < min || v > max) throw badField(field, `integer in ${min}..${max}`);
  return v;
}
function tokens(o: Obj, k: string, field = k): string[] {
  const v = o[k];
  if (!Array.isArray(v)) throw badField(field, "array of strings", v);
  if (v.length > MAX_LIST_ITEMS) throw badField(field, `at most ${MAX_LIST_ITEMS} items`);
  return v.map((t, i) => {
    if (typeof t !== "string") throw badField(`${field}[${i}]`, "string", t);
    if (t.length === 0 || t.length > MAX_TOKEN_CHARS) throw badField(`${field}[${i}]`, `1..${MAX_TOKEN_CHARS} characters`);
    return t;
  });
}
/**
 * Feature names: they are joined with "," in the transcript (PROTOCOL.md §5.2), so no comma, ever.
 * A list names each feature once (PROTOCOL.md §4): the server's choice is then a subset, not a multiset.
 */
const FEATURE = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;
function features(o: Obj): string[] {
  if (o.features === undefined) return [];
  const list = tokens(o, "features");
  list.forEach((f, i) => {
    if (!FEATURE.test(f)) throw badField(`features[${i}]`, "a name of letters, digits and . _ + -");
    if (list.indexOf(f) !== i) throw badField(`features[${i}]`, "a feature not already in the list");
  });
  return list;
}
function wireKey(o: Obj, k: string): WireKey {
  const v = obj(o[k], k);
  return { type: str(v, "type", MAX_TOKEN_CHARS, `${k}.type`), data: str(v, "data", 2048, `${k}.data`) };
}
function b64Field(o: Obj, k: string, min: number, max: number): string {
  const s = str(o, k, Math.ceil((max * 4) / 3) + 4);
  const n = fromB64u(s, k, max).length;
  if (n < min) throw badField(k, min === max ? `${min} bytes` : `at least ${min} bytes`);
  return s;
}
function channelId(o: Obj): string {
  const s = str(o, "channel", CHANNEL_ID_CHARS);
  if (s.length !== CHANNEL_ID_CHARS) throw badField("channel", `${CHANNEL_ID_CHARS}-character channel id`);
  fromB64u(s, "channel");
  return s;
}
const B64URL_TEXT = /^[A-Za-z0-9_-]+$/;
/**
 * A ciphertext field: shape only (alphabet, no padding, at least a tag's worth).
 * It is decoded once, strictly (canonical), by the traffic key that opens it
 * (shared/channel.ts): decoding it here too would double the per-frame cost.
 */
function ciphertext(o: Obj, k: string): string {
  const s = str(o, k, Math.ceil((MAX_FRAME_BYTES * 4) / 3));
  if (s.length < 22 || s.length % 4 === 1 || !B64URL_TEXT.test(s)) throw badField(k, "base64url ciphertext of at least 16 bytes");
  return s;
}

/** RFC 3339 UTC with a `Z`, as `not_before` must be (PROTOCOL.md §5.6). */
export const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
/** Decodes a challenge's `next_key` (shape only; shared/server-key-next.ts verifies it). */
export function decodeNextKey(x: unknown): NextKeyWire {
  const o = obj(x, "next_key");
  const k = obj(o.key, "next_key.key");
  const key = { type: str(k, "type", MAX_TOKEN_CHARS, "next_key.key.type"), data: str(k, "data", 2048, "next_key.key.data") };
  const notBefore = str(o, "not_before", 40, "next_key.not_before");
  if (!RFC3339_UTC.test(notBefore) || Number.isNaN(Date.parse(notBefore))) throw badField("next_key.not_before", "RFC 3339 UTC time");
  const sig = str(o, "signature", Math.ceil((MAX_SIGNATURE_BYTES * 4) / 3) + 4, "next_key.signature");
  if (fromB64u(sig, "next_key.signature", MAX_SIGNATURE_BYTES).length < 1) throw badField("next_key.signature", "at least 1 byte");
  return { key, not_before: notBefore, signature: sig };
}

/** Parses the JSON text of one frame into an object with a string `type`. */
export function parseJson(text: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new PsimbolsError(ErrorCode.badRequest, "frame is not valid JSON");
  }
  const o = obj(v, "frame");
  if (typeof o.type !== "string") throw badField("type", "string", o.type);
  return o;
}

/** Decodes a frame sent by a client. @throws PsimbolsError `bad_request`. */
export function decodeClientFrame(text: string): ClientFrame {
  const o = parseJson(text);
  switch (o.type) {
    case FrameType.hello: {
      const h: Hello = {
        type: "hello",
        version: int(o, "version", 0, 255),
        public_key: wireKey(o, "public_key"),
        channel_types: tokens(o, "channel_types"),
        kem: wireKey(o, "kem"),
        nonce: b64Field(o, "nonce", MIN_NONCE_BYTES, MAX_NONCE_BYTES),
        features: features(o),
      };
      if (o.move_to !== undefined) h.move_to = wireKey(o, "move_to");
      return h;
    }
    case FrameType.proof: {
      const p: Proof = { type: "proof", signature: b64Field(o, "signature", 1, MAX_SIGNATURE_BYTES) };
      if (o.move_signature !== undefined) p.move_signature = b64Field(o, "move_signature", 1, MAX_SIGNATURE_BYTES);
      return p;
    }
    case FrameType.request:
      return { type: "request", channel: channelId(o), seq: int(o, "seq", 1, MAX_WIRE_SEQ), request: ciphertext(o, "request") };
    case FrameType.resume: {
      const r: Resume = { type: "resume", channel: channelId(o), nonce: b64Field(o, "nonce", MIN_NONCE_BYTES, MAX_NONCE_BYTES) };
      if (o.last_push !== undefined) r.last_push = int(o, "last_push", 0, Number.MAX_SAFE_INTEGER);
      if (o.features !== undefined) r.features = features(o);
      return r;
    }
    default:
      throw new PsimbolsError(ErrorCode.badRequest, `"type" is not a client frame type`);
  }
}

/** Decodes a frame sent by a server. @throws PsimbolsError `bad_request`. */
export function decodeServerFrame(text: string): ServerFrame {
  const o = parseJson(text);
  switch (o.type) {
    case FrameType.challenge: {
      const ct = str(o, "channel_type", MAX_TOKEN_CHARS);
      if (!isChannelType(ct)) throw badField("channel_type", channelTypes.join(" or "));
      const c: Challenge = {
        type: "challenge",
        source: str(o, "source", 2048),
        server_key: wireKey(o, "server_key"),
        channel_type: ct,
        nonce: b64Field(o, "nonce", SERVER_NONCE_BYTES, SERVER_NONCE_BYTES),
        enc: b64Field(o, "enc", 1, MAX_ENC_BYTES),
        features: features(o),
        signature: b64Field(o, "signature", 1, MAX_SIGNATURE_BYTES),
      };
      if (o.next_key !== undefined) c.next_key = decodeNextKey(o.next_key);
      return c;
    }
    case FrameType.established:
      return { type: "established", source: str(o, "source", 2048), response: ciphertext(o, "response") };
    case FrameType.response:
      return {
        type: "response",
        source: str(o, "source", 2048),
        channel: channelId(o),
        seq: int(o, "seq", 1, MAX_WIRE_SEQ),
        response: ciphertext(o, "response"),
      };
    case FrameType.push:
      return {
        type: "push",
        source: str(o, "source", 2048),
        channel: channelId(o),
        seq: int(o, "seq", 1, MAX_WIRE_SEQ),
        push: ciphertext(o, "push"),
      };
    case FrameType.resumed: {
      const r: Resumed = {
        type: "resumed",
        source: str(o, "source", 2048),
        channel: channelId(o),
        nonce: b64Field(o, "nonce", SERVER_NONCE_BYTES, SERVER_NONCE_BYTES),
      };
      if (o.features !== undefined) r.features = features(o);
      return r;
    }
    case FrameType.error: {
      const e = obj(o.error, "error");
      const f: ErrorFrame = { type: "error", error: { code: str(e, "code", MAX_TOKEN_CHARS, "error.code"), message: str(e, "message", MAX_ERROR_MESSAGE_CHARS, "error.message") } };
      if (o.seq !== undefined) f.seq = int(o, "seq", 1, MAX_WIRE_SEQ);
      if (o.channel !== undefined) f.channel = str(o, "channel", CHANNEL_ID_CHARS);
      if (o.retry_after_ms !== undefined) f.retry_after_ms = int(o, "retry_after_ms", 0, MAX_RETRY_AFTER_MS);
      return f;
    }
    default:
      throw new PsimbolsError(ErrorCode.badRequest, `"type" is not a server frame type`);
  }
}

// ---- binary channel frames (PROTOCOL.md §4.11) ----

/** Frame types by the byte that opens a binary channel frame: the same number as the frame's nonce kind (§6.3). */
const BINARY_TYPES = [undefined, "request", "response", "push"] as const;

/**
 * The 21-byte header of a binary channel frame:
 * `kind (1) || channel id (16 raw bytes) || uint32_be(seq)`; the ciphertext
 * (with its tag) follows.
 */
export function encodeBinaryHeader(kind: 1 | 2 | 3, channel: Uint8Array, seq: number): Uint8Array {
  if (channel.length !== CHANNEL_ID_BYTES) throw new RangeError(`channel id expected ${CHANNEL_ID_BYTES} bytes`);
  const h = new Uint8Array(BINARY_HEADER_BYTES);
  h[0] = kind;
  h.set(channel, 1);
  // uint32_be(seq), byte by byte: no DataView per frame (docs/PERFORMANCE.md)
  h[17] = seq >>> 24;
  h[18] = (seq >>> 16) & 0xff;
  h[19] = (seq >>> 8) & 0xff;
  h[20] = seq & 0xff;
  return h;
}

/** Splits a binary channel frame into its parts. @throws PsimbolsError `bad_request`. */
function decodeBinary(bytes: Uint8Array, accept: readonly ("request" | "response" | "push")[]): { type: "request" | "response" | "push"; channel: string; seq: number; ct: Uint8Array } {
  if (bytes.length < BINARY_HEADER_BYTES + 16) throw badField("frame", `binary frame of at least ${BINARY_HEADER_BYTES + 16} bytes`);
  const type = BINARY_TYPES[bytes[0]!];
  if (!type || !accept.includes(type)) throw new PsimbolsError(ErrorCode.badRequest, `binary frame kind is not one this side accepts`);
  const seq = (bytes[17]! * 0x1000000 + (bytes[18]! << 16) + (bytes[19]! << 8) + bytes[20]!) >>> 0; // uint32_be, no DataView per frame
  if (seq < 1) throw badField("seq", `integer in 1..${MAX_WIRE_SEQ}`);
  return { type, channel: b64u(bytes.subarray(1, 1 + CHANNEL_ID_BYTES)), seq, ct: bytes.subarray(BINARY_HEADER_BYTES) };
}

/** Decodes a binary frame sent by a client (a request). @throws PsimbolsError `bad_request`. */
export function decodeClientBinary(bytes: Uint8Array): RequestFrame {
  const f = decodeBinary(bytes, ["request"]);
  return { type: "request", channel: f.channel, seq: f.seq, request: f.ct };
}

/** Decodes a binary frame sent by a server (a response or a push). @throws PsimbolsError `bad_request`. */
export function decodeServerBinary(bytes: Uint8Array): ResponseFrame | PushFrame {
  const f = decodeBinary(bytes, ["response", "push"]);
  return f.type === "response" ? { type: "response", channel: f.channel, seq: f.seq, response: f.ct } : { type: "push", channel: f.channel, seq: f.seq, push: f.ct };
}

/** Decodes the grant inside `established.response`. */
export function decodeGrant(text: string): Grant {
  const o = obj(JSONparse(text), "grant");
  const key = obj(o.key, "key");
  const kt = str(key, "type", MAX_TOKEN_CHARS, "key.type");
  if (!isChannelType(kt)) throw badField("key.type", channelTypes.join(" or "));
  const data = str(key, "data", 64, "key.data");
  if (fromB64u(data, "key.data").length !== 32) throw badField("key.data", "32 bytes");
  const validUntil = str(o, "valid_until", 64);
  if (Number.isNaN(Date.parse(validUntil))) throw badField("valid_until", "RFC 3339 time");
  return { channel: channelId(o), key: { type: kt, data }, valid_until: validUntil, ttl: int(o, "ttl", 1, 10 * 365 * 86400) };
}

export function decodeInnerRequest(text: string): InnerRequest {
  const o = obj(JSONparse(text), "request");
  const op = str(o, "op", MAX_TOKEN_CHARS, "op");
  return "data" in o ? { op, data: o.data } : { op };
}

export function decodeInnerResponse(text: string): InnerResponse {
  const o = obj(JSONparse(text), "response");
  if (o.error !== undefined) {
    const e = obj(o.error, "error");
    const code = str(e, "code", MAX_TOKEN_CHARS, "error.code");
    return { error: { code, message: str(e, "message", MAX_ERROR_MESSAGE_CHARS, "error.message") } };
  }
  return { data: o.data };
}

export function decodeInnerPush(text: string): InnerPush {
  const o = obj(JSONparse(text), "push");
  if (o.notice !== undefined) {
    const n = str(o, "notice", MAX_TOKEN_CHARS);
    if (!noticeKinds.has(n)) throw badField("notice", "known notice kind");
    const p: InnerPush = { notice: n as NoticeKind };
    if (typeof o.valid_until === "string") p.valid_until = o.valid_until;
    if (typeof o.reason === "string") p.reason = o.reason;
    return p;
  }
  if (!("message" in o)) throw badField("push", "object with notice or message", describe(o));
  return { message: o.message, id: int(o, "id", 1, Number.MAX_SAFE_INTEGER) };
}

function JSONparse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new PsimbolsError(ErrorCode.badRequest, "inner payload is not valid JSON");
  }
}

/** Builds an outer error frame. `message` must not contain secrets or attacker input. */
/** The longest retry hint a client takes from an error frame (§4.10): one minute. */
export const MAX_RETRY_AFTER_MS = 60_000;

export function errorFrame(code: ErrorCode, message: string, extra?: { seq?: number; channel?: string; retry_after_ms?: number }): ErrorFrame {
  return { type: "error", error: { code, message }, ...extra };
}

/** Maps an error code from the wire onto a known one (unknown codes become `protocol`). */
export function wireErrorCode(code: string): ErrorCode {
  return isErrorCode(code) ? code : ErrorCode.protocol;
}
