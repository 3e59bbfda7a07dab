/**
 * The store interface: every piece of state that outlives one socket.
 * Two implementations pass one contract suite (test/server/store-contract.ts):
 * the embedded memory store and the Redis store. DESIGN.md §6.
 */
import type { ChannelType } from "../../shared/frames.js";

/** A channel as the store keeps it. `key` is the 32-byte channel key. */
export interface ChannelRecord {
  readonly id: string;
  /** Fingerprint of the identity key that proved ownership. */
  readonly identity: string;
  readonly key: Uint8Array;
  /** The channel type chosen in its handshake: every binding of the channel (a resume too) uses it. */
  readonly type: ChannelType;
  /** Expiry, milliseconds since the epoch. */
  readonly validUntil: number;
  /** Seconds of life at issue. */
  readonly ttl: number;
  /** Node that granted it (for operators). */
  readonly node: string;
  /**
   * Where the channel's socket is (for operators): set by `activate` (the granting connection)
   * and by each `bind` (a resume, on any node), let go of by `release`. Absent on records
   * written by nodes older than this field.
   */
  readonly holder?: Holder;
  /**
   * Set once the channel is retired. A retired record is kept (key still
   * wrapped) until `validUntil` as a tombstone, so a client that resumes after
   * missing the notice learns, authenticated, why its channel ended.
   */
  readonly retired?: RetireReason;
  /**
   * The identity's push id the channel started from (PROTOCOL.md §6.5, §7.2): its newest
   * push id when the channel was granted (on a renewal, the one its connection had reached).
   * A resume catches up from here when the client names no `last_push`, so pushes
   * acknowledged while a client that never got one was away are not skipped. Absent on
   * records written by nodes older than this field (a resume then starts at the newest id).
   */
  readonly pushFrom?: number;
  /**
   * What calls to the application carry about this channel (docs/BACKEND.md):
   * set only on nodes with an upstream or an authorize hook. Kept wrapped at rest, like `key`.
   */
  readonly app?: ChannelApp;
}

/**
 * The connection that holds a channel's socket, or held it last (docs/CLUSTER.md, Operating a cluster).
 * Read with {@link Store.liveInstances}: a holder whose `instance` no longer beats is a node gone.
 */
export interface Holder {
  /** The node's name (`--node`). */
  readonly node: string;
  /** The node process: random per start, so a node restarted under the same name is another instance. */
  readonly instance: string;
  /** The connection holding the socket; absent once it closed (`release`). */
  readonly conn?: string;
}

/** The identity's public key (wire form) and the authorize hook's `info` (JSON text), for calls to the application. */
export interface ChannelApp {
  readonly publicKey: { readonly type: string; readonly data: string };
  readonly info?: string;
}

/** One kept application push of an identity. `seq` rises by one per identity. */
export interface KeptPush {
  readonly seq: number;
  /** The message as JSON text. */
  readonly data: string;
}

/** Bounds of the per-identity push window. */
export interface PushWindow {
  /** Most pushes kept per identity. */
  readonly count: number;
  /** Longest a push is kept, ms. */
  readonly ageMs: number;
}

/** Why a channel stopped being usable. */
export type RetireReason = "replaced" | "revoked" | "closed" | "expired";

/** Events that reach every node holding a socket of `identity`. */
export type StoreEvent =
  | { kind: "retired"; identity: string; channel: string; reason: RetireReason }
  /** A new binding (resume) took over `channel`: older bindings must let go. */
  | { kind: "rebound"; identity: string; channel: string; binding: string }
  /** An application push for `identity` (all its channels), or for one `channel` of it. */
  | { kind: "push"; identity: string; channel?: string; seq: number; data: string };

/**
 * What a store logs through: the level methods and `child` of a winston
 * logger (server/log.ts), so the store depends on no logging package.
 */
export interface StoreLogger {
  error(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
  info(message: string, meta?: Record<string, unknown>): unknown;
  debug(message: string, meta?: Record<string, unknown>): unknown;
  child(meta: Record<string, unknown>): StoreLogger;
}

/** A logger that drops everything (a store's default). */
export const silentStoreLogger: StoreLogger = {
  error: () => undefined,
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
  child: () => silentStoreLogger,
};

export interface Store {
  /**
   * Atomically writes `rec`, makes it the active channel of its identity and
   * deletes the channel it replaces (publishing `retired`/`replaced` for it).
   * @returns the id of the replaced channel, if any.
   */
  activate(rec: ChannelRecord): Promise<string | undefined>;
  /**
   * The channel, or undefined when unknown or expired. A retired channel is
   * returned with `retired` set (a tombstone) until its `validUntil`.
   */
  getChannel(id: string): Promise<ChannelRecord | undefined>;
  /** Active channel id of an identity. */
  activeChannel(identity: string): Promise<string | undefined>;
  /**
   * Marks a live channel retired (kept as a tombstone, see ChannelRecord.retired),
   * clears the identity's active pointer if it names it, and publishes `retired`.
   * `activate` does the same for the channel it replaces, with reason `replaced`.
   * @returns whether a live (not expired, not already retired) channel was retired.
   */
  retire(id: string, reason: RetireReason): Promise<boolean>;
  /** Retires the active channel of an identity. @returns the retired ids. */
  retireIdentity(identity: string, reason: RetireReason): Promise<string[]>;
  /**
   * Records that `binding` now owns `channel`, and `holder` (its connection) holds its socket,
   * and publishes `rebound`. Nothing changes on a tombstone.
   */
  bind(channel: string, identity: string, binding: string, holder: Holder): Promise<void>;
  /**
   * The connection `conn` let go of `channel`'s socket: the holder stays (as where the channel
   * was last) without its `conn`. A compare-and-set: only if `conn` still holds it, so a late
   * call from a node that lost the channel to a resume elsewhere changes nothing.
   * @returns whether it let go (false: another connection holds it, or the channel is unknown).
   */
  release(channel: string, conn: string): Promise<boolean>;
  /** This node instance is alive for `ttlMs` from now (Redis's clock for the Redis store). */
  beat(instance: string, ttlMs: number): Promise<void>;
  /** Those of `instances` whose last beat has not yet run out. */
  liveInstances(instances: Iterable<string>): Promise<Set<string>>;
  /** All live channels (for operators; bounded by the store's size). */
  listChannels(): Promise<ChannelRecord[]>;
  /**
   * Appends a push to the identity's window and publishes it, in one atomic
   * step; trims the window to `window.count` entries and `window.ageMs`.
   * Under Sentinel with the replica wait, the event is published only once a
   * replica has the push (so no receiver delivers a number a failover could
   * give again); then events of concurrent pushes from two nodes to one
   * identity may arrive out of seq order, and a receiver that sees a gap
   * fetches the missing ones with `pushesSince`.
   * Data is kept encrypted at rest by stores that persist it. At least once
   * from the caller's view: a call that fails with `unavailable` after the
   * store ran it has landed, and a retry lands again under a new seq.
   * @returns the push's sequence number (1, 2, 3, ... per identity).
   */
  push(identity: string, data: string, window: PushWindow, channel?: string): Promise<number>;
  /**
   * The kept pushes of an identity with seq > `after`, in order; `[]` when
   * `after` is the newest seq; `"gap"` when some of them already fell out of the
   * window, or when `after` is beyond the newest seq (the counter was lost).
   */
  pushesSince(identity: string, after: number): Promise<KeptPush[] | "gap">;
  /** Highest push seq of an identity so far (0 for none). */
  lastPush(identity: string): Promise<number>;
  /**
   * Counts one event under `key` in a fixed window of `windowMs` and returns
   * the count so far in this window (rate limits shared by all nodes).
   */
  hit(key: string, windowMs: number): Promise<number>;
  /**
   * Takes the lease `key` for `owner` for `ttlMs`, only if nobody holds it, in
   * one atomic step shared by all nodes: of concurrent calls exactly one gets
   * true (an identity move takes `move:<identity>`, PROTOCOL.md §5.7).
   * @returns whether this call took it.
   */
  lease(key: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Gives the lease `key` back, only if `owner` still holds it (one atomic step). */
  unlease(key: string, owner: string): Promise<void>;
  /** Events are delivered for identities that are watched on this node. */
  watch(identity: string): void;
  unwatch(identity: string): void;
  onEvent(handler: (e: StoreEvent) => void): void;
  /**
   * Called after events may have been lost (the subscription dropped and came
   * back): the node re-checks every channel bound on it and every push window.
   */
  onResync(handler: () => void): void;
  /** Resolves when the store answers; rejects when it is unreachable. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
