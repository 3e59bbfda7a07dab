/**
 * A fair share of one upstream route's capacity per identity (docs/BACKEND.md
 * "Fair share", DESIGN.md §10): at most `capacity` calls in flight on the
 * route, at most `share` of them for one identity. A call over its identity's
 * share waits behind that identity's own calls; a call that finds the route
 * full waits for the next free slot, and free slots go round-robin among the
 * identities waiting (one each in turn), so identities that hog a slow op
 * delay their own requests, not anyone else's. Waiting counts against the
 * call's timeout; an identity with `capacity` calls already waiting gets
 * `saturated` at once.
 *
 * Everything here is synchronous bookkeeping: a call that gets its slot at
 * once costs one Map lookup.
 */

/** What {@link FairShare.acquire} gives: a slot now, a wait for one, or a refusal (too much waiting). */
export type Admission = "now" | "saturated" | Promise<boolean>;

interface Waiter {
  readonly deadline: number;
  resolve(ok: boolean): void;
}

interface Party {
  inFlight: number;
  readonly waiting: Waiter[];
}

/** How often waiters past their deadline are looked for, ms. */
const SWEEP_MS = 50;

export class FairShare {
  readonly capacity: number;
  readonly share: number;
  #inFlight = 0;
  #waiting = 0;
  readonly #parties = new Map<string, Party>();
  /** Parties with a waiter and room in their share, in round-robin order (insertion order of a Set). */
  readonly #ready = new Set<Party>();
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /**
   * @param capacity - calls in flight on the route, at most.
   * @param share - calls in flight for one identity, at most (lowered to `capacity`).
   */
  constructor(capacity: number, share: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`"capacity" expected a positive integer, got ${String(capacity)}`);
    if (!Number.isSafeInteger(share) || share < 1) throw new RangeError(`"share" expected a positive integer, got ${String(share)}`);
    this.capacity = capacity;
    this.share = Math.min(share, capacity);
  }

  /** Calls in flight on the route. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Calls waiting for a slot. */
  get waiting(): number {
    return this.#waiting;
  }

  /**
   * Asks for a slot for one call of `identity`. "now": the slot is taken; a
   * promise: resolves true when the slot is taken, false when `deadline`
   * (ms since the epoch) passed first; "saturated": refused. Every slot taken
   * must be given back with {@link release}.
   */
  acquire(identity: string, deadline: number): Admission {
    let p = this.#parties.get(identity);
    if (p === undefined) {
      p = { inFlight: 0, waiting: [] };
      this.#parties.set(identity, p);
    }
    if (p.waiting.length === 0 && p.inFlight < this.share && this.#inFlight < this.capacity && this.#ready.size === 0) {
      p.inFlight++;
      this.#inFlight++;
      return "now";
    }
    if (p.waiting.length >= this.capacity) {
      this.#forget(identity, p);
      return "saturated";
    }
    return new Promise<boolean>((resolve) => {
      p.waiting.push({ deadline, resolve });
      this.#waiting++;
      if (p.inFlight < this.share) this.#ready.add(p);
      this.#sweep();
      this.#admit();
    });
  }

  /** Gives back a slot of `identity` taken by {@link acquire}. */
  release(identity: string): void {
    const p = this.#parties.get(identity);
    if (p === undefined || p.inFlight === 0) throw new Error("FairShare.release without a slot");
    p.inFlight--;
    this.#inFlight--;
    if (p.waiting.length > 0 && p.inFlight < this.share) this.#ready.add(p);
    this.#admit();
    this.#forget(identity, p);
  }

  /** Gives free slots to ready parties, one call each in turn. */
  #admit(): void {
    while (this.#inFlight < this.capacity && this.#ready.size > 0) {
      const p = this.#ready.values().next().value as Party;
      this.#ready.delete(p);
      const w = p.waiting.shift()!;
      this.#waiting--;
      p.inFlight++;
      this.#inFlight++;
      // Back of the round when it has more waiting and room left in its share.
      if (p.waiting.length > 0 && p.inFlight < this.share) this.#ready.add(p);
      w.resolve(true);
    }
  }

  #forget(identity: string, p: Party): void {
    if (p.inFlight === 0 && p.waiting.length === 0) this.#parties.delete(identity);
  }

  /** Ends the waits past their deadline (every {@link SWEEP_MS} while anyone waits). */
  #sweep(): void {
    if (this.#sweeper) return;
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const [identity, p] of this.#parties) {
        if (p.waiting.length === 0) continue;
        const kept = p.waiting.filter((w) => w.deadline > now);
        for (const w of p.waiting) if (w.deadline <= now) w.resolve(false);
        this.#waiting -= p.waiting.length - kept.length;
        p.waiting.splice(0, p.waiting.length, ...kept);
        if (kept.length === 0) this.#ready.delete(p);
        this.#forget(identity, p);
      }
      if (this.#waiting === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, SWEEP_MS);
    this.#sweeper.unref();
  }
}
