/**
 * The operations of the server API (docs/BACKEND.md "Server API"): the same
 * ones the operator ops and the CLI already have (server/operator.ts,
 * server/registry.ts, Broker.push/revoke), behind parsed, validated bodies.
 * Each route takes the parsed JSON body (or the query) and returns
 * `[status, body]`, or throws a PsimbolsError that the server maps to a status.
 */
import { ErrorCode, PsimbolsError, badField } from "../../shared/errors.js";
import { FINGERPRINT_PATTERN } from "../../shared/crypto.js";
import type { Broker } from "../broker.js";
import { channelRows, parseRegistration, target } from "../operator.js";
import { Scope } from "./tokens.js";
import { type KeyRegistry, type ManagedRegistry, Role, managedRegistry } from "../registry.js";

/** What a route gets. */
export interface RouteInput {
  body: unknown;
  query: URLSearchParams;
  /** Whether the caller's token grants `scope` (the route's own scope is checked before it runs). */
  may(scope: Scope): boolean;
}

/** One operation and the scope a token needs to call it (docs/BACKEND.md "Scopes"). */
export interface Route {
  scope: Scope;
  run(input: RouteInput): Promise<[number, unknown]>;
}

/** 403: the token lacks `scope`. Nothing has been changed when it is thrown. */
export function outOfScope(scope: Scope): ApiError {
  return new ApiError(403, ErrorCode.forbidden, `this token's scopes do not include ${scope}`);
}

/** An error with its own HTTP status (otherwise the status follows the code). */
export class ApiError extends PsimbolsError {
  readonly status: number;
  constructor(status: number, code: ErrorCode, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** The routes, by `METHOD path`. */
export function routes(broker: Broker, registry: KeyRegistry | undefined): Map<string, Route> {
  const keys = keyAdmin(registry);
  const r = new Map<string, Route>();
  const set = (key: string, scope: Scope, run: Route["run"]) => r.set(key, { scope, run });

  set("POST /v1/push", Scope.push, async ({ body }) => {
    const t = apiTarget(body);
    const message = (body as { message?: unknown }).message;
    if (message === undefined) throw badField("message", "any JSON value");
    let seq: number | undefined;
    try {
      seq = await broker.push(t, message);
    } catch (e) {
      if (e instanceof RangeError) throw new ApiError(413, ErrorCode.tooMany, e.message);
      throw e;
    }
    if (seq === undefined) throw new PsimbolsError(ErrorCode.notFound, "no live channel with this id");
    return [200, { seq }];
  });

  set("POST /v1/revoke", Scope.revoke, async ({ body }) => [200, { revoked: await broker.revoke(apiTarget(body)) }]);

  set("GET /v1/channels", Scope.read, async ({ query }) => {
    // A fingerprint's "+" reads as a space in a query string that was not percent-encoded; no fingerprint has spaces.
    const identity = query.get("identity")?.replaceAll(" ", "+");
    if (identity !== undefined && !FINGERPRINT_PATTERN.test(identity)) throw badField("identity", "a fingerprint SHA256:…");
    return [200, { channels: await channelRows(broker.store, identity) }];
  });

  set("GET /v1/stats", Scope.read, async () => [
    200,
    { node: broker.config.node, connections: broker.connectionCount, bound: broker.channels().length, stats: broker.stats },
  ]);

  set("GET /v1/keys", Scope.read, async () => [200, { keys: await keys().list() }]);

  // An operator key is the broker's admin: making one, or changing or removing one, needs keys:operator.
  const operatorGuard = async (may: RouteInput["may"], fingerprint: string, role: string | undefined) => {
    if (may(Scope.keysOperator)) return;
    if (role === Role.operator || (await keys().list()).some((k) => k.fingerprint === fingerprint && k.role === Role.operator)) throw outOfScope(Scope.keysOperator);
  };

  set("POST /v1/keys", Scope.keys, async ({ body, may }) => {
    const { key, role, comment } = await parseRegistration(body);
    await operatorGuard(may, key.fingerprint, role);
    return [201, { key: await keys().add(key, { role, comment }) }];
  });

  set("POST /v1/keys/remove", Scope.keys, async ({ body, may }) => {
    const fp = object(body).fingerprint;
    if (typeof fp !== "string") throw badField("fingerprint", "a fingerprint SHA256:…", fp);
    if (!FINGERPRINT_PATTERN.test(fp)) throw badField("fingerprint", "a fingerprint SHA256:…");
    await operatorGuard(may, fp, undefined);
    if (!(await keys().remove(fp))) throw new PsimbolsError(ErrorCode.notFound, "this key is not registered");
    return [200, { removed: fp }];
  });
  return r;
}

/** `{identity}` or `{channel}`; an identity must be a well-formed fingerprint (docs/BACKEND.md "Errors": 400). */
function apiTarget(body: unknown): ReturnType<typeof target> {
  const t = target(body);
  if (t.identity !== undefined && !FINGERPRINT_PATTERN.test(t.identity)) throw badField("identity", "a fingerprint SHA256:… (43 base64 characters)");
  return t;
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw badField("body", "a JSON object", body);
  return body as Record<string, unknown>;
}

/** Registered keys where the node reads them: its keys file, or Redis. Each write is atomic (server/registry.ts). */
function keyAdmin(registry: KeyRegistry | undefined): () => ManagedRegistry {
  const admin = managedRegistry(registry);
  return () => {
    if (!admin) throw new PsimbolsError(ErrorCode.unsupported, "this node has no keys file or Redis registry to manage");
    return admin;
  };
}
