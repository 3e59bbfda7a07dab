/**
 * The server API's limit on failed authentications per address
 * (docs/BACKEND.md "Server API", "Failed authentications"): a sliding
 * window. An address (an IPv6 address by its /64) that has `limit` failures
 * within the last `windowMs` gets 429 until the oldest of the `limit` most
 * recent ones is `windowMs` old. A success neither counts nor resets; a call
 * refused with 429 is not counted. With `--redis` every node counts in one
 * sorted set per address, updated by one script (atomic), so the limit holds
 * for the cluster, not per node; when Redis does not answer, the node falls
 * back to its own count until it does.
 */
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { createRedis, parseRedisAddress } from "../store/redis-address.js";

/** Counts failures per key. */
export interface FailureWindow {
  /** Milliseconds until `key` may call again; 0 when it is under the limit. */
  wait(key: string): Promise<number>;
  /** Records one failure of `key`, now. */
  fail(key: string): Promise<void>;
  close(): Promise<void>;
}

/** Keys tracked at most by one node's window; past it the oldest are forgotten first. */
const MAX_KEYS = 100_000;

/** Failure times per key in this process. */
export class LocalFailureWindow implements FailureWindow {
  /** key → times of its latest failures (ms, ascending, at most `limit`); Map order is first-failure order. */
  readonly #times = new Map<string, number[]>();
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #now: () => number;

  constructor(limit: number, windowMs: number, now: () => number = Date.now) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`"limit" expected a positive integer, got ${limit}`);
    if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`"windowMs" expected a positive integer, got ${windowMs}`);
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  async wait(key: string): Promise<number> {
    const times = this.#live(key, this.#now());
    if (!times || times.length < this.#limit) return 0;
    return times[times.length - this.#limit]! + this.#windowMs - this.#now();
  }

  async fail(key: string): Promise<void> {
    const now = this.#now();
    const times = this.#live(key, now) ?? [];
    times.push(now);
    if (times.length > this.#limit) times.splice(0, times.length - this.#limit);
    this.#times.delete(key); // re-insert: the Map's order stays by latest activity
    this.#times.set(key, times);
    if (this.#times.size > MAX_KEYS) this.#times.delete(this.#times.keys().next().value!);
  }

  async close(): Promise<void> {
    this.#times.clear();
  }

  /** The key's failures still inside the window (expired ones dropped). */
  #live(key: string, now: number): number[] | undefined {
    const times = this.#times.get(key);
    if (!times) return undefined;
    const from = now - this.#windowMs;
    let i = 0;
    while (i < times.length && times[i]! <= from) i++;
    if (i === times.length) {
      this.#times.delete(key);
      return undefined;
    }
    if (i > 0) times.splice(0, i);
    return times;
  }
}

/**
 * One script for both calls, run atomically by Redis on its own clock (so the
 * nodes' clocks do not matter). KEYS[1] the address's sorted set (score: the
 * failure's time in ms); ARGV: window ms, limit, "fail" or "wait", a unique
 * member. Keeps at most `limit` members; returns the ms to wait (0: allowed).
 */
const SCRIPT = `
redis.replicate_commands() -- TIME before writes: replicate the effects (the default from Redis 7; needed before it)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[3] == 'fail' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(limit + 1))
  redis.call('PEXPIRE', KEYS[1], window)
end
local n = redis.call('ZCARD', KEYS[1])
if n < limit then return 0 end
local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
`;

/** Failures counted in Redis, shared by every node; this node's own count stands in while Redis does not answer. */
export class RedisFailureWindow implements FailureWindow {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #local: LocalFailureWindow;

  /** @param url a Redis address, Sentinel form included (server/store/redis-address.ts). */
  constructor(url: string, limit: number, windowMs: number, prefix = "psimbols:") {
    this.#local = new LocalFailureWindow(limit, windowMs);
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#prefix = `${prefix}api-failures:`;
    this.#redis = createRedis(parseRedisAddress(url), { lazyConnect: true, enableOfflineQueue: true, maxRetriesPerRequest: 1, commandTimeout: 1000 });
    this.#redis.on("error", () => undefined); // a failure falls back to the local count, per call
    this.#redis.defineCommand("psimbolsApiFailures", { numberOfKeys: 1, lua: SCRIPT });
  }

  async wait(key: string): Promise<number> {
    try {
      return await this.#run(key, "wait");
    } catch {
      return this.#local.wait(key);
    }
  }

  async fail(key: string): Promise<void> {
    await this.#local.fail(key);
    try {
      await this.#run(key, "fail");
    } catch {
      // counted locally; the shared count misses this one
    }
  }

  async close(): Promise<void> {
    this.#redis.disconnect();
    await this.#local.close();
  }

  async #run(key: string, mode: "wait" | "fail"): Promise<number> {
    const member = randomUUID();
    const run = (this.#redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>).psimbolsApiFailures!;
    return Number(await run.call(this.#redis, this.#prefix + key, this.#windowMs, this.#limit, mode, member));
  }
}
