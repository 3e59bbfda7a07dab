/**
 * Requests to an HTTP upstream (docs/BACKEND.md "Requests"):
 * an op that no built-in handler takes goes to the upstream whose prefix is
 * the longest one matching it (a route without prefix takes the rest), as one
 * signed POST carrying the op, the data, the verified identity, the channel,
 * the node, a request id and the authorize hook's `info`. The upstream's 200
 * answer `{"data": D}` or `{"error": {"code", "message"}}` reaches the client
 * as the inner response; anything else is `unavailable` for that request
 * only, counted in `/metrics`.
 *
 * At most once: the node never retries a request. One that timed out may
 * have run; its id lets the application deduplicate.
 *
 * Each route has its own connection pool and its own signing secret(s)
 * (docs/BACKEND.md §1), and shares its capacity fairly among identities
 * (fair-share.ts, docs/BACKEND.md "Fair share").
 */
import { Counter as PromCounter, Gauge, type Registry } from "prom-client";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { MAX_INNER_BYTES, MAX_TOKEN_CHARS } from "../../shared/frames.js";
import type { Handler, HandlerContext } from "../broker.js";
import { EncodedResponse } from "../response.js";
import type { Logger } from "../log.js";
import { ADMIN_PREFIX, isAdminOp } from "../operator.js";
import type { Role } from "../registry.js";
import { Batcher } from "./batch.js";
import { FairShare } from "./fair-share.js";
import { AppClient, CallError, CallFailure, parseAnswer, parseAppUrl } from "./http.js";
import type { WebhookSecret } from "./signature.js";

/** Inner error codes an upstream may answer with (PROTOCOL.md §6.2, §9: codes a handler may choose). */
export const APP_ERROR_CODES: ReadonlySet<string> = new Set<string>([
  ErrorCode.badRequest,
  ErrorCode.forbidden,
  ErrorCode.notFound,
  ErrorCode.tooMany,
  ErrorCode.unavailable,
  ErrorCode.internal,
]);
/** Longest application error message passed on (PROTOCOL.md §6.2). */
export const MAX_APP_MESSAGE_CHARS = 1024;

/** Defaults of the upstream bounds (docs/BACKEND.md "Limits"). */
export const UpstreamDefaults = {
  timeoutMs: 5000,
  maxInFlight: 256,
  maxInFlightPerIdentity: 16,
  maxResponseBytes: MAX_INNER_BYTES,
} as const;

/** One route: ops starting with `prefix` ("" for the default route) go to `url`. */
export interface UpstreamRoute {
  readonly prefix: string;
  readonly url: URL;
}

/** A route and the secret(s) its calls are signed with (its own, or the shared default: setup.ts). */
export interface SignedRoute extends UpstreamRoute {
  readonly secrets: readonly WebhookSecret[];
  /** The operator opted this route in to batches (`--upstream-batch`, batch.ts). */
  readonly batch?: boolean;
}

/** The outcomes counted per upstream in `psimbols_upstream_requests_total`. */
export type UpstreamOutcome = "ok" | "app_error" | CallFailure;

export interface UpstreamOptions {
  routes: readonly SignedRoute[];
  /** Whole-call timeout (waiting for a slot included), ms. Default 5000. */
  timeoutMs?: number;
  /** Requests in flight from this node to each route (and its connections, at most). Default 256. */
  maxInFlight?: number;
  /** Requests in flight from this node to each route for one identity; more wait for its own. Default 16. */
  maxInFlightPerIdentity?: number;
  /** Largest answer read, bytes. Default MAX_INNER_BYTES (what the client accepts sealed). */
  maxResponseBytes?: number;
  log?: Logger;
}

interface Route {
  readonly prefix: string;
  readonly url: URL;
  /** The `/metrics` label: the prefix, or `*` for the default route. */
  readonly label: string;
  readonly client: AppClient;
  /** Set when the route takes batches. */
  readonly batcher: Batcher | undefined;
  readonly share: FairShare;
  readonly outcomes: Map<UpstreamOutcome, number>;
  readonly handler: Handler;
}

/** A route's name in `/metrics` and in `--upstream-batch`: its prefix, or `*` for the default route. */
export function routeLabel(prefix: string): string {
  return prefix || "*";
}

/**
 * What a route prefix may be (docs/BACKEND.md §2 "Routes"): 1 to 64 of
 * letters, digits and `_ . : -`, at least one a letter or digit (its secret's
 * variable is named after them, setup.ts routeSecretEnv).
 */
export const ROUTE_PREFIX = /^(?=[^=]*[A-Za-z0-9])[A-Za-z0-9_.:-]{1,64}$/;

/**
 * Parses one `--upstream` value: `URL` (the default route) or `PREFIX=URL`.
 * A value starting with a scheme (`http://`) is a URL, `=` in its query
 * included; any other value with an `=` is `PREFIX=URL`, its prefix checked
 * against {@link ROUTE_PREFIX}.
 * @throws TypeError naming the option, and what is wrong with the prefix (never echoing the value, which may hold a URL's credentials).
 */
export function parseUpstreamRoute(text: string, setting = "--upstream"): UpstreamRoute {
  const eq = text.indexOf("=");
  if (eq < 0 || /^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return { prefix: "", url: parseAppUrl(text, setting) };
  const prefix = text.slice(0, eq);
  if (!ROUTE_PREFIX.test(prefix)) {
    const rule = "a prefix is 1 to 64 of letters, digits and _ . : -, with at least one letter or digit (PREFIX=URL), and a URL starts with http:// or https://";
    const bad = [...prefix].find((c) => !/[A-Za-z0-9_.:-]/.test(c));
    const why =
      bad !== undefined ? `has the character ${JSON.stringify(bad)} (U+${bad.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")})` : prefix.length === 0 ? "is empty" : prefix.length > 64 ? `has ${prefix.length} characters` : "has no letter or digit";
    throw new TypeError(`${setting}: the text before "=" is not a route prefix: it ${why}; ${rule}`);
  }
  // PROTOCOL.md §6.6: the `admin.` namespace (in any case) is the broker's; such a route could never be used.
  if (isAdminOp(prefix)) throw new TypeError(`${setting}: the prefix "${prefix}" is in the broker's reserved ${ADMIN_PREFIX} namespace (in any case)`);
  return { prefix, url: parseAppUrl(text.slice(eq + 1), setting) };
}

/**
 * The ops an application may receive: 1 to 64 printable ASCII characters, no space
 * (U+0021 to U+007E). Any other op (a space, a control character, any non-ASCII
 * letter) is answered `not_found` by the broker and never forwarded, so that no
 * trimming, case folding (Turkish dotted İ, Java's per-character toLowerCase) or
 * Unicode normalisation (NFKC turns fullwidth ａｄｍｉｎ．into admin.) an
 * application applies can turn a forwarded op into one of the broker's `admin.*`
 * names (docs/BACKEND.md §2 "Op names"; PROTOCOL.md §6.6).
 */
export const FORWARDABLE_OP = /^[\x21-\x7e]{1,64}$/;

/** The upstream routes of one node and the handler each op goes to. */
export class Upstream {
  readonly #routes: Route[];
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  readonly #log: Logger | undefined;

  constructor(o: UpstreamOptions) {
    if (o.routes.length === 0) throw new RangeError('"routes" expected at least one upstream');
    const seen = new Set<string>();
    for (const r of o.routes) {
      if (seen.has(r.prefix)) throw new RangeError(`--upstream: the prefix "${r.prefix || "(default)"}" is given twice`);
      seen.add(r.prefix);
    }
    this.#timeoutMs = bounded("upstream-timeout", o.timeoutMs ?? UpstreamDefaults.timeoutMs, 1, 600_000);
    const maxInFlight = bounded("upstream-max-in-flight", o.maxInFlight ?? UpstreamDefaults.maxInFlight, 1, 1_000_000);
    const perIdentity = bounded("upstream-max-in-flight-per-identity", o.maxInFlightPerIdentity ?? UpstreamDefaults.maxInFlightPerIdentity, 1, 1_000_000);
    this.#maxBytes = bounded("upstream-max-response-bytes", o.maxResponseBytes ?? UpstreamDefaults.maxResponseBytes, 64, MAX_INNER_BYTES);
    this.#log = o.log?.child({ component: "upstream" });
    // Longest prefix first: the first match is the longest.
    this.#routes = [...o.routes]
      .sort((a, b) => b.prefix.length - a.prefix.length)
      .map((r) => {
        // A pool per route, as large as the route's capacity: no route waits for another's connections.
        const client = new AppClient({ url: r.url, secrets: r.secrets, connections: maxInFlight });
        const route: Route = {
          prefix: r.prefix,
          url: r.url,
          label: routeLabel(r.prefix),
          client,
          batcher: r.batch === true ? new Batcher(client, this.#maxBytes) : undefined,
          share: new FairShare(maxInFlight, perIdentity),
          outcomes: new Map(),
          handler: () => undefined,
        };
        (route as { handler: Handler }).handler = (data, ctx) => this.#call(route, data, ctx);
        return route;
      });
  }

  /**
   * The handler of `op`: its longest-prefix route's, or undefined when no route takes it. Never
   * an `admin.*` op, nor one that is not {@link FORWARDABLE_OP} (docs/BACKEND.md §2 "Op names").
   */
  route(op: string): Handler | undefined {
    if (isAdminOp(op) || !FORWARDABLE_OP.test(op)) return undefined;
    for (const r of this.#routes) if (op.startsWith(r.prefix)) return r.handler;
    return undefined;
  }

  /** Outcome counts per route label (what `/metrics` exports). */
  counts(): Record<string, Partial<Record<UpstreamOutcome, number>>> {
    const out: Record<string, Partial<Record<UpstreamOutcome, number>>> = {};
    for (const r of this.#routes) out[r.label] = Object.fromEntries(r.outcomes);
    return out;
  }

  /** Adds `psimbols_upstream_requests_total{upstream,outcome}`, `psimbols_upstream_in_flight{upstream}`, and for batched routes `psimbols_upstream_batches_total` and `psimbols_upstream_batched_requests_total`. */
  registerMetrics(registry: Registry): void {
    const routes = this.#routes;
    new PromCounter({
      name: "psimbols_upstream_requests_total",
      help: "Requests forwarded to upstreams, by route prefix and outcome",
      labelNames: ["upstream", "outcome"],
      registers: [registry],
      collect() {
        this.reset();
        for (const r of routes) for (const [outcome, n] of r.outcomes) this.inc({ upstream: r.label, outcome }, n);
      },
    });
    const batchers = routes.flatMap((r) => (r.batcher ? [{ label: r.label, b: r.batcher }] : []));
    for (const [name, help, count] of [
      ["psimbols_upstream_batches_total", "Batches sent to upstreams that take them (--upstream-batch), by route prefix", (b: Batcher) => b.batches],
      ["psimbols_upstream_batched_requests_total", "Requests sent in those batches, by route prefix (over psimbols_upstream_batches_total: the mean batch size)", (b: Batcher) => b.batchedRequests],
    ] as const) {
      if (batchers.length === 0) break;
      new PromCounter({
        name,
        help,
        labelNames: ["upstream"],
        registers: [registry],
        collect() {
          this.reset();
          for (const { label, b } of batchers) this.inc({ upstream: label }, count(b));
        },
      });
    }
    new Gauge({
      name: "psimbols_upstream_in_flight",
      help: "Requests in flight to upstreams, by route prefix",
      labelNames: ["upstream"],
      registers: [registry],
      collect() {
        for (const r of routes) this.set({ upstream: r.label }, r.share.inFlight);
      },
    });
  }

  async close(): Promise<void> {
    for (const r of this.#routes) r.batcher?.close();
    await Promise.all(this.#routes.map((r) => r.client.close()));
  }

  async #call(r: Route, data: unknown, ctx: HandlerContext): Promise<unknown> {
    const deadline = Date.now() + this.#timeoutMs;
    const slot = r.share.acquire(ctx.identity, deadline);
    if (slot === "saturated") {
      this.#count(r, CallFailure.saturated);
      throw unavailable();
    }
    if (slot !== "now" && !(await slot)) {
      this.#count(r, CallFailure.timeout);
      throw unavailable();
    }
    try {
      const body = requestBody(ctx, data, await ctx.role());
      const answer =
        r.batcher === undefined
          ? decodeAnswer(await r.client.post({ id: ctx.requestId, body, timeoutMs: Math.max(1, deadline - Date.now()), maxBytes: this.#maxBytes }))
          : checkAnswer(await r.batcher.send(ctx.requestId, body, deadline));
      if ("error" in answer) {
        this.#count(r, "app_error");
        throw new PsimbolsError(answer.error.code, answer.error.message);
      }
      // Encoded once, here: an answer that grows when encoded again (1e20 is 21 digits) is the application's failure.
      const json = JSON.stringify({ data: answer.data });
      if (json.length * 3 > MAX_INNER_BYTES && Buffer.byteLength(json) > MAX_INNER_BYTES) {
        throw new CallError(CallFailure.tooLarge, `the answer is larger than ${MAX_INNER_BYTES} bytes as the client gets it`);
      }
      this.#count(r, "ok");
      return new EncodedResponse(json);
    } catch (e) {
      if (!(e instanceof CallError)) throw e;
      this.#count(r, e.reason);
      this.#log?.warn("upstream request failed", { upstream: r.label, reason: e.reason, error: e.message, request: ctx.requestId });
      throw unavailable(e);
    } finally {
      r.share.release(ctx.identity);
    }
  }

  #count(r: Route, outcome: UpstreamOutcome): void {
    r.outcomes.set(outcome, (r.outcomes.get(outcome) ?? 0) + 1);
  }
}

/** The POST body of one request (docs/BACKEND.md "Request body"), `role` the caller's. `info` is kept as JSON text and spliced in as it is. */
export function requestBody(ctx: HandlerContext, data: unknown, role: Role | null): string {
  const head = JSON.stringify({
    kind: "request",
    type: "request",
    id: ctx.requestId,
    op: ctx.op,
    data: data ?? null,
    identity: { fingerprint: ctx.identity, public_key: ctx.publicKey ?? null },
    role,
    channel: ctx.channel,
    node: ctx.node,
  });
  return `${head.slice(0, -1)},"info":${ctx.info ?? "null"}}`;
}

/** A 200 answer's body: `{"data": D}` or `{"error": {"code": C, "message": M}}`, nothing else. @throws CallError(bad_body). */
export function decodeAnswer(text: string): { data: unknown } | { error: { code: ErrorCode; message: string } } {
  return checkAnswer(parseAnswer(text));
}

/** An answer object (parsed, or a batch's line without its id) checked as {@link decodeAnswer} says. @throws CallError(bad_body). */
function checkAnswer(o: Record<string, unknown>): { data: unknown } | { error: { code: ErrorCode; message: string } } {
  const keys = Object.keys(o);
  if (keys.length !== 1) throw new CallError(CallFailure.badBody, 'the answer must have exactly one of "data" and "error"');
  if (keys[0] === "data") return { data: o.data };
  if (keys[0] !== "error") throw new CallError(CallFailure.badBody, 'the answer must have exactly one of "data" and "error"');
  const e = o.error;
  if (typeof e !== "object" || e === null || Array.isArray(e)) throw new CallError(CallFailure.badBody, '"error" must be an object');
  const { code, message, ...others } = e as Record<string, unknown>;
  // As another key beside "data"/"error": an extra member would be dropped unseen, so the answer is malformed.
  if (Object.keys(others).length > 0) throw new CallError(CallFailure.badBody, '"error" must have only "code" and "message"');
  if (typeof code !== "string" || code.length > MAX_TOKEN_CHARS || !APP_ERROR_CODES.has(code)) {
    throw new CallError(CallFailure.badBody, '"error.code" must be one of the documented inner codes');
  }
  if (typeof message !== "string" || message.length > MAX_APP_MESSAGE_CHARS) {
    throw new CallError(CallFailure.badBody, `"error.message" must be a string of at most ${MAX_APP_MESSAGE_CHARS} characters`);
  }
  return { error: { code: code as ErrorCode, message } };
}

function unavailable(cause?: unknown): PsimbolsError {
  return new PsimbolsError(ErrorCode.unavailable, "the application is unavailable; try again shortly", cause === undefined ? undefined : { cause });
}

function bounded(name: string, v: number, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`setting ${name}: expected an integer in ${min}..${max}, got ${String(v)}`);
  return v;
}
