/** Local rate limiting: fixed windows and counters, cheap enough to run before any crypto. */

/** Counts events per key in fixed windows of `windowMs`; `take` says whether one more is allowed. */
export class FixedWindow {
  #counts = new Map<string, number>();
  #window = 0;
  readonly limit: number;
  readonly windowMs: number;
  readonly #now: () => number;
  constructor(limit: number, windowMs: number, now: () => number = Date.now) {
    this.limit = limit;
    this.windowMs = windowMs;
    this.#now = now;
  }
  take(key: string): boolean {
    const w = Math.floor(this.#now() / this.windowMs);
    if (w !== this.#window) {
      this.#window = w;
      this.#counts.clear();
    }
    const n = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, n);
    return n <= this.limit;
  }
}

/** Live counts per key (connections per address). */
export class Counter {
  #counts = new Map<string, number>();
  get(key: string): number {
    return this.#counts.get(key) ?? 0;
  }
  inc(key: string): number {
    const n = this.get(key) + 1;
    this.#counts.set(key, n);
    return n;
  }
  dec(key: string): void {
    const n = this.get(key) - 1;
    if (n > 0) this.#counts.set(key, n);
    else this.#counts.delete(key);
  }
}
