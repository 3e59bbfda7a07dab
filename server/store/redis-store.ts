/**
 * The shared store of a multi-node deployment, on Redis through `ioredis`
 * (DESIGN.md §6). Every node runs one `RedisStore` with the same prefix.
 *
 * Key layout (`P` is the prefix, `psimbols:` by default):
 *
 * | key                   | type   | value                                            | expiry            |
 * |-----------------------|--------|--------------------------------------------------|-------------------|
 * | `P ch:<id>`           | hash   | identity, key (wrapped), type, validUntil, ttl, node, pushFrom, binding, retired, app (wrapped; docs/BACKEND.md), holder, instance, conn (where its socket is: `Holder`) | `validUntil` |
 * | `P active:<identity>` | string | id of the identity's active (live) channel       | same as its channel |
 * | `P rl:<key>:<window>` | string | hit counter of one fixed window                  | one window        |
 * | `P pseq:<identity>`   | string | last push seq given out                          | `pushSeqTtlMs` (400 d) after the last push |
 * | `P push:<identity>`   | stream | kept pushes: `s` seq, `e` end of life (ms, Redis clock), `d` data (wrapped) | `ageMs` after the last push |
 * | `P lease:<key>`       | string | owner of a lease (an identity move: `move:<identity>`) | the lease's ttl |
 * | `P node:<instance>`   | string | a live node instance (its beat, `PSETEX`)        | the beat's ttl    |
 *
 * A retired channel keeps its hash, with `retired` = the reason, until its
 * expiry: a tombstone (see `ChannelRecord.retired`).
 *
 * Pub/sub channel `P ev:<identity>` carries that identity's events as JSON;
 * a node subscribes to it only while it watches the identity. Push events
 * carry the data wrapped, as kept; the subscriber unwraps it.
 *
 * Channel keys and pushed data are stored only wrapped (server/store/wrap.ts,
 * AES-256-GCM with the channel id, or `identity:seq` for a push, as additional
 * data); the plaintext never reaches Redis, so neither a dump nor an ioredis
 * error (which may carry command arguments) can reveal it. Every write that
 * publishes an event is one Lua script, so the state change and its event are
 * atomic.
 *
 * Push numbering: the wrap must bind the seq (so kept entries cannot be
 * swapped) but Lua cannot encrypt, so the seq is chosen before the script
 * runs and the script is a compare-and-set: it appends and publishes only if
 * the seq is the counter + 1, otherwise it returns the counter and the node
 * re-wraps and retries. The counter moves only together with the append and
 * the publish, so no number is ever skipped (a reserve-then-append scheme
 * leaves a hole when a node dies in between) and stream order is seq order.
 * Pushes from one node to one identity are serialised locally, so the
 * compare-and-set only retries when two nodes push to one identity at once.
 *
 * Failure model: commands fail fast while Redis is down (no offline queue,
 * no blind resend of in-flight writes), every command has a timeout, and the
 * connections reconnect forever with capped backoff. Errors surface as
 * {@link StoreUnavailableError} (code `unavailable`).
 */
import { createHash } from "node:crypto";
import type { Redis, RedisOptions } from "ioredis";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { fromUtf8, utf8 } from "../../shared/encoding.js";
import { channelTypes, isChannelType } from "../../shared/frames.js";
import { PUSH_SEQ_TTL_MS, checkAfter, checkHolder, checkLease, checkPush } from "./memory-store.js";
import { type ChannelApp, type ChannelRecord, type Holder, type KeptPush, type PushWindow, type RetireReason, type Store, type StoreEvent, type StoreLogger, silentStoreLogger } from "./store.js";
import { KeyWrapper, WRAP_OVERHEAD_BYTES, checkWrapKey } from "./wrap.js";
import { type RedisAddress, createRedis, parseRedisAddress } from "./redis-address.js";

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /**
   * `redis://[user:password@]host:port[/db]`, `rediss://...`, or a Sentinel
   * setup `redis+sentinel://host:26379,host2:26379/mastername` (see
   * server/store/redis-address.ts). Never logged.
   */
  url: string;
  /** 32-byte key-wrapping key (see `parseWrapKey`). Copied; the caller may wipe it. */
  wrapKey: Uint8Array;
  /** Prefix of every key and pub/sub channel. Default `"psimbols:"`. */
  prefix?: string;
  /** This node's name, for logs and the Redis client name. */
  node?: string;
  /** Parent logger; a child named `store.redis` is used. Default: silent. */
  logger?: StoreLogger;
  /** Timeout of every command, ms. Default 2000. */
  commandTimeoutMs?: number;
  /** Timeout of {@link RedisStore.ping}, ms. Default 1000. */
  pingTimeoutMs?: number;
  /** Time to establish a connection, and the longest a call waits for the first one, ms. Default 2000. */
  connectTimeoutMs?: number;
  /** First reconnect delay, ms (doubles per attempt, see {@link retryDelayMs}). Default 50. */
  retryBaseMs?: number;
  /** Cap of the reconnect delay, ms; reconnecting never stops. Default 2000. */
  retryMaxMs?: number;
  /** Most records {@link RedisStore.listChannels} returns. Default 10000. */
  listLimit?: number;
  /** Clock, for the rate-limit window and the channel TTL. Default `Date.now`. (Push ages use Redis's clock.) */
  now?: () => number;
  /**
   * How long an identity's push counter outlives its last push, ms. Default
   * 400 days: longer than any channel (366 days at most), so a client that
   * remembers a seq never meets a counter that restarted at 1 while its
   * channel lives. Never less than the window's age.
   */
  pushSeqTtlMs?: number;
  /** Largest push accepted, bytes of UTF-8; the same on every node (a node reads no larger one). Default 1 MiB. */
  maxPushBytes?: number;
}

/** The store could not be reached or answered with an error. Code `unavailable`. */
export class StoreUnavailableError extends PsimbolsError {
  constructor(op: string, options?: { cause?: unknown }) {
    super(ErrorCode.unavailable, `store unavailable (${op})`, options);
    this.name = "StoreUnavailableError";
  }
}

/** A stored record is malformed (not one this code wrote). Code `unavailable`. */
export class StoreCorruptError extends PsimbolsError {
  constructor(what: string) {
    super(ErrorCode.unavailable, `store record malformed: ${what}`);
    this.name = "StoreCorruptError";
  }
}

/**
 * Reconnect delay for the `attempt`-th try (1-based): exponential from
 * `baseMs`, capped at `maxMs`, with "equal jitter" (half fixed, half random)
 * so that nodes that lost Redis together do not return in lockstep.
 */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

/** A Lua script run by EVALSHA, falling back to EVAL after a Redis restart (NOSCRIPT). */
class Script {
  readonly lua: string;
  readonly sha: string;
  constructor(lua: string) {
    this.lua = lua;
    this.sha = createHash("sha1").update(lua).digest("hex");
  }
}

/*
 * activate. KEYS: ch:<new>, active:<identity>.
 * ARGV: id, px, identity, wrapped key, type, validUntil, ttl, node, prefix, event channel,
 * wrapped app fields ('' for none), pushFrom ('' for none), holder node, instance, conn ('' for none).
 * Reads the old active id, writes the new record and pointer with the same
 * expiry (nothing when already expired, px <= 0), marks the old record
 * retired ("replaced", a tombstone keeping its own expiry) and announces it.
 * Returns the old id only when its record was still live (an expired or
 * already retired one is not "replaced").
 */
const ACTIVATE = new Script(`
local old = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], 'identity', ARGV[3], 'key', ARGV[4], 'type', ARGV[5],
    'validUntil', ARGV[6], 'ttl', ARGV[7], 'node', ARGV[8])
  if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'app', ARGV[11]) end
  if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'pushFrom', ARGV[12]) end
  if ARGV[13] ~= '' then
    redis.call('HSET', KEYS[1], 'holder', ARGV[13], 'instance', ARGV[14])
    if ARGV[15] ~= '' then redis.call('HSET', KEYS[1], 'conn', ARGV[15]) end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[2])
end
if old and old ~= ARGV[1] then
  local oldKey = ARGV[9] .. 'ch:' .. old
  if redis.call('EXISTS', oldKey) == 1 and redis.call('HEXISTS', oldKey, 'retired') == 0 then
    redis.call('HSET', oldKey, 'retired', 'replaced')
    redis.call('PUBLISH', ARGV[10], cjson.encode({kind = 'retired', identity = ARGV[3], channel = old, reason = 'replaced'}))
    return old
  end
end
return false
`);

/*
 * retire. KEYS: ch:<id>. ARGV: id, reason, prefix.
 * Marks the record retired (HSET keeps its expiry), clears the identity's
 * pointer only if it still points here, announces it. Returns the identity,
 * or false for an unknown id or a tombstone.
 */
const RETIRE = new Script(`
local identity = redis.call('HGET', KEYS[1], 'identity')
if not identity or redis.call('HEXISTS', KEYS[1], 'retired') == 1 then return false end
redis.call('HSET', KEYS[1], 'retired', ARGV[2])
local active = ARGV[3] .. 'active:' .. identity
if redis.call('GET', active) == ARGV[1] then redis.call('DEL', active) end
redis.call('PUBLISH', ARGV[3] .. 'ev:' .. identity, cjson.encode({kind = 'retired', identity = identity, channel = ARGV[1], reason = ARGV[2]}))
return identity
`);

/*
 * retireIdentity. KEYS: active:<identity>. ARGV: identity, reason, prefix, event channel.
 * Marks the active live channel retired (a tombstone), clears the pointer.
 * Returns the retired ids (none or one).
 */
const RETIRE_IDENTITY = new Script(`
local id = redis.call('GET', KEYS[1])
if not id then return {} end
redis.call('DEL', KEYS[1])
local rec = ARGV[3] .. 'ch:' .. id
if redis.call('EXISTS', rec) == 0 or redis.call('HEXISTS', rec, 'retired') == 1 then return {} end
redis.call('HSET', rec, 'retired', ARGV[2])
redis.call('PUBLISH', ARGV[4], cjson.encode({kind = 'retired', identity = ARGV[1], channel = id, reason = ARGV[2]}))
return {id}
`);

/*
 * bind. KEYS: ch:<channel>. ARGV: identity, binding, event channel, channel id,
 * holder node, instance, conn ('' for none).
 * Does nothing on a tombstone. Records the binding and its holder only on a
 * live record of that identity (HSET on a missing key would create one without
 * expiry), then announces it.
 */
const BIND = new Script(`
if redis.call('HEXISTS', KEYS[1], 'retired') == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'identity') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'binding', ARGV[2], 'holder', ARGV[5], 'instance', ARGV[6])
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'conn', ARGV[7]) else redis.call('HDEL', KEYS[1], 'conn') end
end
redis.call('PUBLISH', ARGV[3], cjson.encode({kind = 'rebound', identity = ARGV[1], channel = ARGV[4], binding = ARGV[2]}))
return 1
`);

/*
 * release. KEYS: ch:<channel>. ARGV: conn.
 * Compare-and-set: drops `conn` only while it is this connection's (a resume
 * elsewhere wrote its own since, and must not be undone). Returns 1 or 0.
 */
const RELEASE = new Script(`
if redis.call('HGET', KEYS[1], 'conn') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'conn')
  return 1
end
return 0
`);

/* unlease. KEYS: lease:<key>. ARGV: owner. Deletes the lease only if `owner` holds it. */
const UNLEASE = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`);

/* activeChannel. KEYS: active:<identity>. ARGV: prefix. The id, if its record is live (not a tombstone). */
const ACTIVE = new Script(`
local id = redis.call('GET', KEYS[1])
if not id then return false end
local rec = ARGV[1] .. 'ch:' .. id
if redis.call('EXISTS', rec) == 1 and redis.call('HEXISTS', rec, 'retired') == 0 then return id end
return false
`);

/*
 * push. KEYS: pseq:<identity>, push:<identity>.
 * ARGV: seq, wrapped data, count, ageMs, counter px, event channel, identity,
 * channel ('' for none), publish ('1', or '0' when the caller publishes the
 * event itself once a replica has the push: see RedisStore.push).
 * Compare-and-set on the counter: only when seq = counter + 1 does it move
 * the counter, append, trim and publish, all at once; otherwise it changes
 * nothing and returns the counter so the caller re-wraps for the next seq.
 * Entry ids are Redis's own time-based ids ('*'), always rising, so MINID
 * trims by age; seq order is stream order because only this script appends.
 * Trimming is exact ('='): the window is exactly `count` entries, and each
 * push evicts at most one entry by count, so exactness costs little. `e`
 * (end of life on Redis's clock) lets readers hide an entry past its age
 * before a later push trims it. Returns {1, seq} or {0, counter}.
 */
const PUSH = new Script(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq ~= cur + 1 then return {0, cur} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local age = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], '*', 's', ARGV[1], 'e', string.format('%d', now + age), 'd', ARGV[2])
if now > age then redis.call('XTRIM', KEYS[2], 'MINID', '=', string.format('%d', now - age)) end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[9] == '1' then
  local ev = {kind = 'push', identity = ARGV[7], seq = seq, data = ARGV[2]}
  if ARGV[8] ~= '' then ev.channel = ARGV[8] end
  redis.call('PUBLISH', ARGV[6], cjson.encode(ev))
end
return {1, seq}
`);

/*
 * pushesSince. KEYS: pseq:<identity>, push:<identity>. ARGV: after.
 * Returns {counter, now (ms, Redis clock), newest (counter - after) entries,
 * newest first}: with no hole in the numbering, those are exactly the ones
 * after `after` if they are all still kept.
 */
const PUSHES_SINCE = new Script(`
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local need = last - tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if need <= 0 then return {last, now, {}} end
return {last, now, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', need)}
`);

/** Attempts of the push compare-and-set before giving up (only concurrent pushes from other nodes make one fail). */
const PUSH_ATTEMPTS = 100;
const reasons: ReadonlySet<string> = new Set<RetireReason>(["replaced", "revoked", "closed", "expired"]);
/** Identities per SUBSCRIBE command when resubscribing after a reconnect. */
const SUBSCRIBE_BATCH = 1000;
const SCAN_COUNT = 256;

/**
 * {@link Store} on Redis: channels with a Redis TTL at `validUntil`, atomic
 * activation and retirement in Lua, events over pub/sub on a dedicated
 * subscriber connection, one pub/sub channel per watched identity.
 */
export class RedisStore implements Store {
  readonly #cmd: Redis;
  readonly #sub: Redis;
  readonly #prefix: string;
  readonly #wrapper: Promise<KeyWrapper>;
  readonly #log: StoreLogger;
  readonly #now: () => number;
  readonly #pingTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #listLimit: number;
  readonly #pushSeqTtlMs: number;
  readonly #maxPushBytes: number;
  readonly #handlers: ((e: StoreEvent) => void)[] = [];
  readonly #resyncHandlers: (() => void)[] = [];
  /** Reference counts of watched identities: the desired subscription set. */
  readonly #watched = new Map<string, number>();
  readonly #cmdFirstReady: Promise<void>;
  readonly #subFirstReady: Promise<void>;
  #cmdEverReady = false;
  #subEverReady = false;
  /** The last SUBSCRIBE not yet acknowledged; writes wait for it (see #barrier). */
  #subPending: Promise<void> | undefined;
  /** Events are handed to handlers one after another, in arrival order, although a push must be unwrapped first. */
  #deliveries: Promise<void> = Promise.resolve();
  /** Pushes of this node per identity, run one at a time; `last` is the seq the previous one got. */
  readonly #pushQueues = new Map<string, { tail: Promise<void>; last: number | undefined; waiting: number }>();
  #closed = false;
  /** A resync waits for the command connection's next `ready`. */
  #resyncWaiting = false;
  /** Sentinel form: replicas a push or retirement must reach before it is acknowledged (Redis WAIT). */
  readonly #wait: { replicas: number; ms: number } | undefined;

  /**
   * Connects (in the background) and returns at once; calls made before the
   * first connection wait for it up to `connectTimeoutMs`.
   * @throws TypeError / RangeError for a malformed option (the message names the option, never its value).
   */
  constructor(options: RedisStoreOptions) {
    if (typeof options?.url !== "string") throw new TypeError('"url" expected a redis://, rediss:// or redis+sentinel:// address');
    const address: RedisAddress = parseRedisAddress(options.url);
    this.#wait = address.kind === "sentinel" && address.waitReplicas > 0 ? { replicas: address.waitReplicas, ms: address.waitMs } : undefined;
    checkWrapKey(options.wrapKey);
    const prefix = options.prefix ?? "psimbols:";
    if (typeof prefix !== "string") throw new TypeError(`"prefix" expected string, got ${typeof prefix}`);
    this.#prefix = prefix;
    const commandTimeoutMs = positive("commandTimeoutMs", options.commandTimeoutMs, 2000);
    this.#pingTimeoutMs = positive("pingTimeoutMs", options.pingTimeoutMs, 1000);
    this.#connectTimeoutMs = positive("connectTimeoutMs", options.connectTimeoutMs, 2000);
    const retryBaseMs = positive("retryBaseMs", options.retryBaseMs, 50);
    // Under Sentinel the master moves: after a failover, reach the new one within half a second.
    const retryMaxMs = positive("retryMaxMs", options.retryMaxMs, address.kind === "sentinel" ? 500 : 2000);
    this.#listLimit = positive("listLimit", options.listLimit, 10_000);
    this.#pushSeqTtlMs = positive("pushSeqTtlMs", options.pushSeqTtlMs, PUSH_SEQ_TTL_MS);
    this.#maxPushBytes = positive("maxPushBytes", options.maxPushBytes, 1 << 20);
    this.#now = options.now ?? Date.now;
    const node = options.node ?? "";
    this.#log = (options.logger ?? silentStoreLogger).child({ component: "store.redis", ...(node ? { node } : {}) });

    const raw = new Uint8Array(options.wrapKey);
    this.#wrapper = KeyWrapper.create(raw).finally(() => raw.fill(0));
    this.#wrapper.catch(() => {}); // surfaced by the first call that needs it

    const common: RedisOptions = {
      // Fail fast while disconnected instead of queueing: the server answers
      // `unavailable` and the client retries; a queued write replayed minutes
      // later could resurrect a channel that was meanwhile revoked.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      autoResendUnfulfilledCommands: false,
      commandTimeout: commandTimeoutMs,
      connectTimeout: this.#connectTimeoutMs,
      retryStrategy: (attempt: number) => retryDelayMs(attempt, retryBaseMs, retryMaxMs),
      // close() during an outage ends a socket that never connected and so never
      // emits "close": ioredis then waits this long (default 2 s) before destroying
      // it, holding the process open on shutdown.
      disconnectTimeout: 200,
      ...(/^[\x21-\x7e]{1,64}$/.test(node) ? { connectionName: `psimbols:${node}` } : {}),
    };
    this.#cmd = createRedis(address, common);
    // The subscriber resubscribes from #watched itself on every `ready`:
    // ioredis's autoResubscribe only restores subscriptions acknowledged before
    // the drop, so a watch() made while Redis was down would be lost.
    this.#sub = createRedis(address, { ...common, autoResubscribe: false });

    this.#cmdFirstReady = new Promise((resolve) => this.#cmd.once("ready", resolve));
    this.#subFirstReady = new Promise((resolve) => this.#sub.once("ready", resolve));
    this.#monitor(this.#cmd, "commands", () => {
      this.#cmdEverReady = true;
    });
    this.#monitor(this.#sub, "events", () => this.#onSubscriberReady());
    this.#sub.on("message", (channel: string, message: string) => this.#onMessage(channel, message));
  }

  async activate(rec: ChannelRecord): Promise<string | undefined> {
    checkRecord(rec);
    if (rec.holder) checkHolder(rec.holder);
    return this.#run("activate", async () => {
      const wrapper = await this.#wrapper;
      const wrapped = await wrapper.wrap(rec.key, rec.id);
      const app = rec.app ? await wrapper.wrap(utf8(JSON.stringify(rec.app)), appAad(rec.id)) : "";
      // Relative expiry computed on this node's clock, which also chose
      // validUntil: skew between node and Redis clocks does not shift it.
      const px = Math.ceil(rec.validUntil - this.#now());
      await this.#barrier();
      const old = await this.#eval(
        ACTIVATE,
        [this.#chKey(rec.id), this.#activeKey(rec.identity)],
        [rec.id, px, rec.identity, wrapped, rec.type, rec.validUntil, rec.ttl, rec.node, this.#prefix, this.#evKey(rec.identity), app, rec.pushFrom ?? "", rec.holder?.node ?? "", rec.holder?.instance ?? "", rec.holder?.conn ?? ""],
      );
      return typeof old === "string" ? old : undefined;
    });
  }

  async getChannel(id: string): Promise<ChannelRecord | undefined> {
    str("id", id);
    return this.#run("getChannel", async () => {
      const h = await this.#cmd.hgetall(this.#chKey(id));
      return this.#decode(id, h);
    });
  }

  async activeChannel(identity: string): Promise<string | undefined> {
    str("identity", identity);
    return this.#run("activeChannel", async () => {
      const id = await this.#eval(ACTIVE, [this.#activeKey(identity)], [this.#prefix]);
      return typeof id === "string" ? id : undefined;
    });
  }

  async retire(id: string, reason: RetireReason): Promise<boolean> {
    str("id", id);
    checkReason(reason);
    return this.#run("retire", async () => {
      await this.#barrier();
      const identity = await this.#eval(RETIRE, [this.#chKey(id)], [id, reason, this.#prefix]);
      await this.#replicated("retire");
      return typeof identity === "string";
    });
  }

  async retireIdentity(identity: string, reason: RetireReason): Promise<string[]> {
    str("identity", identity);
    checkReason(reason);
    return this.#run("retireIdentity", async () => {
      await this.#barrier();
      const ids = await this.#eval(RETIRE_IDENTITY, [this.#activeKey(identity)], [identity, reason, this.#prefix, this.#evKey(identity)]);
      await this.#replicated("retireIdentity");
      return Array.isArray(ids) ? ids.filter((x): x is string => typeof x === "string") : [];
    });
  }

  async bind(channel: string, identity: string, binding: string, holder: Holder): Promise<void> {
    str("channel", channel);
    str("identity", identity);
    str("binding", binding);
    checkHolder(holder);
    return this.#run("bind", async () => {
      await this.#barrier();
      await this.#eval(BIND, [this.#chKey(channel)], [identity, binding, this.#evKey(identity), channel, holder.node, holder.instance, holder.conn ?? ""]);
    });
  }

  async release(channel: string, conn: string): Promise<boolean> {
    str("channel", channel);
    str("conn", conn);
    return this.#run("release", async () => (await this.#eval(RELEASE, [this.#chKey(channel)], [conn])) === 1);
  }

  /** One PSETEX, a command nothing else sends (so a count of commands can tell beats apart); expiry on Redis's clock. */
  async beat(instance: string, ttlMs: number): Promise<void> {
    str("instance", instance);
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) throw new RangeError(`"ttlMs" expected a positive integer`);
    await this.#run("beat", async () => void (await this.#cmd.psetex(this.#nodeKey(instance), ttlMs, "1")));
  }

  /** One MGET of the instances asked about. */
  async liveInstances(instances: Iterable<string>): Promise<Set<string>> {
    const ids = [...new Set(instances)];
    for (const i of ids) str("instance", i);
    if (ids.length === 0) return new Set();
    return this.#run("liveInstances", async () => {
      const beats = await this.#cmd.mget(...ids.map((i) => this.#nodeKey(i)));
      return new Set(ids.filter((_, k) => beats[k] !== null));
    });
  }

  async listChannels(): Promise<ChannelRecord[]> {
    return this.#run("listChannels", async () => {
      const head = this.#prefix + "ch:";
      const pattern = globEscape(head) + "*";
      const keys = new Set<string>(); // SCAN may return a key twice
      let cursor = "0";
      do {
        const [next, batch] = await this.#cmd.scan(cursor, "MATCH", pattern, "COUNT", SCAN_COUNT);
        cursor = next;
        for (const k of batch) if (keys.size < this.#listLimit) keys.add(k);
      } while (cursor !== "0" && keys.size < this.#listLimit);
      if (keys.size === 0) return [];
      const ids = [...keys].map((k) => k.slice(head.length));
      const replies = (await this.#cmd.pipeline(ids.map((id) => ["hgetall", this.#chKey(id)])).exec()) ?? [];
      const decoded = await Promise.allSettled(
        ids.map((id, i) => {
          const [err, h] = replies[i] ?? [new Error("missing reply"), undefined];
          if (err) throw err;
          return this.#decode(id, h as Record<string, string>);
        }),
      );
      const out: ChannelRecord[] = [];
      decoded.forEach((d, i) => {
        if (d.status === "fulfilled") {
          if (d.value && !d.value.retired) out.push(d.value);
        } else if (d.reason instanceof PsimbolsError) {
          // One bad record must not hide the others from an operator.
          this.#log.warn("skipping unreadable channel record", { channel: ids[i], error: d.reason.name });
        } else {
          throw d.reason; // a failed reply: the listing is incomplete
        }
      });
      return out;
    });
  }

  async push(identity: string, data: string, window: PushWindow, channel?: string): Promise<number> {
    checkPush(identity, data, window, channel);
    const bytes = utf8(data);
    if (bytes.length > this.#maxPushBytes) throw new RangeError(`"data" expected at most ${this.#maxPushBytes} bytes`);
    return this.#run("push", () =>
      this.#queuePush(identity, async (last) => {
        if (!this.#wait) return (await this.#pushOnce(identity, bytes, window, channel, last, true)).seq;
        // Sentinel: the event goes out only once a replica has the push. Published before, a
        // failover in between would lose a push that subscribers already delivered, and the
        // new master would give its number again to the next push, which every receiver then
        // drops as a duplicate (an acknowledged push lost; seen in the soak with faults).
        // Still in this identity's queue, so the events go out in seq order.
        const { seq, wrapped } = await this.#pushOnce(identity, bytes, window, channel, last, false);
        await this.#replicated("push");
        await this.#cmd.publish(this.#evKey(identity), JSON.stringify({ kind: "push", identity, seq, data: wrapped, ...(channel !== undefined ? { channel } : {}) }));
        return seq;
      }),
    );
  }

  async pushesSince(identity: string, after: number): Promise<KeptPush[] | "gap"> {
    str("identity", identity);
    checkAfter(after);
    return this.#run("pushesSince", async () => {
      const reply = await this.#eval(PUSHES_SINCE, [this.#pseqKey(identity), this.#pushKey(identity)], [after]);
      if (!Array.isArray(reply) || reply.length !== 3 || !Array.isArray(reply[2])) throw new StoreCorruptError("push window reply");
      const last = Number(reply[0]);
      const now = Number(reply[1]);
      if (after > last) return "gap"; // a number never given out: the counter was lost
      if (after === last) return [];
      // Newest first; keep walking down while the numbers follow on and the entries are young enough.
      const kept: { seq: number; wrapped: string }[] = [];
      for (const row of reply[2] as unknown[]) {
        const f = streamFields(row);
        const seq = Number(f.s);
        if (seq !== last - kept.length || !(Number(f.e) > now) || typeof f.d !== "string") break;
        kept.push({ seq, wrapped: f.d });
      }
      if (kept.length < last - after) return "gap";
      const w = await this.#wrapper;
      const out: KeptPush[] = [];
      for (const k of kept.reverse()) out.push({ seq: k.seq, data: fromUtf8(await w.unwrap(k.wrapped, pushAad(identity, k.seq), this.#maxWrappedPush())) });
      return out;
    });
  }

  async lastPush(identity: string): Promise<number> {
    str("identity", identity);
    return this.#run("lastPush", async () => counter(await this.#cmd.get(this.#pseqKey(identity))));
  }

  async hit(key: string, windowMs: number): Promise<number> {
    str("key", key);
    if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`"windowMs" expected a positive integer`);
    return this.#run("hit", async () => {
      const k = `${this.#prefix}rl:${key}:${Math.floor(this.#now() / windowMs)}`;
      // The key names its window, so the expiry only collects it; PEXPIRE from
      // now always outlasts the window's end.
      const res = await this.#cmd.multi().incr(k).pexpire(k, windowMs).exec();
      const first = res?.[0];
      if (!first) throw new Error("transaction aborted");
      if (first[0]) throw first[0];
      return Number(first[1]);
    });
  }

  async lease(key: string, owner: string, ttlMs: number): Promise<boolean> {
    checkLease(key, owner, ttlMs);
    return this.#run("lease", async () => {
      const took = (await this.#cmd.set(`${this.#prefix}lease:${key}`, owner, "PX", ttlMs, "NX")) === "OK";
      // Sentinel form: a lease a failover could forget would let a second holder in.
      if (took) await this.#replicated("lease");
      return took;
    });
  }

  async unlease(key: string, owner: string): Promise<void> {
    checkLease(key, owner, 1);
    await this.#run("unlease", async () => void (await this.#eval(UNLEASE, [`${this.#prefix}lease:${key}`], [owner])));
  }

  /**
   * Subscribes to the identity's events on the first watch. Writes made by
   * this store after `watch()` returns wait for the subscription, so their
   * events reach this node.
   */
  watch(identity: string): void {
    str("identity", identity);
    if (this.#closed) return;
    const n = (this.#watched.get(identity) ?? 0) + 1;
    this.#watched.set(identity, n);
    if (n === 1 && this.#sub.status === "ready") this.#subscribe([this.#evKey(identity)]);
  }

  /** Unsubscribes on the last unwatch; events stop at once (filtered locally). */
  unwatch(identity: string): void {
    str("identity", identity);
    const n = (this.#watched.get(identity) ?? 0) - 1;
    if (n > 0) {
      this.#watched.set(identity, n);
      return;
    }
    if (!this.#watched.delete(identity)) return;
    if (this.#sub.status === "ready") {
      this.#sub.unsubscribe(this.#evKey(identity)).catch((e: unknown) => this.#log.debug("unsubscribe failed", { error: errName(e) }));
    }
  }

  onEvent(handler: (e: StoreEvent) => void): void {
    if (typeof handler !== "function") throw new TypeError(`"handler" expected function, got ${typeof handler}`);
    this.#handlers.push(handler);
  }

  /**
   * Registers `handler` to run after the event connection came back and
   * resubscribed. Pub/sub is lossy: events published during the gap are gone,
   * so the server re-checks every channel bound on this node (DESIGN.md §6).
   */
  onResync(handler: () => void): void {
    if (typeof handler !== "function") throw new TypeError(`"handler" expected function, got ${typeof handler}`);
    this.#resyncHandlers.push(handler);
  }

  /**
   * PING on both connections (commands and events); rejects after
   * `pingTimeoutMs`. A connection that claims to be up but does not answer
   * (half-open TCP, stalled server) is dropped and reconnected, so a silent
   * event connection cannot go on missing events.
   */
  async ping(): Promise<void> {
    if (this.#closed) throw new StoreUnavailableError("ping");
    // One deadline for the whole call: each connection's own timeout fires at
    // the same moment the caller gives up, so a stalled one is always dropped.
    const deadline = Date.now() + this.#pingTimeoutMs;
    try {
      await Promise.all([
        this.#pingOne(this.#cmd, "commands", this.#cmdFirstReady, () => this.#cmdEverReady, deadline),
        this.#pingOne(this.#sub, "events", this.#subFirstReady, () => this.#subEverReady, deadline),
      ]);
    } catch (cause) {
      throw new StoreUnavailableError("ping", { cause });
    }
  }

  /** Quits both connections and stops reconnecting. Later calls reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watched.clear();
    await Promise.allSettled([quit(this.#cmd), quit(this.#sub)]);
  }

  #chKey(id: string): string {
    return `${this.#prefix}ch:${id}`;
  }
  #activeKey(identity: string): string {
    return `${this.#prefix}active:${identity}`;
  }
  #nodeKey(instance: string): string {
    return `${this.#prefix}node:${instance}`;
  }
  #evKey(identity: string): string {
    return `${this.#prefix}ev:${identity}`;
  }
  #pseqKey(identity: string): string {
    return `${this.#prefix}pseq:${identity}`;
  }
  #pushKey(identity: string): string {
    return `${this.#prefix}push:${identity}`;
  }
  #maxWrappedPush(): number {
    return this.#maxPushBytes + WRAP_OVERHEAD_BYTES;
  }

  /**
   * Runs this node's pushes to one identity one at a time, handing each the
   * seq the previous one got, so that only other nodes' pushes can make the
   * compare-and-set retry. The queue is dropped when it empties.
   */
  async #queuePush(identity: string, fn: (last: number | undefined) => Promise<number>): Promise<number> {
    let q = this.#pushQueues.get(identity);
    if (!q) this.#pushQueues.set(identity, (q = { tail: Promise.resolve(), last: undefined, waiting: 0 }));
    const queue = q;
    queue.waiting++;
    const run = queue.tail.then(() => fn(queue.last));
    queue.tail = run.then(
      (seq) => {
        queue.last = seq;
      },
      () => {
        queue.last = undefined;
      },
    );
    try {
      return await run;
    } finally {
      if (--queue.waiting === 0 && this.#pushQueues.get(identity) === queue) this.#pushQueues.delete(identity);
    }
  }

  /** Wraps for the expected seq and runs the compare-and-set until it lands (see PUSH). */
  async #pushOnce(identity: string, bytes: Uint8Array, window: PushWindow, channel: string | undefined, last: number | undefined, publish: boolean): Promise<{ seq: number; wrapped: string }> {
    const w = await this.#wrapper;
    let seq = (last ?? counter(await this.#cmd.get(this.#pseqKey(identity)))) + 1;
    const px = Math.max(this.#pushSeqTtlMs, window.ageMs);
    await this.#barrier();
    for (let attempt = 1; ; attempt++) {
      const wrapped = await w.wrap(bytes, pushAad(identity, seq));
      const reply = await this.#eval(
        PUSH,
        [this.#pseqKey(identity), this.#pushKey(identity)],
        [seq, wrapped, window.count, window.ageMs, px, this.#evKey(identity), identity, channel ?? "", publish ? "1" : "0"],
      );
      if (!Array.isArray(reply) || reply.length !== 2) throw new StoreCorruptError("push reply");
      if (Number(reply[0]) === 1) return { seq, wrapped };
      if (attempt >= PUSH_ATTEMPTS) throw new StoreUnavailableError("push: too many concurrent pushes to one identity");
      seq = Number(reply[1]) + 1;
      // Another node got in between; after a few rounds, step aside briefly so contenders spread out.
      if (attempt >= 3) await sleep(Math.random() * Math.min(attempt, 20));
    }
  }

  /** Runs one operation: waits for the first connection, maps failures to `unavailable`. */
  async #run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreUnavailableError(op);
    try {
      await this.#gate(this.#cmdFirstReady, () => this.#cmdEverReady, this.#connectTimeoutMs);
      return await fn();
    } catch (cause) {
      if (cause instanceof PsimbolsError) throw cause;
      throw new StoreUnavailableError(op, { cause });
    }
  }

  /**
   * Before the first connection, waits for it (bounded); afterwards returns
   * at once, and a command on a lost connection fails fast in ioredis.
   */
  async #gate(first: Promise<void>, everReady: () => boolean, timeoutMs: number): Promise<void> {
    if (!everReady()) await withTimeout(first, timeoutMs);
  }

  async #pingOne(c: Redis, name: string, first: Promise<void>, everReady: () => boolean, deadline: number): Promise<void> {
    await this.#gate(first, everReady, Math.max(1, deadline - Date.now()));
    try {
      await withTimeout(c.ping(), Math.max(1, deadline - Date.now()));
    } catch (e) {
      if (e instanceof TimeoutError && c.status === "ready" && !this.#closed) {
        this.#log.warn(`${name} connection does not answer PING; reconnecting`);
        c.disconnect(true);
      }
      throw e;
    }
  }

  /**
   * Sentinel form: waits (Redis WAIT) until the writes of this connection so
   * far reached the configured replicas (or every connected replica, when
   * fewer are connected), so a failover right after cannot lose a push or
   * retirement the caller saw acknowledged.
   * @throws StoreUnavailableError when too few replicas confirm in time (the
   * write may have landed on the master: retrying a retirement is harmless,
   * retrying a push may deliver it twice).
   */
  async #replicated(op: string): Promise<void> {
    if (!this.#wait) return;
    // Only replicas that are connected now can confirm: a master left without one
    // (after a failover, until the old master returns as a replica) has nothing a
    // failover could promote over it, and waiting for replicas that do not exist
    // would only stop every write.
    const role = (await this.#cmd.call("ROLE")) as [string, unknown, unknown[]?];
    const want = Math.min(this.#wait.replicas, Array.isArray(role[2]) ? role[2].length : 0);
    if (want === 0) return;
    const acked = await this.#cmd.wait(want, this.#wait.ms);
    if (acked < want) {
      this.#log.warn("write not confirmed by enough replicas", { op, acked, wanted: want });
      throw new StoreUnavailableError(`${op}: not confirmed by ${want} replica(s) in ${this.#wait.ms} ms`);
    }
  }

  /** Lets pending SUBSCRIBEs land before a write whose event this node may be watching for. */
  async #barrier(): Promise<void> {
    if (!this.#subEverReady && this.#watched.size > 0) await withTimeout(this.#subFirstReady, this.#connectTimeoutMs).catch(() => {});
    if (this.#subPending) await this.#subPending;
  }

  async #eval(script: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.#cmd.evalsha(script.sha, keys.length, ...keys, ...args);
    } catch (e) {
      // NOSCRIPT: the script cache is empty (Redis restarted); the script did not run.
      if (e instanceof Error && e.message.startsWith("NOSCRIPT")) return await this.#cmd.eval(script.lua, keys.length, ...keys, ...args);
      throw e;
    }
  }

  async #decode(id: string, h: Record<string, string> | null | undefined): Promise<ChannelRecord | undefined> {
    if (!h || Object.keys(h).length === 0) return undefined;
    const { identity, key, type, node } = h;
    const validUntil = Number(h.validUntil);
    const ttl = Number(h.ttl);
    if (typeof identity !== "string" || typeof key !== "string" || typeof node !== "string") throw new StoreCorruptError("missing field");
    if (!isChannelType(type)) throw new StoreCorruptError("type");
    if (!Number.isFinite(validUntil) || !Number.isFinite(ttl)) throw new StoreCorruptError("validUntil or ttl");
    const pushFrom = h.pushFrom === undefined ? undefined : Number(h.pushFrom);
    if (pushFrom !== undefined && !(Number.isSafeInteger(pushFrom) && pushFrom >= 0)) throw new StoreCorruptError("pushFrom");
    // Redis expires the key at validUntil; this guards a read in the same millisecond.
    if (validUntil <= this.#now()) return undefined;
    const retired = h.retired;
    if (retired !== undefined && !reasons.has(retired)) throw new StoreCorruptError("retired");
    const wrapper = await this.#wrapper;
    const raw = await wrapper.unwrap(key, id);
    const app = h.app === undefined ? undefined : decodeApp(fromUtf8(await wrapper.unwrap(h.app, appAad(id), MAX_WRAPPED_APP_BYTES)));
    const holder = decodeHolder(h);
    const rec: ChannelRecord = { id, identity, key: raw, type, validUntil, ttl, node, ...(holder ? { holder } : {}), ...(pushFrom !== undefined ? { pushFrom } : {}), ...(app ? { app } : {}) };
    return retired === undefined ? rec : { ...rec, retired: retired as RetireReason };
  }

  #subscribe(channels: string[]): void {
    const p = this.#sub.subscribe(...channels).then(
      () => undefined,
      (e: unknown) => {
        // Not fatal: the next `ready` resubscribes everything watched.
        this.#log.warn("subscribe failed", { error: errName(e) });
      },
    );
    this.#subPending = p;
    void p.then(() => {
      if (this.#subPending === p) this.#subPending = undefined;
    });
  }

  #onSubscriberReady(): void {
    const reconnect = this.#subEverReady;
    this.#subEverReady = true;
    const all = [...this.#watched.keys()].map((i) => this.#evKey(i));
    for (let i = 0; i < all.length; i += SUBSCRIBE_BATCH) this.#subscribe(all.slice(i, i + SUBSCRIBE_BATCH));
    if (!reconnect) return;
    const done = this.#subPending ?? Promise.resolve();
    void done.then(() => {
      if (this.#closed) return;
      this.#log.info("event connection restored; resync requested", { watched: this.#watched.size });
      this.#resync();
    });
  }

  /**
   * Runs the resync handlers once the command connection is up too: after a
   * failover the event connection may reach the new master before the
   * command connection does, and a re-check that fails there would leave an
   * event missed during the switch (a revocation) unnoticed.
   */
  #resync(): void {
    if (this.#cmd.status === "ready") {
      for (const h of this.#resyncHandlers) safely(this.#log, "resync", () => h());
      return;
    }
    if (this.#resyncWaiting) return;
    this.#resyncWaiting = true;
    this.#cmd.once("ready", () => {
      this.#resyncWaiting = false;
      if (!this.#closed) this.#resync();
    });
  }

  #onMessage(channel: string, message: string): void {
    const e = decodeEvent(message);
    if (!e || channel !== this.#evKey(e.identity)) {
      this.#log.warn("dropping malformed event", { bytes: message.length });
      return;
    }
    if (!this.#watched.has(e.identity)) return;
    // One queue keeps arrival order although a push waits for its unwrap.
    this.#deliveries = this.#deliveries.then(() => this.#deliver(e));
  }

  /** Unwraps a push event's data, then hands the event to every handler. Never rejects. */
  async #deliver(e: StoreEvent): Promise<void> {
    let event = e;
    if (e.kind === "push") {
      try {
        const w = await this.#wrapper;
        event = { ...e, data: fromUtf8(await w.unwrap(e.data, pushAad(e.identity, e.seq), this.#maxWrappedPush())) };
      } catch (err) {
        // Dropped like a lost message: the receiver sees the hole in the numbering and reads the window.
        this.#log.warn("dropping push event that does not unwrap", { seq: e.seq, error: errName(err) });
        return;
      }
    }
    // Filtered here too: an UNSUBSCRIBE in flight must not leak events past unwatch().
    if (this.#closed || !this.#watched.has(event.identity)) return;
    for (const h of this.#handlers) safely(this.#log, "event", () => h(event));
  }

  /** Logs connection transitions once per outage, never the URL (it may hold a password). */
  #monitor(c: Redis, name: string, onReady: () => void): void {
    let down = false;
    c.on("ready", () => {
      if (down) this.#log.info(`${name} connection restored`);
      down = false;
      onReady();
    });
    c.on("error", (e: unknown) => {
      if (!down && !this.#closed) this.#log.warn(`${name} connection error`, { error: errName(e), reason: errMessage(e) });
      down = true;
    });
    c.on("close", () => {
      if (!down && !this.#closed) this.#log.warn(`${name} connection lost`);
      down = true;
    });
    // Reconnecting never stops: should ioredis ever give up on a connection
    // (status "end") while the store is open, start it again.
    c.on("end", () => {
      if (this.#closed) return;
      this.#log.warn(`${name} connection ended; connecting again`);
      setTimeout(() => {
        if (!this.#closed && c.status === "end") c.connect().catch(() => {});
      }, 500).unref();
    });
  }
}

/** Parses one pub/sub message into a typed event, or undefined. */
function decodeEvent(text: string): StoreEvent | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const { kind, identity, channel } = o;
  if (typeof identity !== "string") return undefined;
  if (kind === "push") {
    const { seq, data } = o;
    if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1 || typeof data !== "string") return undefined;
    if (channel === undefined) return { kind, identity, seq, data };
    return typeof channel === "string" ? { kind, identity, channel, seq, data } : undefined;
  }
  if (typeof channel !== "string") return undefined;
  if (kind === "retired" && typeof o.reason === "string" && reasons.has(o.reason)) {
    return { kind, identity, channel, reason: o.reason as RetireReason };
  }
  if (kind === "rebound" && typeof o.binding === "string") return { kind, identity, channel, binding: o.binding };
  return undefined;
}

/** Additional data of a wrapped push: binds it to its identity and number (the seq has no ':', so this is unambiguous). */
/** Additional data of a channel's wrapped app fields (a channel id has no ':', so it differs from the key's and a push's). */
function appAad(id: string): string {
  return `app:${id}`;
}

/** Largest wrapped app fields read back: the public key, an `info` of up to 64 KiB, the wrap's overhead. */
const MAX_WRAPPED_APP_BYTES = 72 * 1024;

function decodeApp(text: string): ChannelApp {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new StoreCorruptError("app");
  }
  const o = v as { publicKey?: { type?: unknown; data?: unknown }; info?: unknown };
  if (typeof o !== "object" || o === null || typeof o.publicKey?.type !== "string" || typeof o.publicKey.data !== "string") throw new StoreCorruptError("app");
  if (o.info !== undefined && typeof o.info !== "string") throw new StoreCorruptError("app");
  const publicKey = { type: o.publicKey.type, data: o.publicKey.data };
  return o.info === undefined ? { publicKey } : { publicKey, info: o.info };
}

/** The holder fields of a channel hash (absent on records from nodes older than them). */
function decodeHolder(h: Record<string, string>): Holder | undefined {
  const { holder: node, instance, conn } = h;
  if (node === undefined && instance === undefined) return undefined;
  if (!node || !instance || conn === "") throw new StoreCorruptError("holder");
  return conn === undefined ? { node, instance } : { node, instance, conn };
}

function pushAad(identity: string, seq: number): string {
  return `${identity}:${seq}`;
}

/** A counter value as read with GET: a missing key is 0. */
function counter(v: string | null): number {
  if (v === null) return 0;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new StoreCorruptError("push counter");
  return n;
}

/** The fields of one XRANGE row `[id, [field, value, ...]]` as an object. */
function streamFields(row: unknown): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (!Array.isArray(row) || !Array.isArray(row[1])) return out;
  const kv = row[1] as unknown[];
  for (let i = 0; i + 1 < kv.length; i += 2) {
    const k = kv[i];
    const v = kv[i + 1];
    if (typeof k === "string" && typeof v === "string") out[k] = v;
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function checkRecord(rec: ChannelRecord): void {
  if (typeof rec !== "object" || rec === null) throw new TypeError(`"rec" expected object, got ${rec === null ? "null" : typeof rec}`);
  str("rec.id", rec.id);
  str("rec.identity", rec.identity);
  str("rec.node", rec.node);
  if (!(rec.key instanceof Uint8Array)) throw new TypeError(`"rec.key" expected Uint8Array, got ${typeof rec.key}`);
  if (!isChannelType(rec.type)) throw new RangeError(`"rec.type" expected ${channelTypes.map((t) => `"${t}"`).join(" or ")}`);
  if (typeof rec.validUntil !== "number" || !Number.isFinite(rec.validUntil)) throw new TypeError(`"rec.validUntil" expected finite number`);
  if (typeof rec.ttl !== "number" || !Number.isFinite(rec.ttl)) throw new TypeError(`"rec.ttl" expected finite number`);
  if (rec.pushFrom !== undefined && !(Number.isSafeInteger(rec.pushFrom) && rec.pushFrom >= 0)) throw new RangeError(`"rec.pushFrom" expected an integer ≥ 0`);
}

function checkReason(reason: unknown): void {
  if (typeof reason !== "string" || !reasons.has(reason)) throw new RangeError(`"reason" expected one of ${[...reasons].join(", ")}`);
}

function str(name: string, v: unknown): void {
  if (typeof v !== "string") throw new TypeError(`"${name}" expected string, got ${v === null ? "null" : typeof v}`);
  if (v.length === 0) throw new RangeError(`"${name}" expected a non-empty string`);
}

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`"${name}" expected a positive integer`);
  return v;
}

/** Escapes the glob characters of a SCAN MATCH pattern, so a prefix is taken literally. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, "\\$&");
}

class TimeoutError extends Error {
  constructor(ms: number) {
    super(`timed out after ${ms} ms`);
    this.name = "TimeoutError";
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(ms)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function quit(c: Redis): Promise<void> {
  try {
    if (c.status === "ready") await withTimeout(c.quit(), 1000);
  } catch {
    // Redis is gone; disconnect below still stops the reconnect loop.
  } finally {
    c.disconnect(false);
  }
}

function safely(log: StoreLogger, what: string, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    log.error(`${what} handler threw`, { error: errName(e) });
  }
}

function errName(e: unknown): string {
  return e instanceof Error ? e.name : typeof e;
}

/** ioredis connection errors ("connect ECONNREFUSED 127.0.0.1:6380") carry no secrets; command errors are not logged. */
function errMessage(e: unknown): string {
  return e instanceof Error ? e.message.slice(0, 200) : "";
}

