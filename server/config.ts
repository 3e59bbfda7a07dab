/**
 * Broker configuration: typed, with defaults, validated at start. A malformed
 * value fails fast with a message naming the setting; nothing falls back silently.
 * The limits are those of docs/PROTOCOL.md §11.
 */
import { homedir, hostname } from "node:os";
import { join } from "node:path";
import { AddressRanges } from "./limits.js";
import { type ChannelType, type KemType, MAX_FRAME_BYTES, channelTypes as allChannelTypes, isChannelType, kemTypes } from "../shared/frames.js";

export interface Limits {
  /** Largest WebSocket message accepted (bytes); larger closes with 1009. */
  maxFrameBytes: number;
  /** Time from connection (or hello) to a bound channel before close 4001. */
  handshakeTimeoutMs: number;
  /** Open connections per client address (more get HTTP 429 on upgrade). */
  connectionsPerAddress: number;
  /** Hellos per client address per window. */
  hellosPerAddress: number;
  hellosWindowMs: number;
  /**
   * A fixed cap on hellos per second on this node, shared fairly among addresses (PROTOCOL.md §11.1);
   * 0 (the default): none, the node admits by capacity (§11.4).
   */
  hellosPerSecond: number;
  /** Resumes per client address per window (`hellosWindowMs`): their own budget, apart from hellos. */
  resumesPerAddress: number;
  /** A fixed cap on resumes per second on this node, shared fairly among addresses (§11.1); 0 (the default): none. */
  resumesPerSecond: number;
  /** Admission by capacity (§11.4): hellos are admitted while the event loop's lag is under this (ms). */
  helloLagMs: number;
  /** Resumes of channels that exist are admitted while the lag is under this (ms): larger than `helloLagMs`. */
  resumeLagMs: number;
  /** Resumes of one existing channel per window (`hellosWindowMs`), from a listed fleet range (§11.3). */
  resumesPerChannel: number;
  /** Sockets with no channel bound yet per address of a listed fleet range; past it the oldest is cut (§11.3). */
  fleetUnprovenPerAddress: number;
  /**
   * The longest this node serves its bound channels without reaching the
   * store (it cannot hear revocations meanwhile): past it every socket is
   * closed with 4009 and hellos and resumes are refused until the store answers.
   */
  storeLossBoundMs: number;
  /** Proven handshakes per identity per minute (counted after the proof verifies). */
  handshakesPerIdentityPerMinute: number;
  /** Requests being handled per connection. */
  inFlightPerConnection: number;
  /** Frames received but not yet processed, per connection. */
  queuedFramesPerConnection: number;
  /**
   * Frames that fail authentication (answered `unauthorised`: unknown channel, forged or
   * replayed ciphertext) per connection since its last authenticated frame; one more closes
   * it with too_many, 4002 (PROTOCOL.md §11).
   */
  failedFramesPerConnection: number;
  /** Frames that fail authentication per client address per window (`hellosWindowMs`), all its connections together; past it, 4002. */
  failedFramesPerAddress: number;
  /** Bytes waiting in a socket's send buffer before the consumer is cut off (4003). */
  sendBufferBytes: number;
  /** WebSocket ping interval; a peer that misses one pong is closed. */
  pingIntervalMs: number;
}

export interface BrokerConfig {
  port: number;
  host: string;
  /** The `source` in server frames: the URL clients use. */
  source: string;
  /** Holds the server key (server-key.pem, mode 0600). */
  dataDir: string;
  /** Channel lifetime in seconds. */
  channelTtl: number;
  /** Seconds before expiry at which `expiring` is pushed. */
  expiringBefore: number;
  /** Closed service: only keys in `keysFile` get a channel. */
  closed: boolean;
  keysFile: string | undefined;
  /** Name of this node in logs and channel records. */
  node: string;
  /** Behind a load balancer: the client address is the last X-Forwarded-For entry. */
  trustProxy: boolean;
  /**
   * Address ranges (CIDR, IPv4 or IPv6) where many devices share one address
   * (carrier-grade NAT, an office): their limits scale with proven channels,
   * not addresses (PROTOCOL.md §11.3). Default none.
   */
  fleetRanges: readonly string[];
  /** Application pushes kept per identity for clients that are away (count and age). */
  pushWindow: { count: number; ageMs: number };
  /**
   * Channel types this node grants (PROTOCOL.md §5.1: the client's order picks
   * among them). Default: every type. Resumes of existing channels keep their type.
   */
  channelTypes: readonly ChannelType[];
  /** KEM types accepted in a hello (PROTOCOL.md §5.3): default all, X-Wing included (PROTOCOL.md §5.3.1). */
  kems: readonly KemType[];
  limits: Limits;
}

export const defaultLimits: Limits = {
  maxFrameBytes: MAX_FRAME_BYTES,
  handshakeTimeoutMs: 10_000,
  connectionsPerAddress: 64,
  hellosPerAddress: 20,
  hellosWindowMs: 10_000,
  hellosPerSecond: 0,
  // Generous: resumes are cheap, many clients may share one address (NAT), and the node admits by capacity (§11.4).
  resumesPerAddress: 300,
  resumesPerSecond: 0,
  // A loop 100 ms behind on its own work delays every bound client's requests by as much: new handshakes
  // wait; resumes (no signature; the clients of a failed node) until 300 ms. Handshake time is 10 s.
  helloLagMs: 100,
  resumeLagMs: 300,
  resumesPerChannel: 10,
  fleetUnprovenPerAddress: 1024,
  storeLossBoundMs: 15_000,
  handshakesPerIdentityPerMinute: 30,
  inFlightPerConnection: 64,
  queuedFramesPerConnection: 256,
  // Twice the requests in flight: a client whose channel died while 64 were out loses them all without a close.
  failedFramesPerConnection: 128,
  // Above the resumes per address: each resume of an expired channel fails its first request once.
  failedFramesPerAddress: 1000,
  sendBufferBytes: 4 * 1024 * 1024,
  pingIntervalMs: 30_000,
};

/** The default data directory: `$PSIMBOLS_HOME/server` or `~/.psimbols/server`. */
export function defaultDataDir(): string {
  return join(process.env.PSIMBOLS_HOME ?? join(homedir(), ".psimbols"), "server");
}

/** Fills defaults and validates. @throws Error naming the bad setting. */
export function resolveConfig(input: Partial<Omit<BrokerConfig, "limits">> & { limits?: Partial<Limits> } = {}): BrokerConfig {
  const port = input.port ?? 9393;
  const host = input.host ?? "127.0.0.1";
  const channelTtl = input.channelTtl ?? 3600;
  const c: BrokerConfig = {
    port,
    host,
    source: input.source ?? `ws://${host.includes(":") ? `[${host}]` : host}:${port}/`,
    dataDir: input.dataDir ?? defaultDataDir(),
    channelTtl,
    expiringBefore: input.expiringBefore ?? Math.min(Math.floor(channelTtl / 4), 300),
    closed: input.closed ?? false,
    keysFile: input.keysFile,
    node: input.node ?? `${hostname()}:${process.pid}`,
    trustProxy: input.trustProxy ?? false,
    fleetRanges: input.fleetRanges ?? [],
    pushWindow: { count: 1000, ageMs: 3600_000, ...input.pushWindow },
    channelTypes: input.channelTypes ?? allChannelTypes,
    kems: input.kems ?? kemTypes,
    limits: { ...defaultLimits, ...input.limits },
  };
  kemList(c.kems);
  integer("port", c.port, 0, 65535);
  integer("channel-ttl", c.channelTtl, 2, 366 * 86400);
  integer("expiring-before", c.expiringBefore, 0, c.channelTtl - 1);
  // Below the store's ping timeout (1 s) one slow answer would count as a loss.
  integer("store-loss-bound (ms)", c.limits.storeLossBoundMs, 1000, 2 ** 31);
  // The node-wide fixed caps are off at 0 (admission by capacity, §11.4); every other limit is at least 1.
  // Named as the serve option that sets it: helloLagMs is --hello-lag (ms).
  const option = (k: string) => k.replace(/Ms$/, "").replace(/[A-Z]/g, (x) => `-${x.toLowerCase()}`) + (k.endsWith("Ms") ? " (ms)" : "");
  for (const [k, v] of Object.entries(c.limits)) integer(option(k), v, k === "hellosPerSecond" || k === "resumesPerSecond" ? 0 : 1, 2 ** 31);
  const { helloLagMs, resumeLagMs, handshakeTimeoutMs } = c.limits;
  if (resumeLagMs < helloLagMs) {
    throw new Error(`settings hello-lag and resume-lag: resume-lag (${resumeLagMs} ms) must be at least hello-lag (${helloLagMs} ms): resumes must pass while hellos are shed (PROTOCOL.md §11.4)`);
  }
  // A target near the handshake time would let admitted handshakes queue until they time out (§11.4).
  if (resumeLagMs > handshakeTimeoutMs / 2) {
    throw new Error(`settings hello-lag and resume-lag: each at most half the handshake timeout (${handshakeTimeoutMs / 2} ms), got ${helloLagMs} and ${resumeLagMs} ms: an admitted handshake must finish well within it (PROTOCOL.md §11.4)`);
  }
  integer("push-window-count", c.pushWindow.count, 1, 1_000_000);
  integer("push-window-age", c.pushWindow.ageMs, 1000, 30 * 86400_000);
  checkChannelTypes(c.channelTypes);
  if (!Array.isArray(c.fleetRanges)) throw new Error(`setting fleet-range: expected a list of CIDR prefixes`);
  new AddressRanges(c.fleetRanges); // throws naming a bad prefix
  return c;
}

/** `--channel-types`: a non-empty list of exact type names, no repeats. */
function checkChannelTypes(v: unknown): void {
  const expected = `a non-empty list of ${allChannelTypes.join(", ")}`;
  if (!Array.isArray(v) || v.length === 0) throw new Error(`setting channel-types: expected ${expected}`);
  for (const t of v) if (!isChannelType(t)) throw new Error(`setting channel-types: expected ${expected}, got ${JSON.stringify(String(t)).slice(0, 80)}`);
  if (new Set(v).size !== v.length) throw new Error(`setting channel-types: a type is listed twice`);
}

/** Parses the `--channel-types` option: names separated by commas. @throws Error naming the setting. */
export function parseChannelTypes(text: string): ChannelType[] {
  const list = text.split(",").map((t) => t.trim()).filter((t) => t !== "");
  checkChannelTypes(list);
  return list as ChannelType[];
}

function integer(name: string, v: unknown, min: number, max: number): void {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new Error(`setting ${name}: expected an integer in ${min}..${max}, got ${String(v)}`);
  }
}

/** `kems`: a non-empty list of known KEM types, each once. */
function kemList(v: unknown): void {
  const ok = Array.isArray(v) && v.length > 0 && v.every((k, i) => kemTypes.includes(k as KemType) && v.indexOf(k) === i);
  if (!ok) throw new Error(`setting kems: expected a non-empty list of distinct KEM types from ${kemTypes.join(", ")}, got ${JSON.stringify(v)}`);
}
