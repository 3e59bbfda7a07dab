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
