/**
 * The one HTTP client of calls to applications (upstream requests and the
 * authorize hook; docs/BACKEND.md): signed POSTs of JSON over undici's
 * keep-alive connection pools (DESIGN.md §8, §10), each bounded in time and in
 * the size of the answer. Failures are classified, never thrown raw, so a
 * caller turns any of them into `unavailable` and counts it.
 */
import { Agent } from "undici";
import { type WebhookSecret, signWebhook } from "./signature.js";

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
  /** Signing secrets; the first is the current one (all sign during a rotation). */
  secrets: readonly WebhookSecret[];
  /** Keep-alive connections per application origin. Default 64. */
  connections?: number;
  /** Idle keep-alive sockets are closed after this long (ms). Default 30 000. */
  keepAliveMs?: number;
}

/** One POST: where, what, and its bounds. */
export interface Call {
  url: URL;
  /** Message id (`webhook-id`), stable across retries of one message. */
  id: string;
  /** The exact JSON body that is signed and sent. */
  body: string;
  timeoutMs: number;
  maxBytes: number;
}

const USER_AGENT = "psimbols";

/** One call in flight, for the deadline sweep. */
interface Pending {
  readonly deadline: number;
  abort: ((err?: Error) => void) | undefined;
  fail(e: CallError): void;
}

/** How often calls past their deadline are looked for (a call ends at most this much after it). */
const SWEEP_MS = 50;

/**
 * Signed JSON POSTs over one undici Agent (a pool per origin). Calls go
 * through undici's `dispatch` with handler callbacks, not `request`: no
 * Readable body stream and no AbortSignal per call (the forwarding bench,
 * issue 12 item 9, halved the broker's CPU per forwarded request with it).
 * The whole-call timeout is one sweep over the calls in flight.
 */
export class AppClient {
  readonly #agent: Agent;
  readonly #secrets: readonly WebhookSecret[];
  readonly #pending = new Set<Pending>();
  #sweeper: ReturnType<typeof setInterval> | undefined;

  constructor(o: AppClientOptions) {
    if (o.secrets.length === 0) throw new RangeError('"secrets" expected at least one secret');
    this.#secrets = o.secrets;
    const keepAlive = o.keepAliveMs ?? 30_000;
    this.#agent = new Agent({ connections: o.connections ?? 64, keepAliveTimeout: keepAlive, keepAliveMaxTimeout: keepAlive });
  }

  /**
   * POSTs `call.body`, signed, and returns the 200 answer's text.
   * @throws CallError for anything else (never another error).
   */
  post(call: Call): Promise<string> {
    const headers = {
      ...signWebhook(this.#secrets, call.id, call.body),
      "content-type": "application/json",
      "user-agent": USER_AGENT,
    };
    return new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const p: Pending = {
        deadline: Date.now() + call.timeoutMs,
        abort: undefined,
        fail: (e) => {
          if (settled) return;
          settled = true;
          this.#pending.delete(p);
          reject(e);
          p.abort?.(e); // undici then calls onError, which finds the call settled
        },
      };
      const done = (text: string): void => {
        if (settled) return;
        settled = true;
        this.#pending.delete(p);
        resolve(text);
      };
      this.#track(p);
      try {
        this.#agent.dispatch(
          {
            origin: call.url.origin,
            path: call.url.pathname + call.url.search,
            method: "POST",
            headers,
            body: call.body,
            headersTimeout: call.timeoutMs,
            bodyTimeout: call.timeoutMs,
          },
          {
            onConnect: (abort) => {
              p.abort = abort;
              if (settled) abort(); // the deadline passed while it waited for a pooled connection
            },
            onHeaders: (status, raw) => {
              if (status !== 200) {
                p.fail(new CallError(CallFailure.status, `the application answered HTTP ${status}`));
                return false;
              }
              const declared = contentLength(raw);
              if (declared !== undefined && declared > call.maxBytes) {
                p.fail(new CallError(CallFailure.tooLarge, `the answer is larger than ${call.maxBytes} bytes`));
                return false;
              }
              return true;
            },
            onData: (chunk) => {
              size += chunk.length;
              if (size > call.maxBytes) {
                p.fail(new CallError(CallFailure.tooLarge, `the answer is larger than ${call.maxBytes} bytes`));
                return false;
              }
              chunks.push(chunk);
              return true;
            },
            onComplete: () => {
              // Bytes that are not UTF-8 are a broken answer, not text to patch with U+FFFD (docs/BACKEND.md "Errors and limits").
              try {
                done(UTF8.decode(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
              } catch {
                p.fail(new CallError(CallFailure.badBody, "the answer is not UTF-8"));
              }
            },
            onError: (cause) => p.fail(classify(cause)),
          },
        );
      } catch (cause) {
        p.fail(classify(cause));
      }
    });
  }

  /** Closes the pools (calls in flight are aborted). */
  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    if (this.#agent.destroyed) return;
    await this.#agent.destroy().catch(() => {});
  }

  #track(p: Pending): void {
    this.#pending.add(p);
    if (this.#sweeper) return;
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const q of this.#pending) if (q.deadline <= now) q.fail(new CallError(CallFailure.timeout, "no answer within the timeout"));
      if (this.#pending.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, SWEEP_MS);
    this.#sweeper.unref();
  }
}

/** An undici failure as a CallError: its timeouts are `timeout`, anything else `refused`. */
function classify(cause: unknown): CallError {
  if (cause instanceof CallError) return cause;
  const code = (cause as { code?: unknown } | null)?.code;
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") return new CallError(CallFailure.timeout, "no answer within the timeout", { cause });
  return new CallError(CallFailure.refused, "no connection to the application, or it broke", { cause });
}

/** The Content-Length of raw undici headers (name, value, name, value, ...), if one is declared. */
function contentLength(raw: Buffer[] | string[] | null): number | undefined {
  if (!raw) return undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString();
    if (name.length === 14 && name.toLowerCase() === "content-length") {
      const n = Number(raw[i + 1]!.toString());
      return Number.isFinite(n) ? n : undefined;
    }
  }
  return undefined;
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
