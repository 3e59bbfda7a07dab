/**
 * The psimbols client connection (docs/PROTOCOL.md §5–§7), browser-safe: only
 * WebCrypto, timers and an injected WebSocket constructor.
 *
 * One socket at a time. Per socket (a `Conn`):
 *   - inbound frames (and the close event) are processed strictly in order on
 *     one promise chain, so crypto awaits never reorder them;
 *   - outbound frames go through another chain, so request `seq` numbers are
 *     allocated, sealed and written in rising order (the server drops any
 *     `seq` not above the last one it accepted, §6.4);
 *   - bindings (channel id → traffic keys) live until the socket dies: the
 *     current one takes new requests, a retired one (after a renewal or a lost
 *     channel) stays only until its in-flight requests are settled.
 * One state setter (`#setState`) emits real transitions only, and one
 * teardown path (`#disconnect`) either schedules a reconnect or closes for good.
 */
import { CloseCode, ErrorCode, PsimbolsError, asProtocol, isTerminalClose } from "../shared/errors.js";
import { b64u, fromB64u, fromUtf8, utf8, wipe } from "../shared/encoding.js";
import { type PublicKey, type SigningKey, randomBytes } from "../shared/crypto.js";
import {
  type Challenge,
  ChannelType,
  type ErrorFrame,
  type Established,
  type InnerPush,
  Feature,
  type KemType,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_FRAME_BYTES,
  MAX_INNER_BYTES,
  MAX_LIST_ITEMS,
  MAX_TOKEN_CHARS,
  type NoticeKind,
  NoticeKind as Notice,
  NOTICE_REASON_FORBIDDEN,
  type PushFrame,
  type ResponseFrame,
  type Resumed,
  type ServerFrame,
  decodeInnerPush,
  decodeInnerResponse,
  decodeServerBinary,
  channelTypeFor,
  channelTypes,
  decodeServerFrame,
  wireErrorCode,
} from "../shared/frames.js";
import { type ClientHello, type ClientProof, answerChallenge, createHello, openGrant } from "../shared/handshake.js";
import { type BindingKeys, FrameKind, deriveBinding, engineChannelTypes, openFrame, sealBinaryFrame, sealFrame } from "../shared/channel.js";
import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay, renewRetryDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";

// ------------------------------------------------------------------ public types

/** Connection states. `state` events carry transitions between them. */
export const ClientState = {
  /** The first socket is opening. */
  connecting: "connecting",
  /** A handshake runs on an open socket and no channel is usable: requests wait. */
  handshaking: "handshaking",
  /** A channel is bound to the socket: requests go out at once. */
  ready: "ready",
  /** A renewal handshake runs while the old channel still serves requests. */
  renewing: "renewing",
  /** The socket dropped: waiting out the backoff, reopening, or resuming. Requests wait. */
  reconnecting: "reconnecting",
  /** Final: closed by the application or by a terminal failure. */
  closed: "closed",
} as const;
export type ClientState = (typeof ClientState)[keyof typeof ClientState];

/**
 * Where the client remembers server keys learnt on first use (trust on first
 * use, as SSH's known_hosts). Keys are the URL as given to {@link connect};
 * values are fingerprints (`SHA256:...`).
 */
export interface KnownServers {
  /** The fingerprint recorded for `url`, or undefined when the server is new. */
  get(url: string): Promise<string | undefined> | string | undefined;
  /**
   * Records `fingerprint` for `url`; called once the first handshake with it
   * succeeded, and when the server switched to the next key recorded for it.
   * Forgets the next key recorded for `url`, if any.
   */
  set(url: string, fingerprint: string): Promise<void> | void;
  /**
   * The next server key recorded for `url` from a verified rotation statement
   * (PROTOCOL.md §5.6). A store without `getNext`/`setNext` cannot follow a
   * server key rotation: its clients get `server_key_mismatch` at the switch.
   */
  getNext?(url: string): Promise<string | undefined> | string | undefined;
  /** Records the next server key of `url`, beside its current one (§5.6). */
  setNext?(url: string, fingerprint: string): Promise<void> | void;
}

/** A {@link KnownServers} in memory: the default, one per client, so reconnects stay pinned. */
export class MemoryKnownServers implements KnownServers {
  readonly #map = new Map<string, string>();
  readonly #next = new Map<string, string>();
  get(url: string): string | undefined {
    return this.#map.get(url);
  }
  set(url: string, fingerprint: string): void {
    this.#map.set(url, fingerprint);
    this.#next.delete(url);
  }
  getNext(url: string): string | undefined {
    return this.#next.get(url);
  }
  setNext(url: string, fingerprint: string): void {
    this.#next.set(url, fingerprint);
  }
}

/**
 * The part of the WHATWG WebSocket API the client uses; the browser's
 * `WebSocket` and the `ws` package's both satisfy it.
 */
export interface WebSocketLike {
  readonly readyState: number;
  // The handler parameters are `any` on purpose: the browser's and ws's event
  // types differ, and a handler property is checked contravariantly, so no
  // narrower type admits both. The client reads only `data`, `code`, `reason`.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /** Where it is "blob" (browsers) the client sets "arraybuffer", so binary frames arrive as bytes; ws delivers Buffers. */
  binaryType?: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
/** A WebSocket constructor: `new (url) => socket`. */
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** A minimal logger (winston's and `console` fit). Messages and metadata never carry secrets. */
export interface Logger {
  debug(message: string, meta?: Record<string, unknown>): void;
  info(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
}

/** Reconnect tuning; see {@link backoffDelay}. */
export interface ReconnectOptions {
  /** Backoff unit in ms. Default 250. */
  baseMs?: number;
  /** Backoff cap in ms. Default 30 000. */
  maxMs?: number;
  /** Consecutive failed reconnects before giving up (state `closed`). Default unlimited. */
  maxAttempts?: number;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The client's identity key. */
  key: SigningKey;
  /**
   * The server's key fingerprint (`SHA256:...`), pinned. Any other key is a
   * hard failure (`server_key_mismatch`) and the client does not reconnect.
   * When absent, {@link ConnectOptions.knownServers} decides. A list is a pin
   * set: any of its keys is accepted (pin the current and the next key of a
   * rotation, PROTOCOL.md §5.6). A next key that the pinned key announces
   * (§5.6) is accepted too, for the life of this client: persist it from the
   * `serverKey` event.
   */
  serverKey?: string | readonly string[];
  /** Trust-on-first-use store, used when `serverKey` is absent. Default: in memory, per client. */
  knownServers?: KnownServers;
  /** WebSocket constructor. Default `globalThis.WebSocket` (psimbols/node passes `ws`'s). */
  WebSocket?: WebSocketCtor;
  /** Default request timeout in ms. Default 30 000. */
  requestTimeoutMs?: number;
  /** Time allowed to open a socket and finish a handshake or resume, in ms. Default 30 000. */
  handshakeTimeoutMs?: number;
  /** Nothing received for this long (ms) → the socket counts as dead. Default 75 000. */
  idleTimeoutMs?: number;
  /** Send a `ping` request when nothing was received for this long (ms). Default 30 000. */
  pingIntervalMs?: number;
  /** Requests held while no channel is bound; beyond it `request` rejects `too_many`. Default 1000. */
  maxQueuedRequests?: number;
  /**
   * Channel types offered, in preference order (PROTOCOL.md §5.1). Default:
   * what this runtime's engine runs, preferred first: `["AES-256-GCM"]` in a
   * browser (WebCrypto); on Node (psimbols/node) ChaCha20-Poly1305 first where
   * libsodium loads, else AES-256-GCM first. A type the engine cannot run is
   * refused with `unsupported`.
   */
  channelTypes?: string[];
  /** Ephemeral KEM of the handshake. Default `X25519`; `X-Wing` for the post-quantum hybrid (PROTOCOL.md §5.3.1), never replaced by another on `unsupported`. */
  kem?: KemType;
  /**
   * Features offered in the hello and in every resume. Default `["binary"]`:
   * channel frames travel as compact binary messages when the server agrees
   * (PROTOCOL.md §4.11). `[]` keeps every frame JSON text.
   */
  features?: string[];
  /**
   * Offer `server-key-next` in every hello and follow the server key rotations
   * the pinned key announces (PROTOCOL.md §5.6). Default true.
   */
  followServerKey?: boolean;
  /** Reconnect after a transient drop (true, false, or tuning). Default true. */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Renew the channel automatically at about 2/3 of its lifetime and on an
   * `expiring` notice. Default true. When false, call {@link Client.renew}.
   */
  renew?: boolean;
  /** Diagnostics. Default: none. */
  logger?: Logger;
}

/** Options of one request. */
export interface RequestOptions {
  /** Reject with `timeout` after this many ms (queued time included). Default: the client's `requestTimeoutMs`. */
  timeoutMs?: number;
}

/** The channel the client holds. */
export interface ChannelInfo {
  /** Channel id (public: it travels in clear in every frame). */
  readonly id: string;
  /** Expiry as sent by the server (RFC 3339). Informational: renewal is scheduled from `ttl`. */
  readonly validUntil: string;
  /** Seconds of life at issue. */
  readonly ttl: number;
  /** Fingerprint of the server key that signed the handshake. */
  readonly serverKey: string;
  /** The channel type agreed in the handshake (PROTOCOL.md §5.1), which every resume keeps. */
  readonly channelType: ChannelType;
}

/** Payload of the `established` event. */
export interface EstablishedEvent extends ChannelInfo {
  /** True when this handshake renewed a channel that was still usable. */
  readonly renewed: boolean;
}

/** Payload of the `notice` event: a server notice, authenticated under the channel's keys. */
export interface NoticeEvent {
  readonly kind: NoticeKind;
  /** The channel the notice is about. */
  readonly channel: string;
  /** False when it concerns a channel the client already left (e.g. the one a renewal replaced). */
  readonly current: boolean;
  readonly validUntil?: string;
  readonly reason?: string;
}

/**
 * Second argument of the `push` event: which push this is. `seq` is the push's
 * per-identity id (PROTOCOL.md §7.2 `id`): the `seq` the server API answered
 * the push with and the `seq` of its `push.delivered` event (docs/BACKEND.md),
 * so an application can match a receipt to the event.
 */
export interface PushInfo {
  readonly seq: number;
  /** The channel it arrived on. */
  readonly channel: string;
}

/** Payload of the `close` event: the client is closed for good. */
export interface CloseEvent {
  readonly code: number;
  readonly reason: string;
  /** The failure that closed it; absent after {@link Client.close}. */
  readonly error?: PsimbolsError;
}

/** Counters since the client was created. */
export interface ClientStats {
  /** Completed handshakes (the first one and every renewal or re-handshake). */
  readonly handshakes: number;
  /** Completed resumes. */
  readonly resumes: number;
  /** Sockets reopened after a drop. */
  readonly reconnects: number;
}

/** Events of a {@link Client} and their arguments. */
export interface ClientEvents {
  /** A state transition (never fired with `next === prev`). */
  state: [next: ClientState, prev: ClientState];
  /** A handshake completed (first connect, renewal, or a new channel after one was lost). */
  established: [info: EstablishedEvent];
  /** A reconnect resumed the channel without a handshake, confirmed by the server: emitted on its first authenticated frame on the resumed binding (§6.5), never for a resume it then refuses. */
  resumed: [info: ChannelInfo];
  /** A server notice (`expiring`, `expired`, `revoked`, `replaced`, `closed`, `closing`). */
  notice: [notice: NoticeEvent];
  /** An application message pushed by the server, and which push it is. */
  push: [message: unknown, info: PushInfo];
  /**
   * The server's key announced a successor (`next` set), or the server switched
   * to the successor this client had recorded (`rotated` true). PROTOCOL.md §5.6.
   */
  serverKey: [event: ServerKeyEvent];
  /** A non-fatal diagnostic (dropped frame, failed renewal, socket drop). */
  error: [error: PsimbolsError];
  /** The client closed for good. */
  close: [event: CloseEvent];
}

/** Payload of the `serverKey` event. */
export interface ServerKeyEvent {
  readonly url: string;
  /** The server key of this handshake. */
  readonly current: string;
  /** The successor it announced, when it did. */
  readonly next?: string;
  /** Earliest time of the switch the statement names (RFC 3339). */
  readonly notBefore?: string;
  /** This handshake switched to a recorded successor (the former key is no longer accepted). */
  readonly rotated: boolean;
  /** The key this client accepted before, when `rotated`. */
  readonly previous?: string;
}

// ------------------------------------------------------------------ constants

const DEFAULTS = {
  requestTimeoutMs: 30_000,
  handshakeTimeoutMs: 30_000,
  idleTimeoutMs: 75_000,
  pingIntervalMs: 30_000,
  maxQueuedRequests: 1000,
} as const;
/** Renewal point, as a fraction of `ttl`, drawn uniformly (PROTOCOL.md §7.1: "about two thirds"). */
const RENEW_AT_MIN = 0.6;
const RENEW_AT_MAX = 0.7;
/** Start rebinding this many frames before the per-binding cap (§6.4: by channel type). */
const RENEW_SEQ_MARGIN = 2 ** 16;
/** Resume nonce length, PROTOCOL.md §6.5. */
const RESUME_NONCE_BYTES = 32;
/** Longest wait for the server's answer to `channel.close` during {@link Client.close}. */
const CLOSE_REQUEST_TIMEOUT_MS = 5_000;
/** Longest wait for the socket's closing handshake in {@link Client.close}. */
const CLOSE_WAIT_MS = 1_000;
/** setTimeout's limit (2^31 − 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const SERVER_KEY_FORMAT = /^SHA256:[A-Za-z0-9+/]{43}$/;
/** Handshake failures after which reconnecting cannot help. */
const TERMINAL_ERRORS: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.serverKeyMismatch,
  ErrorCode.protocol,
  ErrorCode.unsupported,
  ErrorCode.forbidden,
]);
/**
 * Once this client has had a channel, `protocol`, `unsupported` and `forbidden`
 * from a handshake are believed only this many times in a row: they arrive
 * unauthenticated (an outer `error` frame, or a challenge that fails to
 * verify), so one injected frame on `ws://` must not stop a working client
 * for good (SECURITY.md W9). A server key mismatch is always final.
 */
const MAX_HANDSHAKE_REFUSALS = 5;

// ------------------------------------------------------------------ internal types

type Timer = ReturnType<typeof setTimeout>;

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
  settled: boolean;
}

/** A promise with its settlers; pre-marked as handled so internal renewals cannot leak unhandled rejections. */
function deferred<T>(): Deferred<T> {
  let res!: (v: T) => void;
  let rej!: (e: unknown) => void;
  const promise = new Promise<T>((resolve, reject) => ((res = resolve), (rej = reject)));
  promise.catch(() => {});
  const d: Deferred<T> = {
    promise,
    settled: false,
    resolve: (v) => {
      if (!d.settled) (d.settled = true), res(v);
    },
    reject: (e) => {
      if (!d.settled) (d.settled = true), rej(e);
    },
  };
  return d;
}

interface PendingRequest {
  readonly op: string;
  readonly payload: string;
  readonly resolve: (data: unknown) => void;
  readonly reject: (error: PsimbolsError) => void;
  timer: Timer | undefined;
  /** Queued, in flight on a binding, or in the outbound chain (undefined). */
  where: "queued" | { readonly binding: Binding; readonly seq: number } | undefined;
  settled: boolean;
}

interface Binding {
  readonly keys: BindingKeys;
  /** Next request seq: starts at 1, rises by one per frame sent (§6.4). */
  nextSeq: number;
  /** Highest push seq accepted; pushes at or below it are replays and dropped. */
  lastPush: number;
  readonly pending: Map<number, PendingRequest>;
  /** The `binary` feature was agreed for this binding: requests go as binary frames (§4.11). */
  readonly binary: boolean;
}

interface Handshake {
  /** Started while a channel was usable. */
  readonly renewal: boolean;
  /** This handshake moves the identity to this key (§5.7). */
  moveTo?: SigningKey | undefined;
  readonly done: Deferred<void>;
  step: "hello" | "proof";
  /** Ephemeral state: dropped as soon as the grant is opened (forward secrecy, §5.4). */
  hello: ClientHello | undefined;
  proof: ClientProof | undefined;
  serverKey: string | undefined;
  /** The server key was new to the known-servers store (or its recorded next key): record it after success. */
  learnt: boolean;
  /** The known-servers store's next key for this URL when the handshake started. */
  knownNext: string | undefined;
}

interface Conn {
  readonly ws: WebSocketLike;
  open: boolean;
  alive: boolean;
  inbound: Promise<void>;
  outbound: Promise<void>;
  readonly bindings: Map<string, Binding>;
  /** The binding that takes new requests. */
  current: Binding | undefined;
  /** A renewal's proof is out: new requests wait for the new binding (§7.1). */
  gated: boolean;
  /** The server announced `closing`: new requests wait for the next socket. */
  draining: boolean;
  hs: Handshake | undefined;
  /** Our resume nonce while a resume is unanswered. */
  resume: Uint8Array | undefined;
  /** Deadline of the socket opening, handshake or resume. */
  deadline: Timer | undefined;
  /** Retry of a failed fresh handshake on this socket. */
  retry: Timer | undefined;
  liveness: Timer | undefined;
  /** The HTTP status of an upgrade the server refused (ws on Node reports it in the error event; browsers do not). */
  refusedStatus?: number;
  lastRecv: number;
  lastPing: number;
  /** A binding on this socket agreed on binary frames (§4.11): the server may send them here. */
  binary: boolean;
  /**
   * A resume the server answered but has not confirmed yet: the new binding
   * counts, and `resumed` is emitted, on the first authenticated frame on it
   * (§6.5); a refusal of that first request means a new handshake instead.
   */
  unconfirmed: ChannelInfo | undefined;
}

interface Channel {
  readonly id: string;
  /** The channel key: kept for resumes, wiped when the channel is dropped. */
  readonly key: Uint8Array;
  /** The channel type of its handshake: every resume of the channel uses it (§6.5). */
  readonly type: ChannelType;
  readonly validUntil: string;
  readonly ttl: number;
  readonly serverKey: string;
}

interface Resolved {
  readonly key: SigningKey;
  readonly serverKeys: readonly string[] | undefined;
  readonly knownServers: KnownServers;
  readonly followServerKey: boolean;
  readonly WebSocket: WebSocketCtor;
  readonly requestTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly pingIntervalMs: number;
  readonly maxQueuedRequests: number;
  readonly hello: { channelTypes?: readonly string[]; kem?: KemType; features?: readonly string[] };
  readonly reconnect: false | (BackoffOptions & { maxAttempts: number });
  readonly renew: boolean;
  readonly log: Logger;
}

const noop = (): void => {};
const silent: Logger = { debug: noop, info: noop, warn: noop };
const now = (): number => performance.now();

function err(code: ErrorCode, message: string, cause?: unknown): PsimbolsError {
  return new PsimbolsError(code, message, cause === undefined ? undefined : { cause });
}

/** Server-supplied text for an error message: no control characters, at most the frame's bound (PROTOCOL.md §4). */
function clean(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, " ").slice(0, MAX_ERROR_MESSAGE_CHARS);
}

function closeReason(code: number): string {
  for (const c of Object.values(CloseCode)) if (c.code === code) return c.reason;
  return code === 1006 ? "connection dropped" : "unknown close code";
}

// ------------------------------------------------------------------ options

function positive(name: string, v: unknown, fallback: number, max = MAX_TIMER_MS): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > max) {
    throw err(ErrorCode.badRequest, `"options.${name}" expected a number in (0, ${max}], got ${typeof v === "number" ? v : typeof v}`);
  }
  return v;
}

function resolveOptions(url: unknown, o: ConnectOptions): Resolved {
  if (typeof url !== "string" || !/^wss?:\/\/./i.test(url)) throw err(ErrorCode.badRequest, `"url" expected a ws:// or wss:// URL`);
  if (typeof o !== "object" || o === null) throw err(ErrorCode.badRequest, `"options" expected object`);
  const key = o.key as Partial<SigningKey> | undefined;
  if (!key || typeof key !== "object" || !key.public || !key.privateKey) {
    throw err(ErrorCode.badRequest, `"options.key" expected a SigningKey (see generateSigningKey, importPkcs8, or loadKey in psimbols/node)`);
  }
  const pins: readonly unknown[] | undefined = o.serverKey === undefined ? undefined : Array.isArray(o.serverKey) ? o.serverKey : [o.serverKey];
  if (pins !== undefined && (pins.length === 0 || !pins.every((p) => typeof p === "string" && SERVER_KEY_FORMAT.test(p)))) {
    throw err(ErrorCode.badRequest, `"options.serverKey" expected a fingerprint "SHA256:" + 43 base64 characters, or a non-empty list of them`);
  }
  if (o.followServerKey !== undefined && typeof o.followServerKey !== "boolean") throw err(ErrorCode.badRequest, `"options.followServerKey" expected boolean`);
  if (o.knownServers !== undefined && (typeof o.knownServers?.get !== "function" || typeof o.knownServers?.set !== "function")) {
    throw err(ErrorCode.badRequest, `"options.knownServers" expected an object with get(url) and set(url, fingerprint)`);
  }
  const WS = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  if (typeof WS !== "function") {
    throw err(ErrorCode.unsupported, `this runtime has no WebSocket: pass "options.WebSocket" (in Node, import from "psimbols/node")`);
  }
  let reconnect: Resolved["reconnect"] = { ...DEFAULT_BACKOFF, maxAttempts: Infinity };
  if (o.reconnect === false) reconnect = false;
  else if (typeof o.reconnect === "object" && o.reconnect !== null) {
    const r = o.reconnect;
    const baseMs = r.baseMs === undefined ? DEFAULT_BACKOFF.baseMs : positive("reconnect.baseMs", r.baseMs, 0);
    const maxMs = r.maxMs === undefined ? DEFAULT_BACKOFF.maxMs : positive("reconnect.maxMs", r.maxMs, 0);
    let maxAttempts = Infinity;
    if (r.maxAttempts !== undefined) {
      if (!Number.isSafeInteger(r.maxAttempts) || r.maxAttempts < 0) {
        throw err(ErrorCode.badRequest, `"options.reconnect.maxAttempts" expected a non-negative integer`);
      }
      maxAttempts = r.maxAttempts;
    }
    reconnect = { baseMs, maxMs, maxAttempts };
  } else if (o.reconnect !== undefined && o.reconnect !== true) {
    throw err(ErrorCode.badRequest, `"options.reconnect" expected boolean or object`);
  }
  if (o.renew !== undefined && typeof o.renew !== "boolean") throw err(ErrorCode.badRequest, `"options.renew" expected boolean`);
  const maxQueued = o.maxQueuedRequests ?? DEFAULTS.maxQueuedRequests;
  if (!Number.isSafeInteger(maxQueued) || maxQueued < 0) throw err(ErrorCode.badRequest, `"options.maxQueuedRequests" expected a non-negative integer`);
  if (o.channelTypes !== undefined) {
    if (!Array.isArray(o.channelTypes) || o.channelTypes.length === 0 || o.channelTypes.length > MAX_LIST_ITEMS) {
      throw err(ErrorCode.badRequest, `"options.channelTypes" expected 1..${MAX_LIST_ITEMS} channel type names`);
    }
    const runs = engineChannelTypes();
    for (const t of o.channelTypes) {
      const c = typeof t === "string" ? channelTypeFor(t) : undefined;
      if (!c) throw err(ErrorCode.badRequest, `"options.channelTypes" expected names among ${channelTypes.join(", ")}`);
      if (!runs.includes(c)) throw err(ErrorCode.unsupported, `this runtime's engine does not run ${c}; it runs ${runs.join(", ")}`);
    }
  }
  const hello: Resolved["hello"] = {
    ...(o.channelTypes ? { channelTypes: [...o.channelTypes] } : {}),
    ...(o.kem ? { kem: o.kem } : {}),
    features: o.features ?? [Feature.binary],
  };
  return {
    key: key as SigningKey,
    serverKeys: pins as readonly string[] | undefined,
    knownServers: o.knownServers ?? new MemoryKnownServers(),
    followServerKey: o.followServerKey ?? true,
    WebSocket: WS,
    requestTimeoutMs: positive("requestTimeoutMs", o.requestTimeoutMs, DEFAULTS.requestTimeoutMs),
    handshakeTimeoutMs: positive("handshakeTimeoutMs", o.handshakeTimeoutMs, DEFAULTS.handshakeTimeoutMs),
    idleTimeoutMs: positive("idleTimeoutMs", o.idleTimeoutMs, DEFAULTS.idleTimeoutMs),
    pingIntervalMs: positive("pingIntervalMs", o.pingIntervalMs, DEFAULTS.pingIntervalMs),
    maxQueuedRequests: maxQueued,
    hello,
    reconnect,
    renew: o.renew ?? true,
    log: o.logger ?? silent,
  };
}

// ------------------------------------------------------------------ client

/**
 * Opens a channel to the broker at `url` and resolves once it is established.
 *
 * @param url - `ws://` or `wss://` URL (use `wss://` where the identity key's
 *   public half should not travel in clear: the hello carries it).
 * @param options - see {@link ConnectOptions}.
 * @returns a ready {@link Client}.
 * @throws PsimbolsError with the first failure, without retrying:
 *   `server_key_mismatch`, `forbidden`, `unsupported`, `protocol`,
 *   `too_many`, `unavailable`, `timeout`, or `connection_lost` when the socket
 *   could not be opened or dropped; `bad_request` for invalid options.
 */
export async function connect(url: string, options: ConnectOptions): Promise<Client> {
  return Client.connect(url, options);
}

/**
 * A connected psimbols client. Create one with {@link connect}.
 *
 * Requests wait while no channel is bound (reconnecting, handshaking, or a
 * renewal's proof in flight), each within its own timeout. Requests in flight
 * when the socket drops reject with `connection_lost`: the server may or may
 * not have processed them, so retry only idempotent ones.
 */
export class Client {
  /** The broker URL given to {@link connect}. */
  readonly url: string;
  readonly #o: Resolved;
  readonly #events: Emitter<ClientEvents>;
  #state: ClientState = ClientState.connecting;
  #conn: Conn | undefined;
  #channel: Channel | undefined;
  /** Fingerprint of the server key accepted by this client's last handshake. */
  #pinned: string | undefined;
  /** The successor `#pinned` announced (§5.6): accepted in its place. */
  #pinnedNext: string | undefined;
  /** The key this client rotated away from: a node still presenting it has not switched yet (retryable). */
  #retired: string | undefined;
  /** A move asked by {@link Client.moveIdentity}, for the next handshake. */
  #moveTo: SigningKey | undefined;
  /** The identity key: the option's, until {@link Client.moveIdentity} moves it (§5.7). */
  #key: SigningKey;
  readonly #queue: PendingRequest[] = [];
  readonly #stats = { handshakes: 0, resumes: 0, reconnects: 0 };
  /** The trust-on-first-use write in progress, if any. */
  #remembering: Promise<void> = Promise.resolve();
  /** Highest application push id delivered (per identity, across channels and sockets). */
  #lastPushId = 0;
  /**
   * Set by a fresh handshake until the new channel's first application push:
   * that one is delivered whatever its id (§7.2). A new channel starts at the
   * identity's newest id, so its first push is above every id delivered
   * before, unless the store lost its data (a Redis restarted without
   * persistence) and numbers from 1 again: then the ids that follow would
   * all be dropped as already delivered.
   */
  #freshPushIds = false;
  readonly #ready = deferred<void>();
  #everReady = false;
  #closing: Promise<void> | undefined;
  /** close() was called: nothing new starts, everything waiting fails `closed`. */
  #closeCalled = false;
  /** Consecutive reconnects since the channel was last bound. */
  #attempt = 0;
  /** A node's retry hint (`retry_after_ms`, PROTOCOL.md §11.4) for the next reconnect: waited before the backoff's delay. */
  #retryAfter = 0;
  #reconnectTimer: Timer | undefined;
  #renewTimer: Timer | undefined;
  /** Renewal came due while no socket could carry it: run it once bound again. */
  #renewDue = false;
  /** Consecutive failed handshakes (renewals or re-handshakes) since the last success. */
  #renewAttempt = 0;

  private constructor(url: string, o: Resolved) {
    this.url = url;
    this.#o = o;
    this.#key = this.#o.key;
    this.#events = new Emitter<ClientEvents>((e, event) =>
      o.log.warn("an event listener threw", { event: String(event), error: e instanceof Error ? e.name : typeof e }),
    );
  }

  /** See {@link connect}. */
  static async connect(url: string, options: ConnectOptions): Promise<Client> {
    const client = new Client(url, resolveOptions(url, options));
    client.#openSocket();
    await client.#ready.promise;
    return client;
  }

  /** Current state; see {@link ClientState}. */
  get state(): ClientState {
    return this.#state;
  }

  /** The channel currently held (possibly while reconnecting), or undefined. */
  get channel(): ChannelInfo | undefined {
    const c = this.#channel;
    return c && { id: c.id, validUntil: c.validUntil, ttl: c.ttl, serverKey: c.serverKey, channelType: c.type };
  }

  /** Counters since creation. */
  get stats(): ClientStats {
    return { ...this.#stats };
  }

  /**
   * Adds a listener.
   * @returns a function that removes it.
   */
  on<K extends keyof ClientEvents>(event: K, fn: (...args: ClientEvents[K]) => void): () => void {
    return this.#events.on(event, fn);
  }

  /** Removes a listener added with {@link Client.on}. */
  off<K extends keyof ClientEvents>(event: K, fn: (...args: ClientEvents[K]) => void): void {
    this.#events.off(event, fn);
  }

  /**
   * Sends the inner request `{op, data}` over the channel and resolves with the
   * response's `data`.
   *
   * @param op - operation name, 1..64 characters.
   * @param data - any JSON-serialisable value (omitted when undefined).
   * @param options - `timeoutMs` (default: the client's `requestTimeoutMs`).
   * @throws PsimbolsError: the server's inner error code (`not_found`,
   *   `internal`, ...) or outer rejection (`unauthorised`, `too_many`,
   *   `bad_request`); `timeout`; `connection_lost` when the socket dropped
   *   with the request in flight (it may or may not have been processed);
   *   `closed` after {@link Client.close}; `too_many` when the wait queue is
   *   full; `bad_request` for an invalid `op`, unserialisable or oversized `data`.
   * @typeParam T - the type of the answer's `data`, as the application
   *   documents it: asserted, not checked (default `unknown`).
   */
  request<T = unknown>(op: string, data?: unknown, options?: RequestOptions): Promise<T> {
    if (this.#state === ClientState.closed || this.#closeCalled) return Promise.reject(err(ErrorCode.closed, "the client is closed"));
    if (typeof op !== "string" || op.length === 0 || op.length > MAX_TOKEN_CHARS) {
      return Promise.reject(err(ErrorCode.badRequest, `"op" expected a string of 1..${MAX_TOKEN_CHARS} characters`));
    }
    let timeoutMs: number;
    let payload: string;
    try {
      timeoutMs = positive("timeoutMs", options?.timeoutMs, this.#o.requestTimeoutMs);
      payload = JSON.stringify(data === undefined ? { op } : { op, data });
    } catch (e) {
      return Promise.reject(e instanceof PsimbolsError ? e : err(ErrorCode.badRequest, `"data" is not JSON-serialisable`, e));
    }
    if (utf8(payload).length > MAX_INNER_BYTES) {
      return Promise.reject(err(ErrorCode.badRequest, `request too large: at most ${MAX_INNER_BYTES} bytes of JSON`));
    }
    return this.#submit(op, payload, timeoutMs, false) as Promise<T>;
  }

  /**
   * Renews the channel now by a new handshake on the same socket (or joins
   * the handshake already running). Requests keep flowing meanwhile.
   * @throws PsimbolsError `closed` after close; `connection_lost` while no
   *   socket is open (a reconnect resumes the channel instead); otherwise the
   *   error that failed the handshake.
   */
  /** Fingerprint of the identity key this client proves (changed by {@link Client.moveIdentity}). */
  get identity(): string {
    return this.#key.public.fingerprint;
  }

  /**
   * Moves this client's identity to `newKey` in one handshake that proves
   * both keys (PROTOCOL.md §5.7): the service moves the registration (role and
   * comment) and the kept pushes to the new key, and ends the old identity's
   * other channels with a `revoked` notice. From then on the client is
   * `newKey`; keep it, and drop the old key.
   * @throws PsimbolsError `forbidden` (the old or new key is blocked, the old
   *   one is unknown to a closed service, or the new one is registered
   *   already), `unsupported` (the server does not move identities),
   *   `too_many` while another handshake runs; otherwise as {@link renew}.
   */
  async moveIdentity(newKey: SigningKey): Promise<void> {
    if (!newKey || typeof newKey !== "object" || !newKey.public || !newKey.privateKey) throw err(ErrorCode.badRequest, `"newKey" expected a SigningKey`);
    if (newKey.public.fingerprint === this.#key.public.fingerprint) throw err(ErrorCode.badRequest, `"newKey" is the client's identity key already`);
    const conn = this.#conn;
    if (conn?.hs) throw err(ErrorCode.tooMany, "a handshake is running; move the identity once it is done");
    this.#moveTo = newKey;
    try {
      await this.renew();
    } finally {
      this.#moveTo = undefined;
    }
    if (this.#key !== newKey) throw err(ErrorCode.protocol, "the handshake did not move the identity");
  }

  renew(): Promise<void> {
    if (this.#state === ClientState.closed || this.#closeCalled) return Promise.reject(err(ErrorCode.closed, "the client is closed"));
    const conn = this.#conn;
    if (!conn || !conn.open || conn.resume) {
      return Promise.reject(err(ErrorCode.connectionLost, "not connected: the channel is resumed when the socket is back"));
    }
    return this.#startHandshake(conn, conn.current !== undefined);
  }

  /**
   * Closes the channel (request `channel.close`, so the server retires it at
   * once) and the socket, and stops reconnecting. Requests still pending
   * reject with `closed`. Idempotent.
   */
  close(): Promise<void> {
    if (this.#state === ClientState.closed) return Promise.resolve();
    if (!this.#closing) {
      this.#closeCalled = true;
      this.#closing = this.#shutdown();
    }
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    await this.#remembering;
    const conn = this.#conn;
    if (conn && this.#canSend(conn)) {
      const ms = Math.min(this.#o.requestTimeoutMs, CLOSE_REQUEST_TIMEOUT_MS);
      try {
        await this.#submit("channel.close", JSON.stringify({ op: "channel.close" }), ms, true);
      } catch (e) {
        this.#o.log.debug("channel.close failed; closing the socket anyway", { code: e instanceof PsimbolsError ? e.code : "unknown" });
      }
    }
    const ws = this.#conn?.ws;
    this.#disconnect(CloseCode.normal.code, "closed by client", { reconnect: false });
    // wait for the closing handshake, but never for long (a dead peer never answers)
    if (ws && ws.readyState !== 3) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_WAIT_MS);
        ws.onclose = () => (clearTimeout(timer), resolve());
      });
    }
  }

  // ---------------------------------------------------------------- state

  #setState(next: ClientState): void {
    const prev = this.#state;
    if (next === prev || prev === ClientState.closed) return;
    this.#state = next;
    this.#o.log.debug("state", { next, prev });
    this.#events.emit("state", next, prev);
  }

  #emitError(e: PsimbolsError): void {
    this.#o.log.warn(e.message, { code: e.code });
    this.#events.emit("error", e);
  }

  // ---------------------------------------------------------------- sockets

  #openSocket(): void {
    this.#reconnectTimer = undefined;
    let ws: WebSocketLike;
    try {
      ws = new this.#o.WebSocket(this.url);
      // Browsers deliver binary frames as Blobs by default; ws as Buffers (already bytes).
      if (ws.binaryType === "blob") ws.binaryType = "arraybuffer";
    } catch (cause) {
      const e = err(ErrorCode.connectionLost, "cannot open a WebSocket to the server URL", cause);
      if (!this.#everReady) return this.#disconnect(CloseCode.normal.code, "connect failed", { reconnect: false, error: e });
      this.#emitError(e);
      return this.#scheduleReconnect();
    }
    const conn: Conn = {
      ws,
      open: false,
      alive: true,
      inbound: Promise.resolve(),
      outbound: Promise.resolve(),
      bindings: new Map(),
      current: undefined,
      gated: false,
      draining: false,
      hs: undefined,
      resume: undefined,
      deadline: undefined,
      retry: undefined,
      liveness: undefined,
      lastRecv: now(),
      lastPing: 0,
      binary: false,
      unconfirmed: undefined,
    };
    this.#conn = conn;
    ws.onopen = () => this.#onOpen(conn);
    ws.onmessage = (ev: { data?: unknown }) => this.#onMessage(conn, ev.data);
    ws.onclose = (ev: { code?: unknown }) => {
      const code = typeof ev.code === "number" ? ev.code : 1006;
      this.#inbound(conn, () => this.#onSocketClose(code, conn.refusedStatus));
    };
    ws.onerror = (ev: { message?: unknown }) => {
      // ws (Node) names a refused upgrade "Unexpected server response: 429"; a close event follows.
      const m = typeof ev?.message === "string" ? /^Unexpected server response: (\d{3})$/.exec(ev.message) : null;
      if (m) conn.refusedStatus = Number(m[1]);
      this.#o.log.debug("socket error");
    };
    conn.deadline = setTimeout(() => this.#onDeadline(conn, "opening the WebSocket"), this.#o.handshakeTimeoutMs);
  }

  #onOpen(conn: Conn): void {
    if (conn !== this.#conn) return;
    conn.open = true;
    clearTimeout(conn.deadline);
    conn.deadline = undefined;
    if (this.#everReady) this.#stats.reconnects++;
    conn.lastRecv = now();
    this.#armLiveness(conn);
    if (this.#channel) this.#sendResume(conn, this.#channel);
    else void this.#startHandshake(conn, false);
  }

  #onMessage(conn: Conn, data: unknown): void {
    if (conn !== this.#conn) return;
    conn.lastRecv = now();
    if (typeof data !== "string") {
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : undefined;
      // Binary frames only on a socket whose binding agreed on them (§4.11).
      if (!bytes || !conn.binary) {
        return this.#inbound(conn, () => this.#drop(conn, CloseCode.unsupportedData, err(ErrorCode.protocol, "the server sent a binary frame")));
      }
      if (bytes.length > MAX_FRAME_BYTES) {
        return this.#inbound(conn, () => this.#drop(conn, CloseCode.tooBig, err(ErrorCode.protocol, "the server sent a frame over the size limit")));
      }
      return this.#inbound(conn, () => this.#onBinary(conn, bytes));
    }
    if (data.length > MAX_FRAME_BYTES) {
      // UTF-16 length ≤ UTF-8 length, so this never rejects a frame within the limit
      return this.#inbound(conn, () => this.#drop(conn, CloseCode.tooBig, err(ErrorCode.protocol, "the server sent a frame over the size limit")));
    }
    this.#inbound(conn, () => this.#onFrame(conn, data));
  }

  /** Runs `task` after every earlier inbound event of `conn`, unless the socket was replaced meanwhile. */
  #inbound(conn: Conn, task: () => void | Promise<void>): void {
    conn.inbound = conn.inbound
      .then(() => (conn === this.#conn ? task() : undefined))
      .catch((e: unknown) => this.#drop(conn, CloseCode.badRequest, asProtocol(e, "internal error while processing a frame")));
  }

  /** Runs `task` after every earlier outbound task of `conn` (keeps `seq` order on the wire). */
  #outbound(conn: Conn, task: () => void | Promise<void>): void {
    conn.outbound = conn.outbound
      .then(task)
      .catch((e: unknown) => this.#drop(conn, CloseCode.badRequest, asProtocol(e, "internal error while sending a frame")));
  }

  #write(conn: Conn, data: string | Uint8Array): void {
    if (!conn.alive) return;
    try {
      conn.ws.send(data);
    } catch (cause) {
      this.#drop(conn, CloseCode.goingAway, err(ErrorCode.connectionLost, "the socket refused a frame", cause));
    }
  }

  #onSocketClose(code: number, refusedStatus?: number): void {
    const reason = closeReason(code);
    // An upgrade refused with 429 is the server's limit on connections or handshakes from this address (PROTOCOL.md §11), not a broker that is down.
    const e =
      refusedStatus === 429
        ? err(ErrorCode.tooMany, "the server refused the WebSocket upgrade (HTTP 429): too many connections or handshakes from this address")
        : err(ErrorCode.connectionLost, refusedStatus ? `the server refused the WebSocket upgrade (HTTP ${refusedStatus})` : `the connection closed (${code} ${reason})`);
    this.#o.log.info("socket closed", { code, reason });
    // Close codes are not authenticated: once this client has had a channel, a code alone
    // (an injected 4004/4005 on ws://) never ends it. `replaced`/`revoked` end it only as
    // authenticated notices, which a resume also delivers (PROTOCOL.md §6.5 step 5).
    const terminal = isTerminalClose(code) && !this.#everReady;
    if (!terminal) this.#emitError(e);
    this.#disconnect(code, reason, { reconnect: !terminal, error: e });
  }

  #onDeadline(conn: Conn, what: string): void {
    if (conn !== this.#conn) return;
    this.#drop(conn, CloseCode.handshakeTimeout, err(ErrorCode.timeout, `no answer from the server while ${what}`));
  }

  /**
   * Abandons `conn` because of `e`: closes the socket with `close` and
   * reconnects, unless `forceTerminal` or no channel was ever established
   * (the first connect's failures are final).
   */
  #drop(conn: Conn, close: CloseCode, e: PsimbolsError, forceTerminal = false): void {
    if (conn !== this.#conn) return;
    const terminal = forceTerminal || !this.#everReady;
    if (!terminal) this.#emitError(e);
    this.#disconnect(close.code, close.reason, { reconnect: !terminal, error: e });
  }

  /**
   * The one teardown path: retires the current socket (rejecting its
   * in-flight requests), then schedules a reconnect or closes for good.
   */
  #disconnect(code: number, reason: string, opts: { reconnect: boolean; error?: PsimbolsError }): void {
    const conn = this.#conn;
    if (conn) {
      this.#conn = undefined;
      conn.alive = false;
      clearTimeout(conn.deadline);
      clearTimeout(conn.retry);
      clearTimeout(conn.liveness);
      const ws = conn.ws;
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = noop; // ws (Node) throws on an 'error' event without a listener, e.g. closing while connecting
      if (ws.readyState === 0 || ws.readyState === 1) {
        try {
          ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
        } catch {
          /* already closing */
        }
      }
      // Made only when something waits for it (an idle client's drop, as in a storm, fails nothing).
      let lost: PsimbolsError | undefined;
      const lostError = (): PsimbolsError =>
        (lost ??= this.#closeCalled
          ? err(ErrorCode.closed, "the client was closed before the response arrived")
          : err(ErrorCode.connectionLost, "the connection was lost before the response arrived; the request may or may not have been processed"));
      for (const b of conn.bindings.values()) {
        for (const req of b.pending.values()) this.#finish(req, lostError());
        b.pending.clear();
      }
      conn.bindings.clear();
      conn.current = undefined;
      const hs = conn.hs;
      conn.hs = undefined;
      if (hs) hs.done.reject(opts.error ?? lostError());
      // A renewal's proof was out but its answer never came: the server may have replaced the old
      // channel already, so resuming it could meet `replaced` (terminal). Start afresh instead.
      if (hs?.renewal && hs.step === "proof") this.#dropChannel();
    }
    if (opts.reconnect && this.#o.reconnect && this.#everReady && !this.#closeCalled && this.#state !== ClientState.closed) {
      this.#scheduleReconnect();
    } else {
      this.#finalise(code, reason, opts.error);
    }
  }

  #scheduleReconnect(): void {
    const r = this.#o.reconnect;
    if (!r) return this.#finalise(1006, "connection dropped", err(ErrorCode.connectionLost, "the connection was lost"));
    if (this.#attempt >= r.maxAttempts) {
      return this.#finalise(1006, "reconnect gave up", err(ErrorCode.connectionLost, `gave up after ${this.#attempt} reconnect attempts`));
    }
    const delay = this.#retryAfter + backoffDelay(this.#attempt, Math.random(), r);
    this.#retryAfter = 0;
    this.#attempt++;
    this.#setState(ClientState.reconnecting);
    this.#o.log.info("reconnecting", { attempt: this.#attempt, delayMs: delay });
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#openSocket(), delay);
  }

  /** Final state: everything waiting fails, keys are wiped, `close` fires once. */
  #finalise(code: number, reason: string, error: PsimbolsError | undefined): void {
    if (this.#state === ClientState.closed) return;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#renewTimer);
    this.#reconnectTimer = this.#renewTimer = undefined;
    const e = this.#closeCalled ? err(ErrorCode.closed, "the client was closed") : err(ErrorCode.connectionLost, "the client closed: " + reason);
    for (const req of this.#queue.splice(0)) this.#finish(req, e);
    this.#dropChannel();
    this.#setState(ClientState.closed);
    this.#ready.reject(error ?? err(ErrorCode.connectionLost, "the connection closed before a channel was established"));
    this.#events.emit("close", error ? { code, reason, error } : { code, reason });
  }

  // ---------------------------------------------------------------- liveness

  /** One timer for both checks: idle (nothing received → dead) and ping (keep traffic flowing). */
  #armLiveness(conn: Conn): void {
    clearTimeout(conn.liveness);
    const idleAt = conn.lastRecv + this.#o.idleTimeoutMs;
    const pingAt = Math.max(conn.lastRecv, conn.lastPing) + this.#o.pingIntervalMs;
    conn.liveness = setTimeout(() => this.#checkLiveness(conn), Math.max(0, Math.min(idleAt, pingAt) - now()));
  }

  #checkLiveness(conn: Conn): void {
    if (conn !== this.#conn) return;
    const t = now();
    if (t - conn.lastRecv >= this.#o.idleTimeoutMs) {
      return this.#drop(conn, CloseCode.idle, err(ErrorCode.connectionLost, `nothing received for ${this.#o.idleTimeoutMs} ms`));
    }
    if (t - Math.max(conn.lastRecv, conn.lastPing) >= this.#o.pingIntervalMs) {
      conn.lastPing = t;
      // a browser cannot see WebSocket pings, so liveness rides on a request
      if (this.#canSend(conn)) this.#ping();
    }
    this.#armLiveness(conn);
  }

  #ping(): void {
    this.#submit("ping", JSON.stringify({ op: "ping" }), this.#o.requestTimeoutMs, true).catch((e: unknown) =>
      this.#o.log.debug("ping failed", { code: e instanceof PsimbolsError ? e.code : "unknown" }),
    );
  }

  // ---------------------------------------------------------------- frames

  async #onFrame(conn: Conn, text: string): Promise<void> {
    let f: ServerFrame;
    try {
      f = decodeServerFrame(text);
    } catch (e) {
      return this.#drop(conn, CloseCode.badRequest, asProtocol(e, "the server sent a malformed frame"));
    }
    switch (f.type) {
      case "challenge":
        return this.#onChallenge(conn, f);
      case "established":
        return this.#onEstablished(conn, f);
      case "response":
        return this.#onResponse(conn, f);
      case "push":
        return this.#onPush(conn, f);
      case "resumed":
        return this.#onResumed(conn, f);
      case "error":
        return this.#onErrorFrame(conn, f);
    }
  }

  async #onBinary(conn: Conn, bytes: Uint8Array): Promise<void> {
    let f: ResponseFrame | PushFrame;
    try {
      f = decodeServerBinary(bytes);
    } catch (e) {
      return this.#drop(conn, CloseCode.badRequest, asProtocol(e, "the server sent a malformed frame"));
    }
    return f.type === "response" ? this.#onResponse(conn, f) : this.#onPush(conn, f);
  }

  #unexpected(conn: Conn, what: string): void {
    this.#drop(conn, CloseCode.badRequest, err(ErrorCode.protocol, `the server sent an unexpected ${what} frame`));
  }

  // ---------------------------------------------------------------- handshake (§5)

  /** Starts a handshake on `conn`, or joins the one running. Resolves when established. */
  #startHandshake(conn: Conn, renewal: boolean): Promise<void> {
    if (conn.hs) return conn.hs.done.promise;
    const hs: Handshake = { renewal, done: deferred(), step: "hello", hello: undefined, proof: undefined, serverKey: undefined, learnt: false, knownNext: undefined };
    conn.hs = hs;
    clearTimeout(conn.retry);
    conn.retry = undefined;
    this.#setState(renewal ? ClientState.renewing : ClientState.handshaking);
    clearTimeout(conn.deadline);
    conn.deadline = setTimeout(() => this.#onDeadline(conn, "handshaking"), this.#o.handshakeTimeoutMs);
    // server-key-next goes in the hello only, never in a resume (it is no binding feature)
    const base = this.#o.hello.features ?? [];
    const hello = this.#o.followServerKey && !base.includes(Feature.serverKeyNext) ? { ...this.#o.hello, features: [...base, Feature.serverKeyNext] } : this.#o.hello;
    hs.moveTo = this.#moveTo;
    createHello(this.#key, hs.moveTo ? { ...hello, moveTo: hs.moveTo } : hello).then(
      (h) => {
        if (conn.hs !== hs || !conn.alive) return;
        hs.hello = h;
        this.#outbound(conn, () => this.#write(conn, fromUtf8(h.bytes)));
      },
      (e: unknown) => this.#handshakeFailed(conn, hs, e instanceof PsimbolsError ? e : err(ErrorCode.unsupported, "cannot create the hello", e)),
    );
    return hs.done.promise;
  }

  async #onChallenge(conn: Conn, f: Challenge): Promise<void> {
    const hs = conn.hs;
    if (!hs || hs.step !== "hello" || !hs.hello) return this.#unexpected(conn, "challenge");
    let answer: Awaited<ReturnType<typeof answerChallenge>>;
    try {
      answer = await answerChallenge(hs.hello, f, (k) => this.#checkServerKey(hs, k));
    } catch (e) {
      return this.#handshakeFailed(conn, hs, asProtocol(e, "the challenge is invalid"));
    }
    if (conn.hs !== hs || !conn.alive) return;
    hs.step = "proof";
    hs.proof = answer.state;
    const proof = JSON.stringify(answer.proof);
    // From the proof on, the server may retire the old channel: requests after
    // it wait for the new binding. Gating inside the outbound chain keeps every
    // request already queued there on the old binding, before the proof.
    this.#outbound(conn, () => {
      if (conn.hs !== hs) return;
      conn.gated = true;
      this.#write(conn, proof);
    });
  }

  /**
   * Server key check (§5.3, §5.6): the pinned fingerprints, else the
   * known-servers store, else trust on first use; in each case the next key
   * that the accepted key announced is accepted too.
   */
  async #checkServerKey(hs: Handshake, key: PublicKey): Promise<void> {
    const got = key.fingerprint;
    const mismatch = (expected: string, where: string) =>
      got === this.#retired
        ? // a node of the service has not switched to the new key yet: refuse it, and try again later
          err(ErrorCode.unavailable, `the server at ${this.url} presented the server key this client rotated away from (${got}); not connecting to it`)
        : err(
            ErrorCode.serverKeyMismatch,
            `SERVER KEY MISMATCH for ${this.url}: expected ${expected} (${where}), but the server presented ${got}. ` +
              `Someone may be intercepting the connection, or the server key was replaced. Not connecting; ` +
              `if the new key is legitimate, update ${where}.`,
          );
    const next = this.#pinnedNext;
    if (this.#o.serverKeys !== undefined) {
      // #pinned: a successor this client followed from a pinned key (it is not in the option's list)
      if (!this.#o.serverKeys.includes(got) && got !== next && got !== this.#pinned) throw mismatch(this.#o.serverKeys.join(" or "), "the serverKey option");
    } else {
      let known: string | undefined;
      let knownNext: string | undefined;
      try {
        known = await this.#o.knownServers.get(this.url);
        knownNext = this.#o.followServerKey ? await this.#o.knownServers.getNext?.(this.url) : undefined;
      } catch (cause) {
        throw err(ErrorCode.unavailable, "the known-servers store could not be read", cause);
      }
      if (known !== undefined && got !== known && got !== knownNext && got !== next) throw mismatch(known, "the known-servers store");
      if (this.#pinned !== undefined && got !== this.#pinned && got !== next && got !== knownNext) throw mismatch(this.#pinned, "the key this client accepted earlier");
      hs.learnt = known !== got;
      hs.knownNext = knownNext;
    }
    hs.serverKey = got;
  }

  async #onEstablished(conn: Conn, f: Established): Promise<void> {
    const hs = conn.hs;
    if (!hs || hs.step !== "proof" || !hs.proof || !hs.hello || !hs.serverKey) return this.#unexpected(conn, "established");
    let channelKey: Uint8Array | undefined;
    let grant: Awaited<ReturnType<typeof openGrant>>["grant"];
    let keys: BindingKeys;
    try {
      ({ grant, channelKey } = await openGrant(hs.proof, f));
      keys = await deriveBinding(channelKey, grant.channel, hs.hello.nonceC, hs.proof.nonceS, grant.key.type);
    } catch (e) {
      wipe(channelKey);
      return this.#handshakeFailed(conn, hs, asProtocol(e, "the grant is invalid"));
    }
    if (conn.hs !== hs || !conn.alive) return wipe(channelKey);
    const features = hs.proof.features;
    const nextKey = this.#o.followServerKey ? hs.proof.nextKey : undefined;
    // forward secrecy (§5.4): the ephemeral KEM key goes with the handshake state
    conn.hs = undefined;
    hs.hello = hs.proof = undefined;
    clearTimeout(conn.deadline);
    conn.deadline = undefined;

    if (hs.moveTo) {
      this.#o.log.info("identity moved", { from: this.#key.public.fingerprint, to: hs.moveTo.public.fingerprint });
      this.#key = hs.moveTo;
      this.#lastPushId = 0; // the new identity's pushes are numbered afresh
    }
    const serverKey = hs.serverKey;
    const previous = this.#pinned;
    // a switch seen by this client, or (a fresh client) to the next key its store recorded
    const rotated = previous !== undefined ? serverKey !== previous : hs.knownNext === serverKey;
    if (rotated && previous !== undefined) {
      this.#retired = previous;
      this.#o.log.warn("the server switched to the next key its former key announced", { url: this.url, previous, fingerprint: serverKey });
    }
    const announced = nextKey !== undefined && nextKey.fingerprint !== this.#pinnedNext;
    this.#pinned = serverKey;
    // A successor is kept until another statement replaces it or the switch happens.
    if (nextKey) this.#pinnedNext = nextKey.fingerprint;
    else if (rotated) this.#pinnedNext = undefined;
    if (this.#o.serverKeys === undefined) {
      if (hs.learnt) this.#remember(serverKey, !previous && hs.knownNext !== serverKey ? "first" : "rotated");
      if (nextKey && nextKey.fingerprint !== hs.knownNext) this.#rememberNext(nextKey.fingerprint);
    }
    if (rotated || announced) {
      this.#events.emit("serverKey", {
        url: this.url,
        current: serverKey,
        rotated,
        ...(nextKey ? { next: nextKey.fingerprint, notBefore: nextKey.notBefore } : {}),
        ...(rotated && previous !== undefined ? { previous } : {}),
      });
    }
    this.#dropChannel();
    const ch: Channel = { id: grant.channel, key: channelKey, type: grant.key.type, validUntil: grant.valid_until, ttl: grant.ttl, serverKey };
    this.#channel = ch;

    const old = conn.current;
    const clash = conn.bindings.get(ch.id);
    if (clash) this.#abandonBinding(conn, clash, err(ErrorCode.protocol, "the server reused a channel id"));
    const b = this.#bind(conn, keys, features);
    if (old && old !== b) this.#retireIfIdle(conn, old);
    this.#stats.handshakes++;
    this.#attempt = 0;
    this.#retryAfter = 0;
    this.#renewAttempt = 0;
    this.#scheduleRenew(ch.ttl);
    this.#everReady = true;
    if (!hs.renewal) this.#freshPushIds = true;
    this.#o.log.info(hs.renewal ? "channel renewed" : "channel established", { channel: ch.id, ttl: ch.ttl });
    this.#setState(ClientState.ready);
    this.#events.emit("established", { ...this.#info(ch), renewed: hs.renewal });
    hs.done.resolve();
    this.#ready.resolve();
    this.#flush(conn);
  }

  #remember(fingerprint: string, why: "first" | "rotated"): void {
    if (why === "first") this.#o.log.info("trusting the server key on first use", { url: this.url, fingerprint });
    // close() waits for this write, so a short-lived client (the CLI) never exits before it lands.
    this.#remembering = this.#remembering
      .then(() => this.#o.knownServers.set(this.url, fingerprint))
      .catch((cause: unknown) => this.#emitError(err(ErrorCode.unavailable, "the known-servers store could not be written", cause)));
  }

  /** Records the successor the server's key announced (§5.6), beside the current key. */
  #rememberNext(fingerprint: string): void {
    const store = this.#o.knownServers;
    if (!store.setNext) {
      this.#o.log.warn("the known-servers store cannot record the next server key (no setNext): this client will not follow the rotation", { url: this.url });
      return;
    }
    this.#o.log.info("the server key announced its successor", { url: this.url, next: fingerprint });
    this.#remembering = this.#remembering
      .then(() => store.setNext?.(this.url, fingerprint))
      .catch((cause: unknown) => this.#emitError(err(ErrorCode.unavailable, "the known-servers store could not be written", cause)));
  }

  /**
   * A handshake failed. Before the first channel, and for failures that
   * another try cannot fix, the client closes. Otherwise a usable old channel
   * goes on serving while a retry waits out the backoff (§7.1).
   */
  #handshakeFailed(conn: Conn, hs: Handshake, e: PsimbolsError): void {
    if (conn !== this.#conn || conn.hs !== hs) return;
    conn.hs = undefined;
    hs.hello = hs.proof = undefined;
    clearTimeout(conn.deadline);
    conn.deadline = undefined;
    hs.done.reject(e);
    const refusal = TERMINAL_ERRORS.has(e.code);
    const final = !this.#everReady || e.code === ErrorCode.serverKeyMismatch || (refusal && this.#renewAttempt + 1 >= MAX_HANDSHAKE_REFUSALS);
    if (final) {
      const close = e.code === ErrorCode.protocol ? CloseCode.badRequest : CloseCode.normal;
      this.#o.log.warn(e.message, { code: e.code });
      return this.#disconnect(close.code, close.reason, { reconnect: false, error: e });
    }
    this.#emitError(e);
    conn.gated = false;
    const attempt = this.#renewAttempt++;
    if (conn.current) {
      // The channel still serves: keep the socket (and what is in flight on it); renew later,
      // at least a second apart and backing off (a failing authorize hook gets no burst).
      this.#setState(ClientState.ready);
      this.#flush(conn);
      if (this.#o.renew) this.#renewAt(now() + Math.max(e.retryAfterMs ?? 0, renewRetryDelay(attempt, Math.random())));
    } else if (this.#o.reconnect) {
      // Retry on a fresh socket, through the reconnect backoff: on this one the server may still
      // hold the failed attempt's hello, and its challenge would meet the next hello (W9).
      this.#disconnect(CloseCode.normal.code, CloseCode.normal.reason, { reconnect: true, error: e });
    } else {
      conn.retry = setTimeout(() => {
        if (conn === this.#conn && !conn.hs) void this.#startHandshake(conn, false);
      }, backoffDelay(attempt, Math.random(), this.#backoff()));
    }
  }

  #backoff(): BackoffOptions {
    return this.#o.reconnect || DEFAULT_BACKOFF;
  }

  // ---------------------------------------------------------------- renewal (§7.1)

  /** Schedules the renewal at a uniform 0.6–0.7 of `ttl`, on the monotonic clock, never from `valid_until`. */
  #scheduleRenew(ttlSeconds: number): void {
    clearTimeout(this.#renewTimer);
    this.#renewTimer = undefined;
    this.#renewDue = false;
    if (!this.#o.renew) return;
    const frac = RENEW_AT_MIN + (RENEW_AT_MAX - RENEW_AT_MIN) * Math.random();
    this.#renewAt(now() + ttlSeconds * 1000 * frac);
  }

  #renewAt(deadline: number): void {
    clearTimeout(this.#renewTimer);
    const delay = Math.max(0, deadline - now());
    this.#renewTimer = setTimeout(() => {
      this.#renewTimer = undefined;
      if (delay > MAX_TIMER_MS) this.#renewAt(deadline);
      else this.#renewNow();
    }, Math.min(delay, MAX_TIMER_MS));
  }

  #renewNow(): void {
    if (this.#closeCalled || this.#state === ClientState.closed) return;
    const conn = this.#conn;
    if (conn && conn.current && !conn.hs) void this.#startHandshake(conn, true);
    else if (!conn || !conn.hs) this.#renewDue = true;
  }

  // ---------------------------------------------------------------- resume (§6.5)

  #sendResume(conn: Conn, ch: Channel): void {
    const nonce = randomBytes(RESUME_NONCE_BYTES);
    conn.resume = nonce;
    conn.deadline = setTimeout(() => this.#onDeadline(conn, "resuming"), this.#o.handshakeTimeoutMs);
    // last_push: the server sends the application pushes kept since then (§7.2).
    const features = this.#o.hello.features ?? [];
    const resume = {
      type: "resume",
      channel: ch.id,
      nonce: b64u(nonce),
      ...(this.#lastPushId > 0 ? { last_push: this.#lastPushId } : {}),
      ...(features.length > 0 ? { features } : {}),
    };
    this.#outbound(conn, () => this.#write(conn, JSON.stringify(resume)));
  }

  async #onResumed(conn: Conn, f: Resumed): Promise<void> {
    const nonce = conn.resume;
    const ch = this.#channel;
    if (!nonce || !ch || f.channel !== ch.id) return this.#unexpected(conn, "resumed");
    const features = f.features ?? [];
    if (!features.every((x) => this.#o.hello.features?.includes(x))) {
      return this.#drop(conn, CloseCode.badRequest, err(ErrorCode.protocol, "server chose a feature that was not offered"));
    }
    conn.resume = undefined;
    clearTimeout(conn.deadline);
    conn.deadline = undefined;
    const keys = await deriveBinding(ch.key, ch.id, nonce, fromB64u(f.nonce, "nonce"), ch.type);
    if (conn !== this.#conn || this.#channel !== ch) return;
    this.#bind(conn, keys, features);
    this.#attempt = 0;
    this.#retryAfter = 0;
    conn.unconfirmed = this.#info(ch);
    this.#setState(ClientState.ready);
    // The server activates the new binding on its first authenticated request:
    // send one now (the queue, or a ping) so the binding takes over at once;
    // its authenticated answer confirms the resume (#confirmResume).
    if (this.#queue.length > 0) this.#flush(conn);
    else this.#ping();
    if (this.#renewDue) {
      this.#renewDue = false;
      void this.#startHandshake(conn, true);
    }
  }

  // ---------------------------------------------------------------- channel

  #bind(conn: Conn, keys: BindingKeys, features: readonly string[]): Binding {
    const b: Binding = { keys, nextSeq: 1, lastPush: 0, pending: new Map(), binary: features.includes(Feature.binary) };
    conn.binary ||= b.binary;
    conn.bindings.set(keys.channel, b);
    conn.current = b;
    conn.gated = false;
    return b;
  }

  /** Keeps a binding no longer current only while requests on it await their responses. */
  #retireIfIdle(conn: Conn, b: Binding): void {
    if (b !== conn.current && b.pending.size === 0 && conn.bindings.get(b.keys.channel) === b) conn.bindings.delete(b.keys.channel);
  }

  #abandonBinding(conn: Conn, b: Binding, e: PsimbolsError): void {
    for (const req of b.pending.values()) this.#finish(req, e);
    b.pending.clear();
    conn.bindings.delete(b.keys.channel);
    if (conn.current === b) conn.current = undefined;
  }

  /** Forgets the channel: wipes its key and cancels its renewal. */
  #dropChannel(): void {
    if (this.#channel) wipe(this.#channel.key);
    this.#channel = undefined;
    clearTimeout(this.#renewTimer);
    this.#renewTimer = undefined;
    this.#renewDue = false;
  }

  /** A frame authenticated on binding `b`: if it is the one a resume made, the resume is confirmed (§6.5). */
  #confirmResume(conn: Conn, b: Binding): void {
    const info = conn.unconfirmed;
    if (!info || b !== conn.current || info.id !== b.keys.channel) return;
    conn.unconfirmed = undefined;
    this.#stats.resumes++;
    this.#o.log.info("channel resumed", { channel: info.id });
    this.#events.emit("resumed", info);
  }

  /** The channel is dead (expired, closed elsewhere, unknown to the server): a new handshake on this socket. */
  #channelLost(conn: Conn, why: string): void {
    conn.unconfirmed = undefined;
    this.#o.log.info("channel lost; new handshake", { why });
    this.#dropChannel();
    const b = conn.current;
    conn.current = undefined;
    if (b) this.#retireIfIdle(conn, b);
    if (conn.hs) this.#setState(ClientState.handshaking);
    else void this.#startHandshake(conn, false);
  }

  #info(ch: Channel): ChannelInfo {
    return { id: ch.id, validUntil: ch.validUntil, ttl: ch.ttl, serverKey: ch.serverKey, channelType: ch.type };
  }

  // ---------------------------------------------------------------- requests (§6)

  #canSend(conn: Conn): boolean {
    const b = conn.current;
    return conn.alive && conn.open && b !== undefined && !conn.gated && !conn.draining && b.nextSeq <= b.keys.maxSeq;
  }

  #submit(op: string, payload: string, timeoutMs: number, internal: boolean): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const req: PendingRequest = { op, payload, resolve, reject, timer: undefined, where: undefined, settled: false };
      req.timer = setTimeout(() => this.#onRequestTimeout(req, timeoutMs), timeoutMs);
      const conn = this.#conn;
      if (conn && this.#canSend(conn)) return this.#outbound(conn, () => this.#sendRequest(conn, req));
      if (!internal && this.#queue.length >= this.#o.maxQueuedRequests) {
        return this.#finish(req, err(ErrorCode.tooMany, `${this.#o.maxQueuedRequests} requests already wait for the channel`));
      }
      this.#wait(req);
    });
  }

  #wait(req: PendingRequest): void {
    if (req.settled) return;
    req.where = "queued";
    this.#queue.push(req);
  }

  #flush(conn: Conn): void {
    for (const req of this.#queue.splice(0)) {
      req.where = undefined;
      this.#outbound(conn, () => this.#sendRequest(conn, req));
    }
  }

  /** Allocates the next seq of the current binding, seals and writes. Runs on the outbound chain only. */
  async #sendRequest(conn: Conn, req: PendingRequest): Promise<void> {
    if (req.settled) return;
    if (conn !== this.#conn || !this.#canSend(conn)) return this.#wait(req);
    const b = conn.current!;
    const seq = b.nextSeq++;
    const frame = b.binary
      ? await sealBinaryFrame(b.keys, FrameKind.request, seq, req.payload)
      : JSON.stringify({ type: "request", channel: b.keys.channel, seq, request: await sealFrame(b.keys.c2s, FrameKind.request, seq, b.keys.channel, req.payload) });
    if (!conn.alive) return this.#wait(req); // never written: safe to send again later
    // Written even if it timed out meanwhile: seq stays gapless and the late response is ignored.
    if (!req.settled) {
      req.where = { binding: b, seq };
      b.pending.set(seq, req);
    }
    this.#write(conn, frame);
    if (seq >= b.keys.maxSeq - RENEW_SEQ_MARGIN && b === conn.current && !conn.hs && conn.alive) {
      void this.#startHandshake(conn, true); // rebind well before the per-binding cap (§6.4)
    }
  }

  #onRequestTimeout(req: PendingRequest, ms: number): void {
    req.timer = undefined;
    const w = req.where;
    if (w === "queued") {
      const i = this.#queue.indexOf(req);
      if (i >= 0) this.#queue.splice(i, 1);
    } else if (w) {
      w.binding.pending.delete(w.seq);
      if (this.#conn) this.#retireIfIdle(this.#conn, w.binding);
    }
    this.#finish(req, err(ErrorCode.timeout, `request "${req.op}" got no response within ${ms} ms`));
  }

  #finish(req: PendingRequest, e: PsimbolsError | undefined, data?: unknown): void {
    if (req.settled) return;
    req.settled = true;
    req.where = undefined;
    clearTimeout(req.timer);
    req.timer = undefined;
    if (e) req.reject(e);
    else req.resolve(data);
  }

  /** Settles the request `seq` of `b` and lets a retired binding go once it has none left. */
  #settle(conn: Conn, b: Binding, seq: number, e: PsimbolsError | undefined, data?: unknown): void {
    const req = b.pending.get(seq);
    if (!req) return;
    b.pending.delete(seq);
    this.#finish(req, e, data);
    this.#retireIfIdle(conn, b);
    this.#leaveIfDrained(conn);
  }

  /**
   * After `closing`, once every request sent on this socket is answered, the
   * client leaves by itself and resumes elsewhere: the node answers until we
   * go, so a graceful shutdown fails no request (§7, `closing`).
   */
  #leaveIfDrained(conn: Conn): void {
    if (!conn.draining || conn !== this.#conn) return;
    for (const b of conn.bindings.values()) if (b.pending.size > 0) return;
    this.#o.log.info("node is closing and nothing is in flight: moving to another node");
    this.#disconnect(CloseCode.goingAway.code, CloseCode.goingAway.reason, { reconnect: true });
  }

  async #onResponse(conn: Conn, f: ResponseFrame): Promise<void> {
    const b = conn.bindings.get(f.channel);
    if (!b || !b.pending.has(f.seq)) {
      this.#o.log.debug("response for no pending request (timed out?)", { channel: f.channel, seq: f.seq });
      return;
    }
    let text: string;
    try {
      text = await openFrame(b.keys.s2c, FrameKind.response, f.seq, f.channel, f.response);
    } catch {
      return this.#emitError(err(ErrorCode.protocol, "a response did not authenticate; ignored"));
    }
    this.#confirmResume(conn, b);
    let inner: ReturnType<typeof decodeInnerResponse>;
    try {
      inner = decodeInnerResponse(text);
    } catch (e) {
      return this.#settle(conn, b, f.seq, asProtocol(e, "the server sent a malformed response"));
    }
    if ("error" in inner) this.#settle(conn, b, f.seq, err(wireErrorCode(inner.error.code), clean(inner.error.message)));
    else this.#settle(conn, b, f.seq, undefined, inner.data);
  }

  #onErrorFrame(conn: Conn, f: ErrorFrame): void {
    const code = wireErrorCode(f.error.code);
    const message = `the server answered: ${clean(f.error.message)}`;
    // A busy node says how long to wait (§11.4): the next reconnect waits that long before its backoff.
    const hint = f.retry_after_ms;
    const e = hint === undefined ? err(code, message) : new PsimbolsError(code, message, { retryAfterMs: hint });
    if (hint !== undefined && f.seq === undefined) this.#retryAfter = hint;
    if (f.seq !== undefined) {
      // the rejection of one request (§9); unauthenticated, as every outer error is
      const b = f.channel !== undefined ? conn.bindings.get(f.channel) : conn.current;
      if (!b || !b.pending.has(f.seq)) return this.#o.log.debug("error for no pending request", { seq: f.seq });
      this.#settle(conn, b, f.seq, e);
      if (e.code === ErrorCode.unauthorised && b === conn.current && !conn.hs) {
        this.#channelLost(conn, "the server does not know the channel");
      }
      return;
    }
    if (conn.resume) {
      conn.resume = undefined;
      clearTimeout(conn.deadline);
      conn.deadline = undefined;
      if (e.code === ErrorCode.unauthorised) {
        // unknown, expired or revoked: start over on this socket (§6.5)
        this.#o.log.info("resume refused; new handshake");
        this.#dropChannel();
        void this.#startHandshake(conn, false);
      } else {
        this.#drop(conn, CloseCode.normal, e);
      }
      return;
    }
    if (conn.hs) return this.#handshakeFailed(conn, conn.hs, e);
    this.#emitError(e);
  }

  // ---------------------------------------------------------------- pushes (§7)

  async #onPush(conn: Conn, f: PushFrame): Promise<void> {
    const b = conn.bindings.get(f.channel);
    if (!b) return this.#o.log.debug("push for an unknown channel; ignored", { channel: f.channel });
    let text: string;
    try {
      text = await openFrame(b.keys.s2c, FrameKind.push, f.seq, f.channel, f.push);
    } catch {
      return this.#emitError(err(ErrorCode.protocol, "a push did not authenticate; ignored"));
    }
    this.#confirmResume(conn, b);
    // checked after authentication, so a forged high seq cannot mute real pushes
    if (f.seq <= b.lastPush) return this.#o.log.debug("replayed push dropped", { channel: f.channel, seq: f.seq });
    b.lastPush = f.seq;
    let p: InnerPush;
    try {
      p = decodeInnerPush(text);
    } catch (e) {
      return this.#emitError(asProtocol(e, "the server sent a malformed push; ignored"));
    }
    if ("notice" in p) return this.#onNotice(conn, b, p);
    if (p.id !== undefined) {
      // Application pushes carry a per-identity id: after a resume the server may
      // send again what this client already has; deliver each id once, in order.
      const fresh = this.#freshPushIds && b === conn.current;
      if (p.id <= this.#lastPushId && !fresh) return this.#o.log.debug("push already delivered; dropped", { id: p.id });
      if (fresh && p.id <= this.#lastPushId) this.#o.log.info("push ids start again (the store lost them); delivering", { id: p.id, before: this.#lastPushId });
      this.#lastPushId = p.id;
      this.#freshPushIds = false;
    }
    this.#events.emit("push", p.message, { seq: p.id, channel: b.keys.channel });
  }

  #onNotice(conn: Conn, b: Binding, p: Extract<InnerPush, { notice: NoticeKind }>): void {
    const current = b === conn.current;
    this.#o.log.info("notice", { kind: p.notice, channel: b.keys.channel, current });
    this.#events.emit("notice", {
      kind: p.notice,
      channel: b.keys.channel,
      current,
      ...(p.valid_until !== undefined ? { validUntil: p.valid_until } : {}),
      ...(p.reason !== undefined ? { reason: clean(p.reason) } : {}),
    });
    if (!current || this.#closeCalled) return;
    // Once our renewal's proof is out, the old channel is being retired by our
    // own doing: the new grant follows, so notices about the old one need no action.
    const renewing = conn.hs?.step === "proof";
    switch (p.notice) {
      case Notice.expiring:
        if (this.#o.renew && !conn.hs) void this.#startHandshake(conn, true);
        return;
      case Notice.expired:
      case Notice.closed:
        if (!renewing) this.#channelLost(conn, `channel ${p.notice}`);
        return;
      case Notice.revoked:
      case Notice.replaced: {
        if (renewing && p.notice === Notice.replaced) return;
        if (p.notice === Notice.revoked && p.reason === NOTICE_REASON_FORBIDDEN) {
          // The service refused this key at a renewal (PROTOCOL.md §7): report what it answers and
          // closes with next (forbidden, 4008), learnt here from an authenticated notice.
          const e = err(ErrorCode.forbidden, "the service refused this key at the renewal; not reconnecting");
          this.#o.log.warn(e.message);
          return this.#disconnect(CloseCode.forbidden.code, CloseCode.forbidden.reason, { reconnect: false, error: e });
        }
        const cc = p.notice === Notice.revoked ? CloseCode.revoked : CloseCode.replaced;
        const e = err(ErrorCode.unauthorised, `the channel was ${p.notice} by the server; not reconnecting`);
        this.#o.log.warn(e.message);
        return this.#disconnect(cc.code, cc.reason, { reconnect: false, error: e });
      }
      case Notice.closing:
        // the node shuts down and closes the socket (4006): hold new requests for the next one
        conn.draining = true;
        this.#leaveIfDrained(conn);
        return;
      case Notice.pushesLost:
        // informational: the application decides how to catch up (the `notice` event carries it)
        return;
    }
  }
}
