/**
 * The server API's HTTP listener (issue 12 item 4, docs/BACKEND.md "Server
 * API"): its own address (`psimbols serve --api-listen HOST:PORT`), never the
 * client port, so the client load balancer does not expose it. Every call
 * needs `Authorization: Bearer <token>` (server/api/tokens.ts). Order of
 * checks, cheap first: the address's failure count (429), the token (401),
 * the route (404/405), the body's size (413) and JSON (400), then the
 * operation. Failed authentications count per address (limitKey: an IPv6
 * address by its /64); past the limit every call from that address gets 429
 * until the window ends, a correct token included.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Counter as PromCounter } from "prom-client";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import type { Broker } from "../broker.js";
import { limitKey } from "../limits.js";
import type { Logger } from "../log.js";
import type { KeyRegistry } from "../registry.js";
import { MAX_PUSH_BYTES, guardSocket } from "../broker.js";
import { ApiError, routes, type Route } from "./routes.js";
import { type TokenStore, verifyToken } from "./tokens.js";

/** Limits of the API listener (docs/BACKEND.md "Server API", limits). */
export const API_DEFAULTS = {
  /** Failed authentications per address per window before 429. */
  failuresPerAddress: 10,
  failureWindowMs: 60_000,
  /** Largest request body: a push's largest message plus room for its target. */
  maxBodyBytes: MAX_PUSH_BYTES + 1024,
  /** Time for a whole request to arrive. */
  requestTimeoutMs: 10_000,
} as const;

/** HTTP status for each error code. */
const STATUS: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.badRequest]: 400,
  [ErrorCode.unauthorised]: 401,
  [ErrorCode.forbidden]: 403,
  [ErrorCode.notFound]: 404,
  [ErrorCode.tooMany]: 429,
  [ErrorCode.unsupported]: 501,
  [ErrorCode.unavailable]: 503,
  [ErrorCode.internal]: 500,
};

export interface ApiOptions {
  broker: Broker;
  tokens: TokenStore;
  /** Registered keys to manage (the node's FileRegistry or RedisRegistry). */
  registry?: KeyRegistry | undefined;
  host: string;
  port: number;
  logger: Logger;
  failuresPerAddress?: number;
  failureWindowMs?: number;
  maxBodyBytes?: number;
}

/**
 * Parses `HOST:PORT` (`[v6]:PORT` for IPv6).
 * @throws RangeError naming the setting.
 */
export function parseListen(text: string, setting = "api-listen"): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new RangeError(`setting ${setting}: expected HOST:PORT (e.g. 127.0.0.1:9394), got ${JSON.stringify(text.slice(0, 64))}`);
  return { host: m[1] ?? m[2]!, port };
}

/** Failures per key in fixed windows; `blocked` while a key is past the limit. */
class Failures {
  #counts = new Map<string, number>();
  #window = 0;
  readonly #limit: number;
  readonly #windowMs: number;
  constructor(limit: number, windowMs: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }
  #roll(): void {
    const w = Math.floor(Date.now() / this.#windowMs);
    if (w !== this.#window) {
      this.#window = w;
      this.#counts.clear();
    }
  }
  blocked(key: string): boolean {
    this.#roll();
    return (this.#counts.get(key) ?? 0) >= this.#limit;
  }
  fail(key: string): void {
    this.#roll();
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
  }
  /** Seconds until the window ends. */
  retryAfter(): number {
    return Math.ceil(((this.#window + 1) * this.#windowMs - Date.now()) / 1000);
  }
}

export class ApiServer {
  readonly #http: Server;
  readonly #o: ApiOptions;
  readonly #routes: Map<string, Route>;
  readonly #failures: Failures;
  readonly #maxBody: number;
  readonly #calls: PromCounter<"status">;
  readonly #log: Logger;

  private constructor(o: ApiOptions) {
    this.#o = o;
    this.#log = o.logger.child({ component: "api" });
    this.#routes = routes(o.broker, o.registry);
    this.#failures = new Failures(o.failuresPerAddress ?? API_DEFAULTS.failuresPerAddress, o.failureWindowMs ?? API_DEFAULTS.failureWindowMs);
    this.#maxBody = o.maxBodyBytes ?? API_DEFAULTS.maxBodyBytes;
    const name = "psimbols_api_requests_total";
    this.#calls =
      (o.broker.metrics.getSingleMetric(name) as PromCounter<"status"> | undefined) ??
      new PromCounter({ name, help: "Server API calls by HTTP status", labelNames: ["status"], registers: [o.broker.metrics] });
    this.#http = createServer((req, res) => void this.#onRequest(req, res));
    this.#http.on("connection", guardSocket);
    this.#http.headersTimeout = API_DEFAULTS.requestTimeoutMs;
    this.#http.requestTimeout = API_DEFAULTS.requestTimeoutMs;
  }

  /** Starts listening. @throws when the address cannot be bound. */
  static async start(o: ApiOptions): Promise<ApiServer> {
    const s = new ApiServer(o);
    await new Promise<void>((resolve, reject) => {
      s.#http.once("error", reject);
      s.#http.listen(o.port, o.host, () => resolve());
    });
    s.#log.info("server API listening", { url: s.url });
    return s;
  }

  /** The port actually bound. */
  get port(): number {
    const a = this.#http.address();
    return typeof a === "object" && a ? a.port : this.#o.port;
  }

  get url(): string {
    return `http://${this.#o.host.includes(":") ? `[${this.#o.host}]` : this.#o.host}:${this.port}/`;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.#http.close(() => r()));
    this.#http.closeAllConnections();
    await closed;
    await this.#o.tokens.close();
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const address = req.socket.remoteAddress ?? "unknown";
    const key = limitKey(address);
    try {
      if (this.#failures.blocked(key)) {
        res.setHeader("retry-after", String(this.#failures.retryAfter()));
        throw new PsimbolsError(ErrorCode.tooMany, "too many failed authentications from this address; wait");
      }
      const auth = req.headers.authorization;
      const presented = typeof auth === "string" && /^Bearer [!-~]{1,200}$/.test(auth) ? auth.slice(7) : undefined;
      let ok = false;
      if (presented !== undefined) {
        try {
          ok = (await verifyToken(this.#o.tokens, presented)) !== undefined;
        } catch (cause) {
          throw new PsimbolsError(ErrorCode.unavailable, "the token store is unavailable; try again shortly", { cause });
        }
      }
      if (!ok) {
        this.#failures.fail(key);
        this.#log.warn("API call refused: missing or wrong token", { address });
        res.setHeader("www-authenticate", 'Bearer realm="psimbols"');
        throw new PsimbolsError(ErrorCode.unauthorised, "a valid bearer token is required");
      }
      const url = new URL(req.url ?? "/", "http://api.invalid");
      const route = this.#routes.get(`${req.method} ${url.pathname}`);
      if (!route) {
        const known = [...this.#routes.keys()].some((k) => k.endsWith(` ${url.pathname}`));
        throw known ? new ApiError(405, ErrorCode.badRequest, "method not allowed on this path") : new PsimbolsError(ErrorCode.notFound, "no such API path");
      }
      const body = req.method === "POST" ? await this.#body(req) : undefined;
      const [status, out] = await route({ body, query: url.searchParams });
      this.#reply(res, status, out);
    } catch (e) {
      this.#fail(res, e);
    }
  }

  /** Reads and parses a JSON body within the size bound. */
  async #body(req: IncomingMessage): Promise<unknown> {
    const declared = Number(req.headers["content-length"] ?? NaN);
    if (declared > this.#maxBody) throw new ApiError(413, ErrorCode.tooMany, `the body is larger than ${this.#maxBody} bytes`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > this.#maxBody) throw new ApiError(413, ErrorCode.tooMany, `the body is larger than ${this.#maxBody} bytes`);
      chunks.push(c);
    }
    const text = Buffer.concat(chunks).toString("utf8");
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new PsimbolsError(ErrorCode.badRequest, "the body is not valid JSON");
    }
  }

  #reply(res: ServerResponse, status: number, body: unknown): void {
    this.#calls.inc({ status: String(status) });
    if (res.headersSent) return;
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(JSON.stringify(body));
  }

  #fail(res: ServerResponse, e: unknown): void {
    let err: PsimbolsError;
    if (e instanceof PsimbolsError) err = e;
    else if (isStoreFailure(e)) err = new PsimbolsError(ErrorCode.unavailable, "the service's store is unavailable; try again shortly");
    else {
      this.#log.error("API call failed", { error: e instanceof Error ? e.stack : String(e) });
      err = new PsimbolsError(ErrorCode.internal, "internal error");
    }
    const status = e instanceof ApiError ? e.status : (STATUS[err.code] ?? 500);
    // After a refusal the rest of the body is not read: close rather than resynchronise the stream.
    if (status === 401 || status === 413 || status === 429) res.setHeader("connection", "close");
    this.#reply(res, status, { error: { code: err.code, message: err.message } });
  }
}

/** An error from the store's client (a Redis that does not answer) rather than a bug. */
function isStoreFailure(e: unknown): boolean {
  const name = e instanceof Error ? e.name : "";
  const msg = e instanceof Error ? e.message : "";
  return /Redis|Connection|Timeout|MaxRetries/i.test(name) || /ECONNREFUSED|Connection is closed|Command timed out|max retries/i.test(msg);
}
