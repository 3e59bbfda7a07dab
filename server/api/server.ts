/**
 * The server API's HTTP listener (docs/BACKEND.md "Server API"): its own
 * address (`psimbols serve --api-listen HOST:PORT`), never the client port,
 * so the client load balancer does not expose it. Every call needs
 * `Authorization: Bearer <token>` (server/api/tokens.ts). Order of checks,
 * cheap first: the connections of the address (refused at accept), the
 * address's failed authentications (429), the token (401), the route
 * (404/405), the token's scope (403), the body's size (413) and JSON (400),
 * then the operation. Failed authentications count per address (limitKey: an
 * IPv6 address by its /64) in a sliding window (server/api/failures.ts),
 * shared through Redis with `--redis`; past the limit every call from that
 * address gets 429, a correct token included. Refusals are logged through
 * RefusalLog: one line per address per interval, whatever the rate.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { Counter as PromCounter } from "prom-client";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import type { Broker } from "../broker.js";
import { limitKey } from "../limits.js";
import type { Logger } from "../log.js";
import type { KeyRegistry } from "../registry.js";
import { MAX_PUSH_BYTES, guardSocket } from "../broker.js";
import { type FailureWindow, LocalFailureWindow, RedisFailureWindow } from "./failures.js";
import { RefusalLog } from "./refusal-log.js";
import { ApiError, outOfScope, routes, type Route } from "./routes.js";
import { type TokenEntry, type TokenStore, grants, verifyToken } from "./tokens.js";

/** Limits of the API listener (docs/BACKEND.md "Server API", limits). */
export const API_DEFAULTS = {
  /** Failed authentications per address within the sliding window before 429. */
  failuresPerAddress: 10,
  failureWindowMs: 60_000,
  /** Largest request body: a push's largest message plus room for its target. */
  maxBodyBytes: MAX_PUSH_BYTES + 1024,
  /** Time for a whole request (headers and body) to arrive. */
  requestTimeoutMs: 10_000,
  /** How often Node looks for requests past that time: the 408 comes at most this much after it. */
  timeoutCheckMs: 250,
  /** Open connections per address (an IPv6 address by its /64); more are refused when accepted. */
  connectionsPerAddress: 64,
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
  /** Count failed authentications in this Redis (the cluster's), shared by every node; else per node. */
  redis?: string | undefined;
  failuresPerAddress?: number;
  failureWindowMs?: number;
  maxBodyBytes?: number;
  requestTimeoutMs?: number;
  connectionsPerAddress?: number;
  /** Interval of the refusal log's summed lines (ms); default 10 000. */
  refusalLogIntervalMs?: number;
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

export class ApiServer {
  readonly #http: Server;
  readonly #o: ApiOptions;
  readonly #routes: Map<string, Route>;
  readonly #failures: FailureWindow;
  readonly #refusals: RefusalLog;
  readonly #maxBody: number;
  readonly #perAddress: number;
  /** Open connections per limitKey. */
  readonly #open = new Map<string, number>();
  readonly #calls: PromCounter<"status">;
  readonly #log: Logger;

  private constructor(o: ApiOptions) {
    this.#o = o;
    this.#log = o.logger.child({ component: "api" });
    this.#routes = routes(o.broker, o.registry);
    const limit = o.failuresPerAddress ?? API_DEFAULTS.failuresPerAddress;
    const windowMs = o.failureWindowMs ?? API_DEFAULTS.failureWindowMs;
    this.#failures = o.redis ? new RedisFailureWindow(o.redis, limit, windowMs) : new LocalFailureWindow(limit, windowMs);
    this.#refusals = new RefusalLog(this.#log, o.refusalLogIntervalMs === undefined ? {} : { intervalMs: o.refusalLogIntervalMs });
    this.#maxBody = o.maxBodyBytes ?? API_DEFAULTS.maxBodyBytes;
    this.#perAddress = o.connectionsPerAddress ?? API_DEFAULTS.connectionsPerAddress;
    const name = "psimbols_api_requests_total";
    this.#calls =
      (o.broker.metrics.getSingleMetric(name) as PromCounter<"status"> | undefined) ??
      new PromCounter({ name, help: "Server API calls by HTTP status", labelNames: ["status"], registers: [o.broker.metrics] });
    const timeout = o.requestTimeoutMs ?? API_DEFAULTS.requestTimeoutMs;
    // Node checks its request timeouts every connectionsCheckingInterval (30 s by default): check often, so 10 s means 10 s.
    this.#http = createServer({ requestTimeout: timeout, headersTimeout: timeout, connectionsCheckingInterval: Math.min(API_DEFAULTS.timeoutCheckMs, timeout) }, (req, res) => void this.#onRequest(req, res));
    this.#http.on("connection", (socket: Socket) => {
      guardSocket(socket); // a peer's reset never ends the node (SECURITY.md)
      this.#onConnection(socket);
    });
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
    this.#refusals.flush();
    this.#refusals.close();
    await Promise.all([this.#o.tokens.close(), this.#failures.close()]);
  }

  /** Counts the address's open connections; one past the cap is answered 429 and closed before any request is read. */
  #onConnection(socket: Socket): void {
    const address = socket.remoteAddress ?? "unknown";
    const key = limitKey(address);
    const n = (this.#open.get(key) ?? 0) + 1;
    if (n > this.#perAddress) {
      this.#refusals.refused(address, "connections");
      this.#calls.inc({ status: "429" });
      const body = JSON.stringify({ error: { code: ErrorCode.tooMany, message: "too many open connections from this address" } });
      socket.end(`HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
      socket.destroySoon();
      return;
    }
    this.#open.set(key, n);
    socket.once("close", () => {
      const left = (this.#open.get(key) ?? 1) - 1;
      if (left > 0) this.#open.set(key, left);
      else this.#open.delete(key);
    });
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const address = req.socket.remoteAddress ?? "unknown";
    const key = limitKey(address);
    try {
      const wait = await this.#failures.wait(key);
      if (wait > 0) {
        this.#refusals.refused(address, "rate");
        res.setHeader("retry-after", String(Math.ceil(wait / 1000)));
        throw new PsimbolsError(ErrorCode.tooMany, "too many failed authentications from this address; wait");
      }
      const auth = req.headers.authorization;
      const presented = typeof auth === "string" && /^Bearer [!-~]{1,200}$/.test(auth) ? auth.slice(7) : undefined;
      let token: TokenEntry | undefined;
      if (presented !== undefined) {
        try {
          token = await verifyToken(this.#o.tokens, presented);
        } catch (cause) {
          throw new PsimbolsError(ErrorCode.unavailable, "the token store is unavailable; try again shortly", { cause });
        }
      }
      if (!token) {
        await this.#failures.fail(key);
        this.#refusals.refused(address, "token");
        res.setHeader("www-authenticate", 'Bearer realm="psimbols"');
        throw new PsimbolsError(ErrorCode.unauthorised, "a valid bearer token is required");
      }
      const url = new URL(req.url ?? "/", "http://api.invalid");
      const route = this.#routes.get(`${req.method} ${url.pathname}`);
      if (!route) {
        const known = [...this.#routes.keys()].some((k) => k.endsWith(` ${url.pathname}`));
        throw known ? new ApiError(405, ErrorCode.badRequest, "method not allowed on this path") : new PsimbolsError(ErrorCode.notFound, "no such API path");
      }
      const entry = token; // narrowed, for the closure below
      if (!grants(entry, route.scope)) throw outOfScope(route.scope);
      const body = req.method === "POST" ? await this.#body(req) : undefined;
      const [status, out] = await route.run({ body, query: url.searchParams, may: (scope) => grants(entry, scope) });
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
    if (status === 401 || status === 403 || status === 413 || status === 429) res.setHeader("connection", "close");
    this.#reply(res, status, { error: { code: err.code, message: err.message } });
  }
}

/** An error from the store's client (a Redis that does not answer) rather than a bug. */
function isStoreFailure(e: unknown): boolean {
  const name = e instanceof Error ? e.name : "";
  const msg = e instanceof Error ? e.message : "";
  return /Redis|Connection|Timeout|MaxRetries/i.test(name) || /ECONNREFUSED|Connection is closed|Command timed out|max retries/i.test(msg);
}
