/**
 * Lifecycle events for applications (docs/BACKEND.md
 * "Events"): channel established, renewed, resumed, closed, expired, revoked,
 * replaced; application pushes delivered to a channel or dropped out of the
 * window before it got them.
 *
 * The broker calls {@link EventSink.emit} at those points; it never waits and
 * never fails. {@link Events} appends each event to a Redis Stream (bounded by
 * `MAXLEN ~`, read by any backend with consumer groups) and, with a webhook
 * URL, POSTs it there signed as Standard Webhooks 1.0 says. Both run off the
 * message path: each has a bounded queue in memory, kept in order, retried
 * with backoff on failure (at least once while the node runs), and counts what
 * overflowed in /metrics. No event carries a key: only ids, fingerprints,
 * sequence numbers and times.
 */
import { randomFillSync } from "node:crypto";
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { Redis } from "ioredis";
import { Counter as PromCounter, Gauge, type Registry } from "prom-client";
import { WebhookSecret, signWebhook } from "./signature.js";

/** Event kinds (docs/BACKEND.md "Event kinds"). */
export const EventType = {
  established: "channel.established",
  renewed: "channel.renewed",
  resumed: "channel.resumed",
  closed: "channel.closed",
  expired: "channel.expired",
  revoked: "channel.revoked",
  replaced: "channel.replaced",
  pushDelivered: "push.delivered",
  pushDropped: "push.dropped",
} as const;
export type EventType = (typeof EventType)[keyof typeof EventType];

/** Why a channel was revoked: the `reason` of `channel.revoked` (docs/BACKEND.md, Events). */
export const RevokeReason = {
  /** An operator or a backend revoked it (`admin.revoke`, the server API's `/v1/revoke`). */
  revoke: "revoke",
  /** The authorize hook refused the key at a renewal (docs/BACKEND.md §3). */
  authorize: "authorize",
  /** Its identity moved to another key (PROTOCOL.md §5.7). */
  moved: "moved",
} as const;
export type RevokeReason = (typeof RevokeReason)[keyof typeof RevokeReason];

/** Fields of one kind of event (ids, sequence numbers, times: never a key). */
export type EventData = Record<string, string | number | undefined>;

/** One event as the stream and the webhook carry it. */
export interface BrokerEvent {
  /** Always "event": the kind of signed body (docs/BACKEND.md §1), so no other receiver takes it for its own. */
  readonly kind: "event";
  /** `evt_` + 22 base64url characters: unique, the same on every retry (the `webhook-id`). */
  readonly id: string;
  readonly type: EventType;
  /** RFC 3339 UTC, milliseconds: when the node made the event. */
  readonly time: string;
  /** The node that made it. */
  readonly node: string;
  /** Fingerprint of the identity the event is about. */
  readonly identity: string;
  readonly data: EventData;
}

/** Where the broker sends lifecycle events. Never blocks, never throws. */
export interface EventSink {
  emit(type: EventType, identity: string, data: EventData): void;
}

/** A sink that drops everything (a broker without events). */
export const noEvents: EventSink = { emit: () => undefined };

/** What the event writers log through (a winston logger fits). */
export interface EventLogger {
  warn(message: string, meta?: Record<string, unknown>): unknown;
  info(message: string, meta?: Record<string, unknown>): unknown;
}

/** The stream's defaults (docs/BACKEND.md "Limits"). */
export const EVENT_DEFAULTS = {
  /** Stream key (the store's prefix + `events`). */
  streamKey: "psimbols:events",
  /** Approximate longest stream (XADD MAXLEN ~). */
  streamMaxLen: 100_000,
  /** Events waiting in memory per destination; more are dropped and counted. */
  queue: 10_000,
  /** Time allowed for one webhook POST. */
  webhookTimeoutMs: 5_000,
  /** Retry backoff: full jitter between 0 and min(max, base·2^attempt). */
  retryBaseMs: 200,
  retryMaxMs: 30_000,
  /** Events per XADD pipeline. */
  batch: 100,
} as const;

export interface EventsOptions {
  /** This node's name, in every event. */
  node: string;
  /** Append to a Redis Stream. */
  stream?: { url: string; key?: string; maxLen?: number };
  /** Also POST each event here, signed with every secret (two during a rotation): PSIMBOLS_EVENTS_SECRET, else the shared one (setup.ts). */
  webhook?: { url: string; secrets: readonly WebhookSecret[]; timeoutMs?: number };
  /** Queue bound per destination. */
  queue?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  logger?: EventLogger;
}

/** Counters per destination (exported at /metrics as `psimbols_events_total`). */
export interface EventCounts {
  /** Accepted by the destination (XADD ran; the webhook answered 2xx). */
  sent: number;
  /** Attempts that failed and will be retried. */
  failed: number;
  /** Not queued: the queue was full (overflow). */
  dropped: number;
}

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(max, base·2^attempt)).
 * @param attempt - failures so far of this item, from 0.
 * @param random - in [0, 1). Default Math.random.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Random bytes for event ids, drawn 4 KiB at a time (one randomBytes call per id costs ~2 µs). */
const idPool = Buffer.alloc(4096);
let idOffset = idPool.length;

/** A new event id: `evt_` + base64url of 16 random bytes. */
export function eventId(): string {
  if (idOffset === idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  const id = idPool.toString("base64url", idOffset, idOffset + 16);
  idOffset += 16;
  return `evt_${id}`;
}

/**
 * Appends a batch in one command (one round trip, one command for ioredis to
 * build): KEYS[1] the stream; ARGV[1] MAXLEN; then type, identity, event per entry.
 */
const XADD_BATCH = `
local n = 0
for i = 2, #ARGV, 3 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[i], 'identity', ARGV[i + 1], 'event', ARGV[i + 2])
  n = n + 1
end
return n`;

/** A queue of events sent in order, one attempt at a time, retried with backoff. */
abstract class Outbox {
  readonly counts: EventCounts = { sent: 0, failed: 0, dropped: 0 };
  readonly #queue: BrokerEvent[] = [];
  readonly #bound: number;
  readonly #retry: { base: number; max: number };
  #busy = false;
  #closed = false;
  #attempt = 0;
  #wake: (() => void) | undefined;
  protected readonly log: EventLogger | undefined;

  constructor(bound: number, retry: { base: number; max: number }, log: EventLogger | undefined) {
    this.#bound = bound;
    this.#retry = retry;
    this.log = log;
  }

  get queued(): number {
    return this.#queue.length;
  }

  add(ev: BrokerEvent): void {
    if (this.#closed || this.#queue.length >= this.#bound) {
      this.counts.dropped++;
      return;
    }
    this.#queue.push(ev);
    // When idle, the send starts now, in this tick: the event is on its way before the node answers the client.
    if (!this.#busy) void this.#drain();
  }

  /** Sends what it can of `batch` in order. @returns how many of the first events were accepted; throws when none. */
  protected abstract send(batch: readonly BrokerEvent[]): Promise<number>;
  protected abstract readonly batchSize: number;

  async #drain(): Promise<void> {
    this.#busy = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        let done = 0;
        try {
          done = await this.send(this.#queue.slice(0, this.batchSize));
        } catch (e) {
          this.counts.failed++;
          if (this.#attempt === 0) this.log?.warn("event delivery failed; retrying", { component: "events", destination: this.name, error: e instanceof Error ? e.message : String(e) });
        }
        if (done > 0) {
          this.#queue.splice(0, done);
          this.counts.sent += done;
          this.#attempt = 0;
          continue;
        }
        if (this.#closed) break;
        const wait = backoffMs(this.#attempt++, this.#retry.base, this.#retry.max);
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait);
          t.unref(); // a retry pending never keeps a stopping process alive
          this.#wake = () => (clearTimeout(t), r());
        });
        this.#wake = undefined;
      }
    } finally {
      this.#busy = false;
    }
  }

  abstract readonly name: string;

  /** Waits up to `ms` for the queue to empty, then stops; what is left is counted as dropped. */
  async close(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    // A retry waiting out its backoff is tried once now; later ones keep their backoff (waking it
    // at every poll made a failing destination take an attempt every 20 ms while the node stopped).
    this.#wake?.();
    while (this.#queue.length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.#closed = true;
    this.#wake?.();
    this.counts.dropped += this.#queue.length;
    this.#queue.length = 0;
  }
}

/** Appends to a Redis Stream: XADD key MAXLEN ~ n * type … identity … event <JSON>, a batch per script call. */
class StreamOutbox extends Outbox {
  readonly name = "stream";
  protected readonly batchSize = EVENT_DEFAULTS.batch;
  readonly redis: Redis;
  readonly #key: string;
  readonly #maxLen: number;

  constructor(o: NonNullable<EventsOptions["stream"]>, bound: number, retry: { base: number; max: number }, log: EventLogger | undefined) {
    super(bound, retry, log);
    this.#key = o.key ?? EVENT_DEFAULTS.streamKey;
    this.#maxLen = o.maxLen ?? EVENT_DEFAULTS.streamMaxLen;
    // Its own connection: a slow XADD never waits behind (or delays) the store's commands.
    this.redis = new Redis(o.url, { maxRetriesPerRequest: 1, commandTimeout: 2000, enableOfflineQueue: true });
    this.redis.on("error", () => undefined); // failures surface per command; ioredis reconnects by itself
    // EVALSHA, falling back to EVAL when the script is not cached (a restarted Redis).
    this.redis.defineCommand("psimbolsXaddBatch", { numberOfKeys: 1, lua: XADD_BATCH });
  }

  protected async send(batch: readonly BrokerEvent[]): Promise<number> {
    const args: (string | number)[] = [this.#key, this.#maxLen];
    for (const ev of batch) args.push(ev.type, ev.identity, JSON.stringify(ev));
    // All of the batch or none (a failed call is retried whole: at least once).
    const n = await (this.redis as unknown as { psimbolsXaddBatch(...a: (string | number)[]): Promise<number> }).psimbolsXaddBatch(...args);
    if (n !== batch.length) throw new Error(`XADD batch appended ${n} of ${batch.length}`);
    return n;
  }

  override async close(ms: number): Promise<void> {
    await super.close(ms);
    this.redis.disconnect();
  }
}

/** POSTs each event, signed (Standard Webhooks 1.0); 2xx is delivered, anything else is retried. */
class WebhookOutbox extends Outbox {
  readonly name = "webhook";
  protected readonly batchSize = 1;
  readonly #url: URL;
  readonly #secrets: readonly WebhookSecret[];
  readonly #timeoutMs: number;
  /** One kept-alive connection: events go one at a time. (node:http costs ~10× less CPU per call than fetch here.) */
  readonly #agent: HttpAgent;
  readonly #request: typeof httpRequest;

  constructor(o: NonNullable<EventsOptions["webhook"]>, bound: number, retry: { base: number; max: number }, log: EventLogger | undefined) {
    super(bound, retry, log);
    this.#url = parseEventsUrl(o.url);
    this.#secrets = o.secrets;
    this.#timeoutMs = o.timeoutMs ?? EVENT_DEFAULTS.webhookTimeoutMs;
    const https = this.#url.protocol === "https:";
    this.#agent = https ? new HttpsAgent({ keepAlive: true, maxSockets: 1 }) : new HttpAgent({ keepAlive: true, maxSockets: 1 });
    this.#request = https ? (httpsRequest as typeof httpRequest) : httpRequest;
  }

  protected send(batch: readonly BrokerEvent[]): Promise<number> {
    const ev = batch[0]!;
    const body = JSON.stringify(ev);
    // Signed again on every attempt (a fresh timestamp), under the same id.
    const headers = { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)), ...signWebhook(this.#secrets, ev.id, body) };
    return new Promise<number>((resolve, reject) => {
      const req = this.#request(this.#url, { method: "POST", headers, agent: this.#agent }, (res: IncomingMessage) => {
        res.resume(); // the answer's body is not read: only its status counts
        res.on("end", () => {
          clearTimeout(timer);
          const status = res.statusCode ?? 0;
          if (status >= 200 && status <= 299) resolve(1);
          else reject(new Error(`the events URL answered ${status}`));
        });
        res.on("error", reject);
      });
      // The whole call, answer included, within the timeout; redirects are not followed (a 3xx is a failure).
      const timer = setTimeout(() => req.destroy(new Error(`no answer from the events URL in ${this.#timeoutMs} ms`)), this.#timeoutMs);
      req.on("error", (e) => (clearTimeout(timer), reject(e)));
      req.end(body);
    });
  }

  override async close(ms: number): Promise<void> {
    await super.close(ms);
    this.#agent.destroy();
  }
}

/** The event sink of a node: a Redis Stream, a webhook, or both. */
export class Events implements EventSink {
  readonly node: string;
  readonly stream: StreamOutboxView | undefined;
  readonly webhook: OutboxView | undefined;
  readonly #outboxes: Outbox[] = [];

  constructor(o: EventsOptions) {
    this.node = o.node;
    const bound = o.queue ?? EVENT_DEFAULTS.queue;
    if (!Number.isSafeInteger(bound) || bound < 1) throw new RangeError(`setting events-queue: expected a positive integer, got ${String(bound)}`);
    const retry = { base: o.retryBaseMs ?? EVENT_DEFAULTS.retryBaseMs, max: o.retryMaxMs ?? EVENT_DEFAULTS.retryMaxMs };
    if (o.stream) {
      const maxLen = o.stream.maxLen ?? EVENT_DEFAULTS.streamMaxLen;
      if (!Number.isSafeInteger(maxLen) || maxLen < 1) throw new RangeError(`setting events-max-len: expected a positive integer, got ${String(maxLen)}`);
      const s = new StreamOutbox(o.stream, bound, retry, o.logger);
      this.stream = s;
      this.#outboxes.push(s);
    }
    if (o.webhook) {
      parseEventsUrl(o.webhook.url);
      if (o.webhook.secrets.length === 0) throw new RangeError("--events-url needs PSIMBOLS_EVENTS_SECRET (or the shared PSIMBOLS_UPSTREAM_SECRET), whsec_…, to sign the events");
      const w = new WebhookOutbox(o.webhook, bound, retry, o.logger);
      this.webhook = w;
      this.#outboxes.push(w);
    }
  }

  emit(type: EventType, identity: string, data: EventData): void {
    if (this.#outboxes.length === 0) return;
    const ev: BrokerEvent = { kind: "event", id: eventId(), type, time: new Date().toISOString(), node: this.node, identity, data };
    for (const o of this.#outboxes) o.add(ev);
  }

  /** Adds `psimbols_events_total{destination,outcome}` and `psimbols_events_queued{destination}` to a node's registry. */
  register(registry: Registry): void {
    const outboxes = this.#outboxes;
    new PromCounter({
      name: "psimbols_events_total",
      help: "Lifecycle events by destination and outcome (sent, failed attempts, dropped on overflow)",
      labelNames: ["destination", "outcome"],
      registers: [registry],
      collect() {
        this.reset();
        for (const o of outboxes) for (const [k, v] of Object.entries(o.counts)) this.inc({ destination: o.name, outcome: k }, v);
      },
    });
    new Gauge({
      name: "psimbols_events_queued",
      help: "Lifecycle events waiting to be sent, by destination",
      labelNames: ["destination"],
      registers: [registry],
      collect() {
        for (const o of outboxes) this.set({ destination: o.name }, o.queued);
      },
    });
  }

  /** Flushes for up to `ms` (default 2 s), then stops; unsent events are counted as dropped. */
  async close(ms = 2000): Promise<void> {
    await Promise.all(this.#outboxes.map((o) => o.close(ms)));
  }
}

/** What callers see of a destination. */
export interface OutboxView {
  readonly counts: EventCounts;
  readonly queued: number;
}
export interface StreamOutboxView extends OutboxView {
  readonly redis: Redis;
}

/**
 * Checks the `--events-url` setting: an absolute http(s) URL.
 * @throws RangeError naming the setting (never echoing credentials in it).
 */
export function parseEventsUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new RangeError("setting events-url: expected an absolute http:// or https:// URL");
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new RangeError("setting events-url: expected an http:// or https:// URL");
  return u;
}

