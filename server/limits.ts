/** Local rate limiting: fixed windows and counters, cheap enough to run before any crypto. */
import { isIPv6 } from "node:net";

/**
 * The key per-address limits count under: an IPv4 address as it is (an
 * IPv4-mapped IPv6 address as its IPv4), an IPv6 address by its /64 — one
 * subscriber usually holds a whole /64, 2^64 addresses (SECURITY.md W11).
 * Anything else (a name, "unknown") is its own key.
 */
export function limitKey(address: string): string {
  const a = address.replace(/%.*$/, ""); // zone index: fe80::1%eth0
  if (!isIPv6(a)) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (mapped) return mapped[1]!;
  const [head, tail] = a.includes("::") ? a.split("::") : [a, undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  // An embedded IPv4 tail (::1.2.3.4) takes two groups; it lies past the first four unless the address is odd.
  const rightGroups = right.reduce((n, g) => n + (g.includes(".") ? 2 : 1), 0);
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - rightGroups).fill("0"), ...right];
  return groups.slice(0, 4).map((g) => (g.includes(".") ? g : parseInt(g, 16).toString(16))).join(":") + "::/64";
}

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
  /** Whether `key` has used up the current window (counts nothing). */
  spent(key: string): boolean {
    return Math.floor(this.#now() / this.windowMs) === this.#window && (this.#counts.get(key) ?? 0) >= this.limit;
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

/**
 * A node-wide budget of `budget` events per window that degrades fairly under
 * a distributed flood (PROTOCOL.md §11.1). Each key (a client address, see
 * {@link limitKey}) may take at most its fair share in a window:
 *
 *   share = max(1, floor(budget / (n + 1)))
 *
 * where n is the number of keys that asked (admitted or not) in the window
 * before, and the + 1 keeps one share free for a key that was not there. So
 * while no more keys ask than asked the window before, plus one, the shares
 * sum to at most the budget and every key gets its share, a newcomer
 * included: a flood from many addresses slows each of them to its share but
 * cannot take the whole budget. With one or no key asking, the share is the
 * whole budget (light load is not limited beyond the per-address limit).
 * TCP already proves the source address (no spoofing), so this needs no
 * cookie round trip of the kind WireGuard uses over UDP.
 *
 * Memory: one map entry per key that asked in the current window.
 */
export class FairWindow {
  /** Admissions per key in the current window (0 for a key that asked and was refused). */
  #counts = new Map<string, number>();
  #window = Number.NEGATIVE_INFINITY;
  #used = 0;
  #share: number;
  readonly budget: number;
  readonly windowMs: number;
  readonly #now: () => number;

  /**
   * @param budget - events per window on this node, from all keys (≥ 1)
   * @param windowMs - window length, ms (default 1000)
   * @param now - clock (default `Date.now`)
   */
  constructor(budget: number, windowMs = 1000, now: () => number = Date.now) {
    if (!Number.isSafeInteger(budget) || budget < 1) throw new RangeError(`"budget" expected an integer ≥ 1, got ${budget}`);
    if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`"windowMs" expected an integer ≥ 1, got ${windowMs}`);
    this.budget = budget;
    this.windowMs = windowMs;
    this.#now = now;
    this.#share = budget;
  }

  /** The current fair share per key (after rolling the window to now). */
  get share(): number {
    this.#roll();
    return this.#share;
  }

  /** Counts one ask by `key`; true when it is admitted (within the budget and within the key's share). */
  take(key: string): boolean {
    this.#roll();
    const n = this.#counts.get(key) ?? 0;
    if (n >= this.#share || this.#used >= this.budget) {
      if (n === 0) this.#counts.set(key, 0); // it asked: it counts towards the next window's shares
      return false;
    }
    this.#counts.set(key, n + 1);
    this.#used++;
    return true;
  }

  #roll(): void {
    const w = Math.floor(this.#now() / this.windowMs);
    if (w === this.#window) return;
    // Keys that asked in the window just before; after an idle window, none.
    const asked = w === this.#window + 1 ? this.#counts.size : 0;
    this.#share = Math.max(1, Math.floor(this.budget / (asked + 1)));
    this.#window = w;
    this.#counts.clear();
    this.#used = 0;
  }
}
