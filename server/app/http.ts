/**
 * The HTTP client of calls to applications (upstream requests and the
 * authorize hook; docs/BACKEND.md): signed POSTs of JSON over keep-alive
 * connection pools, one per destination (DESIGN.md §10), each call bounded in
 * time and in the size of the answer. Failures are classified, never thrown
 * raw, so a caller turns any of them into `unavailable` and counts it.
 */
import { isIP, type Socket, connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { type WebhookSecret, WebhookHeader, signWebhook } from "./signature.js";

/** Why a call to the application gave no usable answer (a `/metrics` label). */
export const CallFailure = {
  /** No connection (refused, reset, DNS, closed before an answer). */
  refused: "refused",
  /** No complete answer within the timeout. */
  timeout: "timeout",
  /** An HTTP status other than 200. */
  status: "status",
  /** The answer is not the documented JSON. */
  badBody: "bad_body",
  /** The answer is larger than the bound. */
  tooLarge: "too_large",
  /** This node already has its cap of calls in flight to that application. */
  saturated: "saturated",
} as const;
export type CallFailure = (typeof CallFailure)[keyof typeof CallFailure];

/** A call that gave no usable answer. `reason` is safe to log; nothing of the answer's text is kept. */
export class CallError extends Error {
  readonly reason: CallFailure;
  constructor(reason: CallFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CallError";
    this.reason = reason;
  }
}

export interface AppClientOptions {
  /** The destination: every call of this client goes to this URL. */
  url: URL;
  /** Signing secrets of this destination; the first is the current one (all sign during a rotation). */
  secrets: readonly WebhookSecret[];
  /** Keep-alive connections open to the destination, at most; more calls wait for one. Default 64. */
  connections?: number;
  /** Idle keep-alive connections are closed after this long (ms). Default 30 000. */
  keepAliveMs?: number;
}

/** One POST: its id, the exact body, and its bounds. */
export interface Call {
  /** Message id (`webhook-id`), stable across retries of one message. */
  id: string;
  /** The exact JSON body that is signed and sent. */
  body: string;
  timeoutMs: number;
  maxBytes: number;
  /**
   * Streams the answer's body: each piece as it is read (bounded by
   * `maxBytes` in all), and the promise then resolves with "" when the answer
   * is whole. Without it the body is kept and resolved as text.
   */
  onBody?: (piece: Buffer) => void;
}

const USER_AGENT = "psimbols";
/** Largest response head (status line and headers) read. */
const MAX_HEAD_BYTES = 16 * 1024;
/** How often calls past their deadline are looked for (a call ends at most this much after it). */
const SWEEP_MS = 50;
const CRLF2 = Buffer.from("\r\n\r\n");

/** One pooled connection. */
interface Conn {
  readonly socket: Socket;
  /** The call using it; undefined while idle. */
  call: Pending | undefined;
  /** While idle: when it must not be used any more (ms since the epoch). */
  idleUntil: number;
}

/** One call in flight. */
interface Pending {
  readonly deadline: number;
  readonly call: Call;
  readonly resolve: (text: string) => void;
  readonly reject: (e: CallError) => void;
  conn: Conn | undefined;
  settled: boolean;
  readonly answer: AnswerReader;
}

/**
 * Signed JSON POSTs to one destination over a pool of keep-alive HTTP/1.1
 * connections (one call at a time on each: no pipelining, so a slow answer
 * holds up no other call). The request's head is built once per destination
 * and each call is one socket write; the answer is read by the small
 * HTTP/1.1 reader below (Content-Length, chunked, or up to the close), bounded
 * in size. It costs about half the CPU per call of undici's `dispatch`, which
 * it replaces (bench/client.ts: 32-36 against 54-65 µs, alternating in one
 * process; docs/BACKEND.md "Cost"). Every call gets
 * its own Standard Webhooks signature. The whole-call timeout, waiting for a
 * connection included, is one sweep over the calls in flight.
 */
export class AppClient {
  readonly url: URL;
  readonly #secrets: readonly WebhookSecret[];
  readonly #max: number;
  readonly #keepAliveMs: number;
  readonly #head: string;
  readonly #connect: (onData: (chunk: Buffer) => void) => Socket;
  readonly #idle: Conn[] = [];
  readonly #queue: Pending[] = [];
  readonly #pending = new Set<Pending>();
  #open = 0;
  #closed = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #idleSweeper: ReturnType<typeof setInterval> | undefined;

  constructor(o: AppClientOptions) {
    if (o.secrets.length === 0) throw new RangeError('"secrets" expected at least one secret');
    const connections = o.connections ?? 64;
    if (!Number.isSafeInteger(connections) || connections < 1) throw new RangeError(`"connections" expected a positive integer, got ${String(connections)}`);
    this.url = o.url;
    this.#secrets = o.secrets;
    this.#max = connections;
    this.#keepAliveMs = o.keepAliveMs ?? 30_000;
    this.#head = `POST ${o.url.pathname}${o.url.search} HTTP/1.1\r\nhost: ${o.url.host}\r\ncontent-type: application/json\r\nuser-agent: ${USER_AGENT}\r\n`;
    const https = o.url.protocol === "https:";
    const host = o.url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(o.url.port || (https ? 443 : 80));
    // Plain TCP reads into one buffer through `onread`, past the stream machinery (a few µs a call);
    // the reader copies what it keeps. TLS sockets read as streams.
    const scratch = https ? undefined : Buffer.allocUnsafe(64 * 1024);
    this.#connect = https
      ? (onData) => tlsConnect({ host, port, ...(isIP(host) ? {} : { servername: host }), ALPNProtocols: ["http/1.1"] }).on("data", onData)
      : (onData) => netConnect({ host, port, onread: { buffer: scratch!, callback: (n: number, buf: Uint8Array) => (onData(Buffer.from(buf.subarray(0, n))), true) } });
  }

  /**
   * POSTs `call.body`, signed, and returns the 200 answer's text.
   * @throws CallError for anything else (never another error).
   */
  post(call: Call): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const p: Pending = { deadline: Date.now() + call.timeoutMs, call, resolve, reject, conn: undefined, settled: false, answer: new AnswerReader(call.maxBytes, call.onBody) };
      if (this.#closed) return this.#fail(p, new CallError(CallFailure.refused, "the client is closed"));
      this.#pending.add(p);
      this.#sweep();
      let c: Conn | undefined;
      const now = Date.now();
      while ((c = this.#idle.pop()) !== undefined && (c.socket.destroyed || c.idleUntil <= now)) c.socket.destroy();
      if (c !== undefined) return this.#send(c, p);
      if (this.#open < this.#max) return this.#send(this.#dial(), p);
      this.#queue.push(p);
    });
  }

  /** Closes every connection; calls in flight fail as `refused`. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    clearInterval(this.#idleSweeper);
    this.#sweeper = this.#idleSweeper = undefined;
    for (const p of [...this.#pending]) this.#fail(p, new CallError(CallFailure.refused, "the client is closed"));
    for (const c of this.#idle) c.socket.destroy();
    this.#idle.length = 0;
  }

  #dial(): Conn {
    this.#open++;
    const c: Conn = {
      socket: this.#connect((chunk) => {
        const p = c.call;
        if (p === undefined) return void c.socket.destroy(); // nothing was asked: not an HTTP server we can trust
        this.#read(c, p, chunk);
      }),
      call: undefined,
      idleUntil: 0,
    };
    const socket = c.socket;
    socket.setNoDelay(true);
    socket.on("end", () => {
      const p = c.call;
      if (p !== undefined) this.#read(c, p, undefined);
      socket.destroy();
    });
    socket.on("error", () => undefined); // the close below settles the call
    socket.on("close", () => {
      this.#open--;
      const i = this.#idle.indexOf(c);
      if (i >= 0) this.#idle.splice(i, 1);
      if (c.call !== undefined) this.#fail(c.call, new CallError(CallFailure.refused, "no connection to the application, or it broke"));
      this.#next();
    });
    return c;
  }

  #send(c: Conn, p: Pending): void {
    c.call = p;
    p.conn = c;
    const h = signWebhook(this.#secrets, p.call.id, p.call.body);
    c.socket.write(
      `${this.#head}webhook-id: ${p.call.id}\r\nwebhook-timestamp: ${h[WebhookHeader.timestamp]}\r\nwebhook-signature: ${h[WebhookHeader.signature]}\r\ncontent-length: ${Buffer.byteLength(p.call.body)}\r\n\r\n${p.call.body}`,
    );
  }

  #read(c: Conn, p: Pending, chunk: Buffer | undefined): void {
    let r: AnswerState;
    try {
      r = chunk === undefined ? p.answer.end() : p.answer.push(chunk);
    } catch (e) {
      c.call = undefined;
      c.socket.destroy();
      return this.#fail(p, e instanceof CallError ? e : new CallError(CallFailure.refused, "the answer is not HTTP/1.1"));
    }
    if (r === AnswerState.more) return;
    c.call = undefined;
    if (r === AnswerState.doneKeep && !p.settled && !this.#closed) this.#release(c, p.answer.keepAliveMs);
    else c.socket.destroy();
    if (p.settled) return;
    let text: string;
    try {
      text = p.answer.text();
    } catch {
      // Bytes that are not UTF-8 are a broken answer, not text to patch with U+FFFD (docs/BACKEND.md "Errors and limits").
      return this.#fail(p, new CallError(CallFailure.badBody, "the answer is not UTF-8"));
    }
    p.settled = true;
    this.#pending.delete(p);
    p.resolve(text);
  }

  /**
   * A connection whose answer was read whole: to the next waiting call, or
   * idle until our keep-alive time or, sooner, a second before the server's
   * own (its `keep-alive: timeout=N`), so that no call is written to a
   * connection the server is closing.
   */
  #release(c: Conn, serverKeepAliveMs: number | undefined): void {
    const p = this.#queue.shift();
    if (p !== undefined) return this.#send(c, p);
    c.idleUntil = Date.now() + Math.min(this.#keepAliveMs, serverKeepAliveMs === undefined ? Infinity : serverKeepAliveMs - 1000);
    this.#idle.push(c);
    this.#sweepIdle();
  }

  /** A connection closed: a waiting call may open a new one. */
  #next(): void {
    if (this.#closed || this.#queue.length === 0 || this.#open >= this.#max) return;
    this.#send(this.#dial(), this.#queue.shift()!);
  }

  #fail(p: Pending, e: CallError): void {
    if (p.settled) return;
    p.settled = true;
    this.#pending.delete(p);
    const i = this.#queue.indexOf(p);
    if (i >= 0) this.#queue.splice(i, 1);
    const c = p.conn;
    if (c !== undefined && c.call === p) {
      c.call = undefined;
      c.socket.destroy(); // an answer half read cannot be resumed: the connection goes
    }
    p.reject(e);
  }

  #sweep(): void {
    if (this.#sweeper) return;
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const p of this.#pending) if (p.deadline <= now) this.#fail(p, new CallError(CallFailure.timeout, "no answer within the timeout"));
      if (this.#pending.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, SWEEP_MS);
    this.#sweeper.unref();
  }

  #sweepIdle(): void {
    if (this.#idleSweeper) return;
    this.#idleSweeper = setInterval(
      () => {
        const now = Date.now();
        for (const c of this.#idle.filter((x) => x.idleUntil <= now)) c.socket.destroy();
        if (this.#idle.length === 0) {
          clearInterval(this.#idleSweeper);
          this.#idleSweeper = undefined;
        }
      },
      Math.min(1000, this.#keepAliveMs),
    );
    this.#idleSweeper.unref();
  }
}

/** Where an answer's reading stands. */
const AnswerState = {
  more: 0,
  /** Read whole; the connection may carry the next call. */
  doneKeep: 1,
  /** Read whole; the connection must close. */
  doneClose: 2,
} as const;
type AnswerState = (typeof AnswerState)[keyof typeof AnswerState];

/**
 * Reads one HTTP/1.1 answer (RFC 9112): the status line and headers, then a
 * body framed by Content-Length, chunked, or the connection's close; 1xx
 * interim answers skipped. Anything but a 200 fails (`status`) as soon as its
 * head is read; a body over `maxBytes` fails (`too_large`), declared or
 * streamed; anything malformed fails (`refused`, as a broken connection).
 */
class AnswerReader {
  readonly #max: number;
  #buf: Buffer | undefined;
  #headDone = false;
  /** Body bytes still expected (Content-Length), -1 chunked, -2 until the close. */
  #left = 0;
  #keep = true;
  /** The server's `keep-alive: timeout=N`, in ms, when it gave one. */
  keepAliveMs: number | undefined;
  readonly #body: Buffer[] = [];
  #size = 0;
  /** Chunked: bytes of the current chunk still to read, or -1 when a size line is next. */
  #chunk = -1;
  #trailers = false;

  readonly #sink: ((piece: Buffer) => void) | undefined;

  constructor(maxBytes: number, sink?: (piece: Buffer) => void) {
    this.#max = maxBytes;
    this.#sink = sink;
  }

  /** The body as text ("" when it was streamed to a sink). @throws TypeError when it is not UTF-8. */
  text(): string {
    if (this.#sink !== undefined) return "";
    return UTF8.decode(this.#body.length === 1 ? this.#body[0]! : Buffer.concat(this.#body));
  }

  end(): AnswerState {
    if (this.#headDone && this.#left === -2) return AnswerState.doneClose;
    throw broken();
  }

  push(chunk: Buffer): AnswerState {
    let b = this.#buf === undefined ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#buf = undefined;
    while (!this.#headDone) {
      const end = b.indexOf(CRLF2);
      if (end < 0) {
        if (b.length > MAX_HEAD_BYTES) throw broken();
        this.#buf = b;
        return AnswerState.more;
      }
      if (end > MAX_HEAD_BYTES) throw broken();
      this.#head(b.toString("latin1", 0, end));
      b = b.subarray(end + 4);
    }
    if (this.#left >= 0) {
      if (b.length > this.#left) throw broken(); // more than one answer: not from a server we can trust
      this.#take(b);
      this.#left -= b.length;
      return this.#left === 0 ? (this.#keep ? AnswerState.doneKeep : AnswerState.doneClose) : AnswerState.more;
    }
    if (this.#left === -2) {
      this.#take(b);
      return AnswerState.more;
    }
    return this.#chunked(b);
  }

  /** Parses a head; a 1xx head is skipped (the next head follows). */
  #head(text: string): void {
    const lines = text.split("\r\n");
    const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0]!);
    if (!m) throw broken();
    const status = Number(m[2]);
    if (status >= 100 && status < 200 && status !== 101) return;
    if (status !== 200) throw new CallError(CallFailure.status, `the application answered HTTP ${status}`);
    let length: number | undefined;
    let chunked = false;
    let connection = "";
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(":");
      if (colon <= 0) throw broken();
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === "content-length") {
        if (!/^\d{1,15}$/.test(value) || (length !== undefined && length !== Number(value))) throw broken();
        length = Number(value);
      } else if (name === "transfer-encoding") {
        if (value.toLowerCase() !== "chunked") throw broken();
        chunked = true;
      } else if (name === "connection") connection = value.toLowerCase();
      else if (name === "keep-alive") {
        const t = /(?:^|[,\s])timeout=(\d{1,6})/i.exec(value);
        if (t) this.keepAliveMs = Number(t[1]) * 1000;
      }
    }
    if (chunked && length !== undefined) throw broken(); // RFC 9112 §6.3: a smuggling sign
    this.#keep = m[1] === "1" ? connection !== "close" : connection === "keep-alive";
    if (length !== undefined && length > this.#max) throw tooLarge(this.#max);
    this.#headDone = true;
    this.#left = chunked ? -1 : length ?? -2;
    if (this.#left === -2) this.#keep = false;
  }

  #take(b: Buffer): void {
    if (b.length === 0) return;
    this.#size += b.length;
    if (this.#size > this.#max) throw tooLarge(this.#max);
    if (this.#sink !== undefined) this.#sink(b);
    else this.#body.push(b);
  }

  #chunked(b: Buffer): AnswerState {
    for (;;) {
      if (this.#trailers) {
        // Trailer fields end with an empty line; they are read and dropped.
        const end = b.indexOf("\r\n");
        if (end < 0) break;
        b = b.subarray(end + 2);
        if (end === 0) {
          if (b.length > 0) throw broken();
          return this.#keep ? AnswerState.doneKeep : AnswerState.doneClose;
        }
        continue;
      }
      if (this.#chunk === -1) {
        const end = b.indexOf("\r\n");
        if (end < 0) break;
        const m = /^([0-9a-fA-F]{1,8})(?:;.*)?$/.exec(b.toString("latin1", 0, end));
        if (!m) throw broken();
        b = b.subarray(end + 2);
        const n = parseInt(m[1]!, 16);
        if (this.#size + n > this.#max) throw tooLarge(this.#max);
        if (n === 0) {
          this.#trailers = true;
          continue;
        }
        this.#chunk = n;
      }
      if (this.#chunk > 0) {
        const n = Math.min(this.#chunk, b.length);
        this.#take(b.subarray(0, n));
        this.#chunk -= n;
        b = b.subarray(n);
        if (this.#chunk > 0) return AnswerState.more;
      }
      // The chunk's data is read; its CRLF follows.
      if (b.length < 2) break;
      if (b[0] !== 13 || b[1] !== 10) throw broken();
      b = b.subarray(2);
      this.#chunk = -1;
    }
    if (b.length > MAX_HEAD_BYTES) throw broken();
    this.#buf = b.length > 0 ? Buffer.from(b) : undefined;
    return AnswerState.more;
  }
}

function broken(): CallError {
  return new CallError(CallFailure.refused, "the answer is not HTTP/1.1");
}

function tooLarge(max: number): CallError {
  return new CallError(CallFailure.tooLarge, `the answer is larger than ${max} bytes`);
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Deepest nesting of an answer's JSON, the answer object itself counted
 * (docs/BACKEND.md "Errors and limits"): deeper values would overflow the
 * stack when the broker serialises them again for the client.
 */
export const MAX_ANSWER_DEPTH = 512;

/** Whether JSON `text` nests deeper than `max` (strings skipped). Depth d takes at least 2d characters, so short texts are not scanned. */
function deeperThan(text: string, max: number): boolean {
  if (text.length <= 2 * max) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * Parses a JSON object answer of at most {@link MAX_ANSWER_DEPTH} levels.
 * Numbers are JavaScript's: one out of range (`1e400`) becomes Infinity, which
 * the client receives as `null`. @throws CallError(bad_body).
 */
export function parseAnswer(text: string): Record<string, unknown> {
  if (deeperThan(text, MAX_ANSWER_DEPTH)) throw new CallError(CallFailure.badBody, `the answer nests deeper than ${MAX_ANSWER_DEPTH} levels`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new CallError(CallFailure.badBody, "the answer is not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new CallError(CallFailure.badBody, "the answer is not a JSON object");
  return v as Record<string, unknown>;
}

/**
 * Parses an application URL (`http:` or `https:` only).
 * @throws TypeError naming `setting`.
 */
export function parseAppUrl(text: string, setting: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new TypeError(`${setting}: expected an http:// or https:// URL`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`${setting}: expected an http:// or https:// URL`);
  if (u.username || u.password) throw new TypeError(`${setting}: credentials in the URL are not accepted (the calls are signed)`);
  return u;
}
