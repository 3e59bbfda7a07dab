/**
 * Where the shared Redis is: one server (`redis://`, `rediss://`), or a
 * master found through Redis Sentinel (`redis+sentinel://`,
 * `rediss+sentinel://`). Every Redis connection of a node (the store's
 * command and subscriber connections, the key registry) and `psimbols push
 * --redis` take one of these strings; {@link createRedis} turns it into an
 * `ioredis` client, which follows Sentinel's failovers natively.
 *
 * Sentinel form (docs/CLUSTER.md, "Redis failover (Sentinel)"):
 *
 *     redis+sentinel://[user:password@]host1:26379,host2:26379,host3:26379/mymaster[/db][?options]
 *
 * - the hosts are sentinels (port 26379 when left out), at least one;
 * - the first path segment is the master's name as the sentinels know it
 *   (`sentinel monitor <name> ...`), the optional second one the database;
 * - `user:password@` authenticate to the master (and its replicas), not to
 *   the sentinels; `sentinel_password=` (and `sentinel_username=`) in the
 *   query do that;
 * - `wait_replicas=N` (default 1) and `wait_ms=T` (default 1000): pushes and
 *   revocations are acknowledged only once N replicas have them (Redis
 *   `WAIT`), so a failover cannot lose an acknowledged one; `wait_replicas=0`
 *   turns this off.
 * - `rediss+sentinel://` speaks TLS to the sentinels and to the master.
 *
 * A malformed address fails fast; the error never repeats the address (it
 * may hold a password).
 */
import { Redis, type RedisOptions } from "ioredis";

/** Port of a sentinel when an address gives none. */
export const SENTINEL_DEFAULT_PORT = 26379;
/** Replicas a push or a revocation must reach before it is acknowledged (Sentinel form). */
export const DEFAULT_WAIT_REPLICAS = 1;
/** How long a push or revocation waits for them, ms. */
export const DEFAULT_WAIT_MS = 1000;

/** A parsed Redis address. */
export type RedisAddress =
  | { readonly kind: "direct"; readonly url: string }
  | {
      readonly kind: "sentinel";
      readonly sentinels: readonly { readonly host: string; readonly port: number }[];
      /** The master's name in the sentinels' configuration. */
      readonly name: string;
      readonly db: number;
      readonly tls: boolean;
      readonly username?: string;
      readonly password?: string;
      readonly sentinelUsername?: string;
      readonly sentinelPassword?: string;
      /** Replicas an acknowledged push or revocation must have reached (0: none). */
      readonly waitReplicas: number;
      readonly waitMs: number;
    };

const SENTINEL_SCHEME = /^(rediss?)\+sentinel:\/\/(.*)$/i;
const QUERY_KEYS = new Set(["sentinel_password", "sentinel_username", "wait_replicas", "wait_ms"]);

/** Thrown for an address that is not one of the accepted forms; the message never contains the address. */
export class RedisAddressError extends TypeError {
  constructor(what: string) {
    super(`Redis address: ${what} (expected redis://host:port, rediss://..., or redis+sentinel://host:26379,host2:26379/mastername)`);
    this.name = "RedisAddressError";
  }
}

/**
 * Parses `address` into a {@link RedisAddress}.
 * @throws RedisAddressError naming what is wrong, never echoing the address.
 */
export function parseRedisAddress(address: string): RedisAddress {
  if (typeof address !== "string") throw new RedisAddressError(`expected string, got ${typeof address}`);
  if (/^rediss?:\/\//i.test(address)) return { kind: "direct", url: address };
  const m = SENTINEL_SCHEME.exec(address);
  if (!m) throw new RedisAddressError("unknown scheme");
  const tls = m[1]!.toLowerCase() === "rediss";
  let rest = m[2]!;
  let query = "";
  const q = rest.indexOf("?");
  if (q >= 0) {
    query = rest.slice(q + 1);
    rest = rest.slice(0, q);
  }
  // The authority ends at the first '/'; credentials end at the last '@' before it.
  const slash = rest.indexOf("/");
  if (slash < 0) throw new RedisAddressError("no master name (the path after the sentinels)");
  let authority = rest.slice(0, slash);
  const path = rest.slice(slash + 1);
  let username: string | undefined;
  let password: string | undefined;
  const at = authority.lastIndexOf("@");
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    authority = authority.slice(at + 1);
    const colon = userinfo.indexOf(":");
    const u = decode(colon >= 0 ? userinfo.slice(0, colon) : userinfo, "user name");
    if (u) username = u;
    if (colon >= 0) password = decode(userinfo.slice(colon + 1), "password");
  }
  const sentinels = authority.split(",").map(hostPort);
  if (sentinels.length === 0 || authority === "") throw new RedisAddressError("no sentinel address");
  const segments = path.split("/");
  if (segments.length > 2) throw new RedisAddressError("too many path segments (expected /mastername or /mastername/db)");
  const name = decode(segments[0]!, "master name");
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new RedisAddressError("the master name must be 1 to 64 letters, digits, '.', '_' or '-'");
  let db = 0;
  if (segments.length === 2) {
    if (!/^\d{1,4}$/.test(segments[1]!)) throw new RedisAddressError("the database must be a number");
    db = Number(segments[1]);
  }
  const params = new URLSearchParams(query);
  for (const k of params.keys()) if (!QUERY_KEYS.has(k)) throw new RedisAddressError(`unknown option "${k.slice(0, 32).replace(/[^\w-]/g, "?")}" (known: ${[...QUERY_KEYS].join(", ")})`);
  const waitReplicas = intParam(params, "wait_replicas", DEFAULT_WAIT_REPLICAS, 0, 16);
  const waitMs = intParam(params, "wait_ms", DEFAULT_WAIT_MS, 1, 60_000);
  const sentinelUsername = params.get("sentinel_username") ?? undefined;
  const sentinelPassword = params.get("sentinel_password") ?? undefined;
  return {
    kind: "sentinel",
    sentinels,
    name,
    db,
    tls,
    waitReplicas,
    waitMs,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(sentinelUsername ? { sentinelUsername } : {}),
    ...(sentinelPassword ? { sentinelPassword } : {}),
  };
}

/** True when `address` is a Redis address of either form (no connection is made). */
export function isRedisAddress(address: string): boolean {
  try {
    parseRedisAddress(address);
    return true;
  } catch {
    return false;
  }
}

/**
 * An `ioredis` client for `address` with `options` (timeouts, retry
 * strategy, offline queue...). For a Sentinel address the client asks the
 * sentinels for the master on every (re)connection, checks that it is
 * one (ROLE), and reconnects when the one it talks to turns read-only (a
 * demoted master that came back as a replica).
 */
export function createRedis(address: string | RedisAddress, options: RedisOptions = {}): Redis {
  const a = typeof address === "string" ? parseRedisAddress(address) : address;
  if (a.kind === "direct") return new Redis(a.url, options);
  return new Redis({
    ...options,
    sentinels: a.sentinels.map((s) => ({ host: s.host, port: s.port })),
    name: a.name,
    role: "master",
    db: a.db,
    ...(a.username !== undefined ? { username: a.username } : {}),
    ...(a.password !== undefined ? { password: a.password } : {}),
    ...(a.sentinelUsername !== undefined ? { sentinelUsername: a.sentinelUsername } : {}),
    ...(a.sentinelPassword !== undefined ? { sentinelPassword: a.sentinelPassword } : {}),
    ...(a.tls ? { tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
    // Ask the sentinels again soon after a master vanishes: they promote within seconds.
    sentinelRetryStrategy: (attempt: number) => Math.min(attempt * 100, 1000),
    // Not ioredis's failover detector: under load it was seen to leave a
    // command connection ended (status "end", no more reconnects) after a
    // failover. The master's death closes the socket anyway, and each
    // reconnect asks the sentinels afresh.
    failoverDetector: false,
    // A master that came back as a replica answers writes with READONLY: find the real one.
    reconnectOnError: (e: Error) => (e.message.startsWith("READONLY") ? 1 : false),
  });
}

/** What to log about an address: its form and hosts, never credentials. */
export function describeRedisAddress(address: string | RedisAddress): string {
  const a = typeof address === "string" ? parseRedisAddress(address) : address;
  if (a.kind === "sentinel") return `sentinel master "${a.name}" via ${a.sentinels.map((s) => `${s.host}:${s.port}`).join(",")}`;
  try {
    const u = new URL(a.url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return "redis";
  }
}

function hostPort(s: string): { host: string; port: number } {
  const t = s.trim();
  // [v6]:port, [v6], host:port, host
  const m = /^\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?$/.exec(t) ?? /^([A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(t);
  if (!m) throw new RedisAddressError("a sentinel address is not host or host:port");
  const port = m[2] === undefined ? SENTINEL_DEFAULT_PORT : Number(m[2]);
  if (port < 1 || port > 65535) throw new RedisAddressError("a sentinel port is out of range");
  return { host: m[1]!, port };
}

function decode(s: string, what: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new RedisAddressError(`the ${what} is not valid percent-encoding`);
  }
}

function intParam(p: URLSearchParams, key: string, dflt: number, min: number, max: number): number {
  const v = p.get(key);
  if (v === null) return dflt;
  if (!/^\d{1,6}$/.test(v) || Number(v) < min || Number(v) > max) throw new RedisAddressError(`${key} must be an integer from ${min} to ${max}`);
  return Number(v);
}
