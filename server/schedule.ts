/**
 * One timer for many deadlines. A broker node keeps one Schedule for the
 * expiring/expired deadlines of every binding it holds, instead of a
 * setTimeout per deadline (each a Timeout object, a closure and its context,
 * some 800 bytes per bound socket; docs/PERFORMANCE.md). Slots sit in a binary min-heap
 * ordered by time; a single unref'd Node timer is armed for the earliest one.
 *
 * Times are wall-clock milliseconds (as `validUntil`); a slot fires once
 * `now() >= at`, never before, in time order (ties in the order of `add`).
 * A delay longer than a Node timer can hold (2^31 − 1 ms, about 24.8 days) is
 * waited for in steps.
 */

/** A deadline in a Schedule. `i` is its place in the heap, -1 once fired or cancelled. */
export interface Slot<T> {
  readonly at: number;
  readonly item: T;
  /** Ties in `at` fire in the order they were added. */
  readonly n: number;
  i: number;
}

/** The timer functions a Schedule uses (tests pass their own). */
export interface Timers {
  set(f: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** Largest delay setTimeout takes (2^31 − 1 ms); longer ones would fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const nodeTimers: Timers = {
  set(f, ms) {
    const t = setTimeout(f, ms);
    t.unref?.();
    return t;
  },
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export class Schedule<T> {
  readonly #heap: Slot<T>[] = [];
  readonly #fire: (item: T, slot: Slot<T>) => void;
  readonly #now: () => number;
  readonly #timers: Timers;
  readonly #onError: (e: unknown) => void;
  #timer: unknown;
  /** When the armed timer is due (Infinity: none armed). */
  #armedFor = Infinity;
  #running = false;
  #added = 0;

  /**
   * @param fire called with a slot's item once it is due; the slot is already out of the schedule.
   * @param options.now clock (wall-clock ms). Default `Date.now`.
   * @param options.timers timer functions. Default: setTimeout/clearTimeout, unref'd (a schedule never keeps the process alive).
   * @param options.onError gets what a `fire` call threw (the other due slots still fire). Default: rethrown from a microtask.
   */
  constructor(fire: (item: T, slot: Slot<T>) => void, options: { now?: () => number; timers?: Timers; onError?: (e: unknown) => void } = {}) {
    this.#fire = fire;
    this.#now = options.now ?? Date.now;
    this.#timers = options.timers ?? nodeTimers;
    this.#onError =
      options.onError ??
      ((e) =>
        queueMicrotask(() => {
          throw e;
        }));
  }

  /** Slots waiting. */
  get size(): number {
    return this.#heap.length;
  }

  /** Time of the earliest slot, if any. */
  get next(): number | undefined {
    return this.#heap[0]?.at;
  }

  /** Schedules `item` for `at` (a time already past fires on the next timer turn). */
  add(at: number, item: T): Slot<T> {
    if (typeof at !== "number" || Number.isNaN(at)) throw new TypeError(`"at" expected a number`);
    const slot: Slot<T> = { at, item, n: this.#added++, i: this.#heap.length };
    this.#heap.push(slot);
    this.#up(slot.i);
    if (!this.#running && at < this.#armedFor) this.#arm();
    return slot;
  }

  /** Takes a slot out (no-op for undefined, or a slot already fired or cancelled). */
  cancel(slot: Slot<T> | undefined): void {
    if (!slot || slot.i < 0 || this.#heap[slot.i] !== slot) return;
    const i = slot.i;
    slot.i = -1;
    const last = this.#heap.pop()!;
    if (last !== slot) {
      this.#heap[i] = last;
      last.i = i;
      this.#down(i);
      this.#up(last.i);
    }
    // The timer is left as it is (it finds nothing due and re-arms), unless nothing is left.
    if (this.#heap.length === 0 && !this.#running) this.#disarm();
  }

  /** Fires every slot due now, in time order, then re-arms the timer. Returns how many fired. */
  runDue(): number {
    if (this.#running) return 0;
    this.#running = true;
    this.#disarm();
    let fired = 0;
    try {
      const now = this.#now();
      for (let s = this.#heap[0]; s !== undefined && s.at <= now; s = this.#heap[0]) {
        this.#popMin();
        fired++;
        try {
          this.#fire(s.item, s);
        } catch (e) {
          this.#onError(e);
        }
      }
    } finally {
      this.#running = false;
      if (this.#heap.length > 0) this.#arm();
    }
    return fired;
  }

  /** Drops every slot and the timer. */
  close(): void {
    for (const s of this.#heap) s.i = -1;
    this.#heap.length = 0;
    this.#disarm();
  }

  #arm(): void {
    this.#disarm();
    const first = this.#heap[0];
    if (!first) return;
    const delay = Math.min(Math.max(0, first.at - this.#now()), MAX_TIMER_MS);
    this.#armedFor = first.at;
    this.#timer = this.#timers.set(() => {
      this.#timer = undefined;
      this.#armedFor = Infinity;
      this.runDue();
    }, delay);
  }

  #disarm(): void {
    if (this.#timer !== undefined) this.#timers.clear(this.#timer);
    this.#timer = undefined;
    this.#armedFor = Infinity;
  }

  #popMin(): void {
    const h = this.#heap;
    const min = h[0]!;
    min.i = -1;
    const last = h.pop()!;
    if (last !== min) {
      h[0] = last;
      last.i = 0;
      this.#down(0);
    }
  }

  #less(a: Slot<T>, b: Slot<T>): boolean {
    return a.at < b.at || (a.at === b.at && a.n < b.n);
  }

  #up(i: number): void {
    const h = this.#heap;
    const s = h[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p]!;
      if (!this.#less(s, parent)) break;
      h[i] = parent;
      parent.i = i;
      i = p;
    }
    h[i] = s;
    s.i = i;
  }

  #down(i: number): void {
    const h = this.#heap;
    const s = h[i]!;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.#less(h[r]!, h[l]!) ? r : l;
      const child = h[c]!;
      if (!this.#less(child, s)) break;
      h[i] = child;
      child.i = i;
      i = c;
    }
    h[i] = s;
    s.i = i;
  }
}
