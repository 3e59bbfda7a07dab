/**
 * The embedded store of a single node: plain maps, events delivered in-process.
 * Expired channels are dropped on read and by a periodic sweep; retired ones
 * stay as tombstones (`retired` set) until their `validUntil`. Each identity's
 * pushes are an array trimmed to the window on every push and filtered by age
 * on every read, as the Redis store does.
 */
import type { ChannelRecord, Holder, KeptPush, PushWindow, RetireReason, Store, StoreEvent } from "./store.js";

/** Default life of an identity's push counter after its last push: longer than any channel (366 days at most). */
export const PUSH_SEQ_TTL_MS = 400 * 86_400_000;

/** One kept push and when it leaves the window (clock of this store). */
interface Entry {
  readonly seq: number;
  readonly data: string;
  readonly expires: number;
}

/**
 * A channel record as this store keeps it: the key as a one-byte string of its
 * 32 bytes (48 heap bytes; a Uint8Array of its own costs some 400 with its
 * ArrayBuffer and native backing store, per bound channel: docs/PERFORMANCE.md). Like the
 * Uint8Array copies before it, it is never wiped: records leave as copies.
 */
type Kept = Omit<ChannelRecord, "key"> & { readonly key: string };

/** The push window of one identity. `seq` is the last number given out. */
interface Pushes {
  seq: number;
  entries: Entry[];
  /** When the counter itself may be forgotten (no entries left and no push for this long). */
  forgetAt: number;
}

export class MemoryStore implements Store {
  #channels = new Map<string, Kept>();
  #active = new Map<string, string>();
  /** `hit` counters per window length: the counts of the current fixed window (all keys share it). */
  #counters = new Map<number, { window: number; counts: Map<string, number> }>();
  #pushes = new Map<string, Pushes>();
  #leases = new Map<string, { owner: string; expires: number }>();
  /** Node instances and when their last beat runs out. */
  #beats = new Map<string, number>();
  #handlers: ((e: StoreEvent) => void)[] = [];
  #resyncHandlers: (() => void)[] = [];
  #watched = new Map<string, number>();
  #sweep: ReturnType<typeof setInterval>;
  readonly #now: () => number;
  readonly #pushSeqTtlMs: number;

  /**
   * @param options.now clock (tests). Default `Date.now`.
   * @param options.sweepMs period of the sweep that drops expired records. Default 10 s.
   * @param options.pushSeqTtlMs how long an identity's push counter outlives its last push. Default 400 days.
   */
  constructor(options: { now?: () => number; sweepMs?: number; pushSeqTtlMs?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#pushSeqTtlMs = positiveInt("pushSeqTtlMs", options.pushSeqTtlMs ?? PUSH_SEQ_TTL_MS);
    this.#sweep = setInterval(() => this.#purge(), options.sweepMs ?? 10_000);
    this.#sweep.unref?.();
  }

  async activate(rec: ChannelRecord): Promise<string | undefined> {
    // Synchronous from read to write: concurrent activations cannot both see the same previous channel.
    const active = this.#active.get(rec.identity);
    const prev = active !== undefined ? this.#live(active) : undefined;
    // The store owns its copy of the key; `retired` of the argument is not kept.
    this.#channels.set(rec.id, { id: rec.id, identity: rec.identity, key: packKey(rec.key), type: rec.type, validUntil: rec.validUntil, ttl: rec.ttl, node: rec.node, ...(rec.holder ? { holder: ownHolder(rec.holder) } : {}), ...(rec.pushFrom !== undefined ? { pushFrom: rec.pushFrom } : {}), ...(rec.app ? { app: rec.app } : {}) });
    this.#active.set(rec.identity, rec.id);
    if (prev && prev.id !== rec.id) {
      this.#channels.set(prev.id, { ...prev, retired: "replaced" });
      this.#emit({ kind: "retired", identity: rec.identity, channel: prev.id, reason: "replaced" });
      return prev.id;
    }
    return undefined;
  }

  async getChannel(id: string): Promise<ChannelRecord | undefined> {
    const c = this.#record(id);
    return c && copy(c);
  }

  async activeChannel(identity: string): Promise<string | undefined> {
    const id = this.#active.get(identity);
    return id !== undefined && this.#live(id) ? id : undefined;
  }

  async retire(id: string, reason: RetireReason): Promise<boolean> {
    const c = this.#live(id);
    if (!c) return false;
    this.#channels.set(id, { ...c, retired: reason });
    if (this.#active.get(c.identity) === id) this.#active.delete(c.identity);
    this.#emit({ kind: "retired", identity: c.identity, channel: id, reason });
    return true;
  }

  async retireIdentity(identity: string, reason: RetireReason): Promise<string[]> {
    const id = this.#active.get(identity);
    return id !== undefined && (await this.retire(id, reason)) ? [id] : [];
  }

  async bind(channel: string, identity: string, binding: string, holder: Holder): Promise<void> {
    checkHolder(holder);
    const c = this.#record(channel);
    if (c?.retired) return; // a tombstone has no bindings to take over
    if (c && c.identity === identity) this.#channels.set(channel, { ...c, holder: ownHolder(holder) });
    this.#emit({ kind: "rebound", identity, channel, binding });
  }

  async release(channel: string, conn: string): Promise<boolean> {
    nonEmpty("channel", channel);
    nonEmpty("conn", conn);
    const c = this.#record(channel);
    if (!c?.holder || c.holder.conn !== conn) return false;
    this.#channels.set(channel, { ...c, holder: { node: c.holder.node, instance: c.holder.instance } });
    return true;
  }

  async beat(instance: string, ttlMs: number): Promise<void> {
    nonEmpty("instance", instance);
    positiveInt("ttlMs", ttlMs);
    this.#beats.set(instance, this.#now() + ttlMs);
  }

  async liveInstances(instances: Iterable<string>): Promise<Set<string>> {
    const now = this.#now();
    const out = new Set<string>();
    for (const i of instances) {
      nonEmpty("instance", i);
      if ((this.#beats.get(i) ?? 0) > now) out.add(i);
    }
    return out;
  }

  async listChannels(): Promise<ChannelRecord[]> {
    this.#purge();
    return [...this.#channels.values()].filter((c) => !c.retired).map(copy);
  }

  async push(identity: string, data: string, window: PushWindow, channel?: string): Promise<number> {
    checkPush(identity, data, window, channel);
    const now = this.#now();
    let p = this.#pushes.get(identity);
    if (!p) this.#pushes.set(identity, (p = { seq: 0, entries: [], forgetAt: 0 }));
    const seq = ++p.seq;
    p.entries.push({ seq, data, expires: now + window.ageMs });
    p.forgetAt = now + Math.max(window.ageMs, this.#pushSeqTtlMs);
    if (p.entries.length > window.count) p.entries.splice(0, p.entries.length - window.count);
    dropExpired(p, now);
    this.#emit(channel === undefined ? { kind: "push", identity, seq, data } : { kind: "push", identity, channel, seq, data });
    return seq;
  }

  async pushesSince(identity: string, after: number): Promise<KeptPush[] | "gap"> {
    checkAfter(after);
    const p = this.#pushes.get(identity);
    const last = p?.seq ?? 0;
    if (after > last) return "gap"; // a number never given out: the counter was lost
    if (after === last || !p) return [];
    dropExpired(p, this.#now());
    const out = p.entries.filter((e) => e.seq > after).map((e) => ({ seq: e.seq, data: e.data }));
    return out.length === last - after ? out : "gap";
  }

  async lastPush(identity: string): Promise<number> {
    return this.#pushes.get(identity)?.seq ?? 0;
  }

  async hit(key: string, windowMs: number): Promise<number> {
    const window = Math.floor(this.#now() / windowMs);
    let c = this.#counters.get(windowMs);
    if (!c) this.#counters.set(windowMs, (c = { window, counts: new Map() }));
    else if (c.window !== window) {
      c.window = window;
      c.counts.clear();
    }
    const n = (c.counts.get(key) ?? 0) + 1;
    c.counts.set(key, n);
    return n;
  }

  async lease(key: string, owner: string, ttlMs: number): Promise<boolean> {
    checkLease(key, owner, ttlMs);
    // Synchronous from read to write: concurrent calls cannot both find it free.
    const now = this.#now();
    const held = this.#leases.get(key);
    if (held && held.expires > now) return false;
    this.#leases.set(key, { owner, expires: now + ttlMs });
    return true;
  }

  async unlease(key: string, owner: string): Promise<void> {
    checkLease(key, owner, 1);
    if (this.#leases.get(key)?.owner === owner) this.#leases.delete(key);
  }

  watch(identity: string): void {
    this.#watched.set(identity, (this.#watched.get(identity) ?? 0) + 1);
  }
  unwatch(identity: string): void {
    const n = (this.#watched.get(identity) ?? 0) - 1;
    if (n > 0) this.#watched.set(identity, n);
    else this.#watched.delete(identity);
  }
  onEvent(handler: (e: StoreEvent) => void): void {
    this.#handlers.push(handler);
  }
  /** Kept for the interface: in one process no event is ever lost, so it is never called. */
  onResync(handler: () => void): void {
    this.#resyncHandlers.push(handler);
  }
  async ping(): Promise<void> {}
  async close(): Promise<void> {
    clearInterval(this.#sweep);
  }

  /** The record, tombstone or not, unless expired (then dropped). */
  #record(id: string): Kept | undefined {
    const c = this.#channels.get(id);
    if (c && c.validUntil <= this.#now()) {
      this.#drop(c);
      return undefined;
    }
    return c;
  }

  /** The record if it is live: known, not expired, not retired. */
  #live(id: string): Kept | undefined {
    const c = this.#record(id);
    return c && !c.retired ? c : undefined;
  }

  #drop(c: Kept): void {
    this.#channels.delete(c.id);
    if (this.#active.get(c.identity) === c.id) this.#active.delete(c.identity);
  }

  #purge(): void {
    const now = this.#now();
    for (const c of this.#channels.values()) if (c.validUntil <= now) this.#drop(c);
    for (const [k, l] of this.#leases) if (l.expires <= now) this.#leases.delete(k);
    for (const [i, until] of this.#beats) if (until <= now) this.#beats.delete(i);
    for (const [windowMs, c] of this.#counters) if (c.window < Math.floor(now / windowMs)) this.#counters.delete(windowMs);
    for (const [k, p] of this.#pushes) {
      dropExpired(p, now);
      if (p.entries.length === 0 && p.forgetAt <= now) this.#pushes.delete(k);
    }
  }

  #emit(e: StoreEvent): void {
    if (!this.#watched.has(e.identity)) return;
    // Delivered asynchronously, as a remote store would: callers never rely on re-entrancy.
    queueMicrotask(() => {
      for (const h of this.#handlers) h(e);
    });
  }
}

/** The store's own copy of a holder, checked. */
function ownHolder(h: Holder): Holder {
  checkHolder(h);
  return h.conn !== undefined ? { node: h.node, instance: h.instance, conn: h.conn } : { node: h.node, instance: h.instance };
}

/** Records leave the store as copies: a caller that wipes its key cannot corrupt the store. */
function copy(c: Kept): ChannelRecord {
  return { ...c, key: unpackKey(c.key) };
}

function packKey(key: Uint8Array): string {
  return String.fromCharCode(...key);
}

function unpackKey(s: string): Uint8Array {
  const key = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) key[i] = s.charCodeAt(i);
  return key;
}

/** Drops the entries past their age (always the oldest ones). */
function dropExpired(p: Pushes, now: number): void {
  let i = 0;
  while (i < p.entries.length && p.entries[i]!.expires <= now) i++;
  if (i > 0) p.entries.splice(0, i);
}

/**
 * Validates the arguments of `push` (shared by both stores).
 * @throws TypeError for a wrong type, RangeError for an empty id or a window that is not two positive integers.
 */
export function checkPush(identity: unknown, data: unknown, window: unknown, channel: unknown): void {
  nonEmpty("identity", identity);
  if (typeof data !== "string") throw new TypeError(`"data" expected string, got ${data === null ? "null" : typeof data}`);
  if (typeof window !== "object" || window === null) throw new TypeError(`"window" expected object, got ${window === null ? "null" : typeof window}`);
  const w = window as Record<string, unknown>;
  positiveInt("window.count", w.count);
  positiveInt("window.ageMs", w.ageMs);
  if (channel !== undefined) nonEmpty("channel", channel);
}

/**
 * Validates the arguments of `lease` and `unlease` (shared by both stores).
 * @throws TypeError for a wrong type, RangeError for an empty key or owner or a ttl that is not a positive integer.
 */
export function checkLease(key: unknown, owner: unknown, ttlMs: unknown): void {
  nonEmpty("key", key);
  nonEmpty("owner", owner);
  positiveInt("ttlMs", ttlMs);
}

/**
 * Validates a holder (shared by both stores): a node name, an instance and, while connected, a
 * connection id, each a non-empty string. @returns it.
 * @throws TypeError for a wrong type, RangeError for an empty field.
 */
export function checkHolder(h: Holder): Holder {
  if (typeof h !== "object" || h === null) throw new TypeError(`"holder" expected object, got ${h === null ? "null" : typeof h}`);
  nonEmpty("holder.node", h.node);
  nonEmpty("holder.instance", h.instance);
  if (h.conn !== undefined) nonEmpty("holder.conn", h.conn);
  return h;
}

/** @throws RangeError unless `after` is a non-negative safe integer. */
export function checkAfter(after: unknown): void {
  if (typeof after !== "number" || !Number.isSafeInteger(after) || after < 0) throw new RangeError(`"after" expected a non-negative integer`);
}

function nonEmpty(name: string, v: unknown): void {
  if (typeof v !== "string") throw new TypeError(`"${name}" expected string, got ${v === null ? "null" : typeof v}`);
  if (v.length === 0) throw new RangeError(`"${name}" expected a non-empty string`);
}

function positiveInt(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw new RangeError(`"${name}" expected a positive integer`);
  return v;
}
