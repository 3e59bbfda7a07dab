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

/** Signed JSON POSTs over one undici Agent (a pool per origin). */
export class AppClient {
  readonly #agent: Agent;
  readonly #secrets: readonly WebhookSecret[];

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
  async post(call: Call): Promise<string> {
    const headers = {
      ...signWebhook(this.#secrets, call.id, call.body),
      "content-type": "application/json",
      "user-agent": USER_AGENT,
    };
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), call.timeoutMs);
    try {
      let res;
      try {
        res = await this.#agent.request({
          origin: call.url.origin,
          path: call.url.pathname + call.url.search,
          method: "POST",
          headers,
          body: call.body,
          signal: abort.signal,
        });
      } catch (cause) {
        if (abort.signal.aborted) throw new CallError(CallFailure.timeout, "no answer within the timeout", { cause });
        throw new CallError(CallFailure.refused, "no connection to the application", { cause });
      }
      const { statusCode, body } = res;
      // Destroying an unread body emits an abort error: without a listener it would end the process.
      body.on("error", ignore);
      if (statusCode !== 200) {
        body.destroy();
        throw new CallError(CallFailure.status, `the application answered HTTP ${statusCode}`);
      }
      const declared = Number(res.headers["content-length"]);
      if (Number.isFinite(declared) && declared > call.maxBytes) {
        body.destroy();
        throw new CallError(CallFailure.tooLarge, `the answer is larger than ${call.maxBytes} bytes`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      // Listeners, not for-await: leaving a for-await over a destroyed body can wait for ever.
      await new Promise<void>((resolve, reject) => {
        body.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > call.maxBytes) {
            reject(new CallError(CallFailure.tooLarge, `the answer is larger than ${call.maxBytes} bytes`));
            body.destroy();
            return;
          }
          chunks.push(chunk);
        });
        body.on("end", () => resolve());
        body.on("error", (cause) => {
          if (abort.signal.aborted) reject(new CallError(CallFailure.timeout, "no answer within the timeout", { cause }));
          else reject(new CallError(CallFailure.refused, "the connection to the application broke", { cause }));
        });
      });
      return chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8");
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the pools (calls in flight are aborted). */
  async close(): Promise<void> {
    if (this.#agent.destroyed) return;
    await this.#agent.destroy().catch(() => {});
  }
}

function ignore(): void {}

/** Parses a JSON object answer. @throws CallError(bad_body). */
export function parseAnswer(text: string): Record<string, unknown> {
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
