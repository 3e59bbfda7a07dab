/**
 * Warn lines for refused API calls that a flood cannot multiply
 * (docs/BACKEND.md "Server API", "Logs"): the first refusal of an address
 * is logged at once; the refusals that follow within the interval are summed
 * into one line per address at the interval's end, with their count and
 * reasons. An address is forgotten after a quiet interval. At most
 * `maxAddresses` addresses are tracked; refusals from more are summed into one
 * line for all of them. So a node writes at most `maxAddresses + 1` lines per
 * interval, plus one per newly refused address, whatever the rate.
 */
import type { Logger } from "../log.js";

/** Defaults: one line per address per 10 s, at most 1000 addresses tracked. */
export const REFUSAL_LOG_DEFAULTS = { intervalMs: 10_000, maxAddresses: 1000 } as const;

interface Entry {
  count: number;
  reasons: Record<string, number>;
}

export class RefusalLog {
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #maxAddresses: number;
  readonly #entries = new Map<string, Entry>();
  #others: Entry = { count: 0, reasons: {} };
  #otherAddresses = new Set<string>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(log: Logger, o: { intervalMs?: number; maxAddresses?: number } = {}) {
    this.#log = log;
    this.#intervalMs = o.intervalMs ?? REFUSAL_LOG_DEFAULTS.intervalMs;
    this.#maxAddresses = o.maxAddresses ?? REFUSAL_LOG_DEFAULTS.maxAddresses;
  }

  /** One refused call from `address`; `reason` is a fixed word (never the caller's input). */
  refused(address: string, reason: string): void {
    const e = this.#entries.get(address);
    if (e) return add(e, reason);
    this.#start();
    if (this.#entries.size >= this.#maxAddresses) {
      // The refusals are counted exactly; their distinct addresses up to ten times the bound, so this set cannot grow without end either.
      if (this.#otherAddresses.size < 10 * this.#maxAddresses) this.#otherAddresses.add(address);
      return add(this.#others, reason);
    }
    this.#entries.set(address, { count: 0, reasons: {} });
    this.#log.warn("API call refused", { address, reason });
  }

  /** Writes the summed lines now (the timer calls this every interval). */
  flush(): void {
    const seconds = this.#intervalMs / 1000;
    for (const [address, e] of this.#entries) {
      if (e.count === 0) {
        this.#entries.delete(address); // quiet for an interval: its next refusal is logged at once
        continue;
      }
      this.#log.warn("API calls refused", { address, count: e.count, reasons: e.reasons, seconds });
      e.count = 0;
      e.reasons = {};
    }
    if (this.#others.count > 0) {
      this.#log.warn("API calls refused from addresses past the log's bound", { addresses: this.#otherAddresses.size, count: this.#others.count, reasons: this.#others.reasons, seconds });
      this.#others = { count: 0, reasons: {} };
      this.#otherAddresses = new Set();
    }
    if (this.#entries.size === 0) this.close();
  }

  /** Stops the timer; what was summed and not yet written is dropped. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.flush(), this.#intervalMs);
    this.#timer.unref();
  }
}

function add(e: Entry, reason: string): void {
  e.count++;
  e.reasons[reason] = (e.reasons[reason] ?? 0) + 1;
}
