/**
 * The store-loss bound (PROTOCOL.md §10, SECURITY.md "Partitions"): a node
 * that cannot reach the store cannot hear revocations or replacements made on
 * other nodes, so it serves its bound channels only for a stated time after
 * the store last answered. Past it, the node lets go of every socket with a
 * reconnectable close code (4009), and refuses hellos and resumes, so clients
 * move to a node that can check their channel; it takes them again once the
 * store answers (and then re-checks what it holds, as after any event gap).
 */
import type { Store } from "./store/store.js";

/** Options of {@link StoreWatch}. */
export interface StoreWatchOptions {
  /** Longest time since the store last answered a ping before the node counts it lost, ms. */
  boundMs: number;
  /** Time between pings, ms. Default: a third of the bound, at most 1000. */
  intervalMs?: number;
  /** Called once when the store counts as lost (and again after each recovery and new loss). */
  onLost: (sinceMs: number) => void;
  /** Called once when the store answers again after it counted as lost. */
  onBack: (lostMs: number) => void;
  /** Clock. Default `Date.now`. */
  now?: () => number;
}

/**
 * Pings the store on a timer and keeps the time of the last answer. A ping
 * counts from the moment it was *sent*: the event connection was alive then,
 * so every event published before that moment had already reached this node.
 * A revoked channel is thus served at most `boundMs + intervalMs` after the
 * store was last reachable (the ping timeout of the store is below the interval).
 */
export class StoreWatch {
  readonly boundMs: number;
  readonly intervalMs: number;
  readonly #store: Store;
  readonly #o: StoreWatchOptions;
  readonly #now: () => number;
  #lastOk: number;
  #lostAt: number | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #inFlight = false;

  constructor(store: Store, o: StoreWatchOptions) {
    if (!Number.isSafeInteger(o.boundMs) || o.boundMs < 1) throw new RangeError(`"boundMs" expected a positive integer, got ${o.boundMs}`);
    this.boundMs = o.boundMs;
    this.intervalMs = o.intervalMs ?? Math.max(50, Math.min(1000, Math.floor(o.boundMs / 3)));
    this.#store = store;
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#lastOk = this.#now();
  }

  /** True while the store counts as lost (no answer for longer than the bound). */
  get lost(): boolean {
    return this.#lostAt !== undefined;
  }

  /** When the store last answered (ms since the epoch, the send time of that ping). */
  get lastOk(): number {
    return this.#lastOk;
  }

  start(): void {
    if (this.#timer) return;
    this.#lastOk = this.#now();
    this.#timer = setInterval(() => void this.check(), this.intervalMs);
    this.#timer.unref?.();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Pings the store once, now (the readiness probe's ping, `GET /readyz`): an answer counts
   * exactly as a round's would, so a loss ends the moment any ping is answered, and a probe
   * that says the store answered always finds the node taking hellos and resumes again.
   * @returns whether the store answered.
   */
  async ping(): Promise<boolean> {
    const sent = this.#now();
    try {
      await this.#store.ping();
    } catch {
      return false;
    }
    this.#answered(sent);
    return true;
  }

  /** A ping sent at `sent` was answered: the silence restarts from then, and a loss ends. */
  #answered(sent: number): void {
    this.#lastOk = Math.max(this.#lastOk, sent);
    const lostAt = this.#lostAt;
    if (lostAt !== undefined) {
      this.#lostAt = undefined;
      this.#o.onBack(this.#now() - lostAt);
    }
  }

  /** One round: ping (unless one is still out), then compare the silence with the bound. */
  async check(): Promise<void> {
    if (!this.#inFlight) {
      this.#inFlight = true;
      const sent = this.#now();
      try {
        await this.#store.ping();
        this.#answered(sent);
      } catch {
        /* unanswered: the silence grows */
      } finally {
        this.#inFlight = false;
      }
    }
    const silent = this.#now() - this.#lastOk;
    if (this.#lostAt === undefined && silent > this.boundMs && this.#timer !== undefined) {
      this.#lostAt = this.#now();
      this.#o.onLost(silent);
    }
  }
}
