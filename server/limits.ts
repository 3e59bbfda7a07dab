/** Local rate limiting: fixed windows and counters, cheap enough to run before any crypto. */
import { BlockList, isIP, isIPv6 } from "node:net";

/**
 * The key per-address limits count under: an IPv4 address as it is (an
 * IPv4-mapped IPv6 address as its IPv4), an IPv6 address by its /64 — one
 * subscriber usually holds a whole /64, 2^64 addresses (SECURITY.md W11).
 * Anything else (a name, "unknown") is its own key.
 */
export function limitKey(address: string): string {
  if (!address.includes(":")) return address; // IPv4 or a name: itself (runs a few times per connection)
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
  /** The current window's number: what {@link give} takes, so that a refund never reaches a later window. */
  get window(): number {
    return Math.floor(this.#now() / this.windowMs);
  }
  /** Gives one event back to `key`, if window `w` is still the current one (PROTOCOL.md §11.3: a proven hello). */
  give(key: string, w: number): void {
    if (w !== this.#window) return;
    const n = this.#counts.get(key) ?? 0;
    if (n > 1) this.#counts.set(key, n - 1);
    else this.#counts.delete(key);
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

/**
 * Listed address ranges (`--fleet-range CIDR`, PROTOCOL.md §11.3): IPv4 and
 * IPv6 prefixes. An IPv4-mapped IPv6 address matches as its IPv4.
 */
export class AddressRanges {
  readonly #list = new BlockList();
  readonly size: number;
  /** @throws Error naming the setting and the bad entry. */
  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const m = /^([^/]+)\/(\d{1,3})$/.exec(c);
      const family = m ? isIP(m[1]!) : 0;
      const prefix = m ? Number(m[2]) : NaN;
      if (!m || family === 0 || prefix > (family === 4 ? 32 : 128)) {
        throw new Error(`setting fleet-range: expected an IPv4 or IPv6 prefix such as 203.0.113.0/24 or 2001:db8::/48, got ${JSON.stringify(String(c)).slice(0, 80)}`);
      }
      this.#list.addSubnet(m[1]!, prefix, family === 4 ? "ipv4" : "ipv6");
    }
    this.size = cidrs.length;
  }
  /** Whether `address` (a socket's or a forwarded one) lies in a listed range. */
  has(address: string): boolean {
    if (this.size === 0) return false;
    const a = address.replace(/%.*$/, "");
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
    if (mapped) return this.#list.check(mapped[1]!, "ipv4");
    const family = isIP(a);
    return family !== 0 && this.#list.check(a, family === 4 ? "ipv4" : "ipv6");
  }
}

/** What {@link Unproven} holds: a socket it can cut. */
interface Cuttable {
  destroy(): void;
}

/**
 * Sockets from listed ranges (PROTOCOL.md §11.3) that no channel is bound on
 * yet, per address key, oldest first. Past `limit` for one key, the oldest
 * is cut to make room: a flood from the address cannot hold the slots that
 * its devices need to get back in. A socket leaves when it is proven (a
 * channel established, or a resume of a channel that exists) or closes.
 * Proven sockets are counted per key too (a gauge, and the sockets limit).
 */
export class Unproven {
  readonly #byKey = new Map<string, Set<Cuttable>>();
  readonly #keyOf = new Map<Cuttable, string>();
  readonly #proven = new Counter();
  readonly #provenKey = new Map<Cuttable, string>();
  /** Sockets cut to make room, since start. */
  evicted = 0;
  readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }

  /** Holds `socket` under `key`; cuts the key's oldest unproven socket when it already holds `limit`. */
  add(key: string, socket: Cuttable): void {
    let set = this.#byKey.get(key);
    if (!set) this.#byKey.set(key, (set = new Set()));
    while (set.size >= this.limit) {
      const oldest = set.values().next().value as Cuttable;
      this.#forget(oldest);
      this.evicted++;
      oldest.destroy();
    }
    set.add(socket);
    this.#keyOf.set(socket, key);
  }

  /** `socket` is proven: it leaves the unproven set (nothing happens for a socket not held). */
  prove(socket: Cuttable): void {
    const key = this.#keyOf.get(socket);
    if (key === undefined) return;
    this.#forget(socket);
    this.#proven.inc(key);
    this.#provenKey.set(socket, key);
  }

  /** `socket` closed. */
  delete(socket: Cuttable): void {
    this.#forget(socket);
    const key = this.#provenKey.get(socket);
    if (key === undefined) return;
    this.#provenKey.delete(socket);
    this.#proven.dec(key);
  }

  /** Unproven sockets held under `key`. */
  unproven(key: string): number {
    return this.#byKey.get(key)?.size ?? 0;
  }

  /** Proven sockets open under `key`. */
  proven(key: string): number {
    return this.#proven.get(key);
  }

  #forget(socket: Cuttable): void {
    const key = this.#keyOf.get(socket);
    if (key === undefined) return;
    this.#keyOf.delete(socket);
    const set = this.#byKey.get(key)!;
    set.delete(socket);
    if (set.size === 0) this.#byKey.delete(key);
  }
}
