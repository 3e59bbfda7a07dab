/**
 * The embedded store of a single node: plain maps, events delivered in-process.
 * Expired channels are dropped on read and by a periodic sweep.
 */
import type { ChannelRecord, RetireReason, Store, StoreEvent } from "./store.js";

export class MemoryStore implements Store {
  #channels = new Map<string, ChannelRecord>();
  #active = new Map<string, string>();
  #counters = new Map<string, { window: number; windowMs: number; count: number }>();
  #handlers: ((e: StoreEvent) => void)[] = [];
  #watched = new Map<string, number>();
  #sweep: ReturnType<typeof setInterval>;
  readonly #now: () => number;

  constructor(options: { now?: () => number; sweepMs?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#sweep = setInterval(() => this.#purge(), options.sweepMs ?? 10_000);
    this.#sweep.unref?.();
  }

  async activate(rec: ChannelRecord): Promise<string | undefined> {
    // Synchronous from read to write: concurrent activations cannot both see the same previous channel.
    const active = this.#active.get(rec.identity);
    const prev = active !== undefined ? this.#channels.get(active) : undefined;
    const previous = prev && prev.validUntil > this.#now() ? active : undefined;
    this.#channels.set(rec.id, { ...rec, key: rec.key.slice() }); // the store owns its copy of the key
    this.#active.set(rec.identity, rec.id);
    if (previous !== undefined && previous !== rec.id && this.#channels.delete(previous)) {
      this.#emit({ kind: "retired", identity: rec.identity, channel: previous, reason: "replaced" });
      return previous;
    }
    return undefined;
  }

  async getChannel(id: string): Promise<ChannelRecord | undefined> {
    const c = this.#channels.get(id);
    if (c && c.validUntil <= this.#now()) {
      this.#drop(c);
      return undefined;
    }
    return c && copy(c);
  }

  async activeChannel(identity: string): Promise<string | undefined> {
    const id = this.#active.get(identity);
    return id !== undefined && (await this.getChannel(id)) ? id : undefined;
  }

  async retire(id: string, reason: RetireReason): Promise<boolean> {
    const c = await this.getChannel(id);
    if (!c) return false;
    this.#drop(c);
    this.#emit({ kind: "retired", identity: c.identity, channel: id, reason });
    return true;
  }

  async retireIdentity(identity: string, reason: RetireReason): Promise<string[]> {
    const id = this.#active.get(identity);
    return id !== undefined && (await this.retire(id, reason)) ? [id] : [];
  }

  async bind(channel: string, identity: string, binding: string): Promise<void> {
    this.#emit({ kind: "rebound", identity, channel, binding });
  }

  async listChannels(): Promise<ChannelRecord[]> {
    this.#purge();
    return [...this.#channels.values()].map(copy);
  }

  async hit(key: string, windowMs: number): Promise<number> {
    const window = Math.floor(this.#now() / windowMs);
    const c = this.#counters.get(key);
    if (!c || c.window !== window) {
      this.#counters.set(key, { window, windowMs, count: 1 });
      return 1;
    }
    return ++c.count;
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
  async ping(): Promise<void> {}
  async close(): Promise<void> {
    clearInterval(this.#sweep);
  }

  #drop(c: ChannelRecord): void {
    this.#channels.delete(c.id);
    if (this.#active.get(c.identity) === c.id) this.#active.delete(c.identity);
  }

  #purge(): void {
    const now = this.#now();
    for (const c of this.#channels.values()) if (c.validUntil <= now) this.#drop(c);
    for (const [k, v] of this.#counters) if (v.window < Math.floor(now / v.windowMs)) this.#counters.delete(k);
  }

  #emit(e: StoreEvent): void {
    if (!this.#watched.has(e.identity)) return;
    // Delivered asynchronously, as a remote store would: callers never rely on re-entrancy.
    queueMicrotask(() => {
      for (const h of this.#handlers) h(e);
    });
  }
}

/** Records leave the store as copies: a caller that wipes its key cannot corrupt the store. */
function copy(c: ChannelRecord): ChannelRecord {
  return { ...c, key: c.key.slice() };
}
