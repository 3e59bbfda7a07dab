/**
 * The store interface: every piece of state that outlives one socket.
 * Two implementations pass one contract suite (test/server/store-contract.ts):
 * the embedded memory store and the Redis store. DESIGN.md §6.
 */

/** A channel as the store keeps it. `key` is the 32-byte channel key. */
export interface ChannelRecord {
  readonly id: string;
  /** Fingerprint of the identity key that proved ownership. */
  readonly identity: string;
  readonly key: Uint8Array;
  readonly type: "AES-256-GCM";
  /** Expiry, milliseconds since the epoch. */
  readonly validUntil: number;
  /** Seconds of life at issue. */
  readonly ttl: number;
  /** Node that granted it (for operators). */
  readonly node: string;
}

/** Why a channel stopped being usable. */
export type RetireReason = "replaced" | "revoked" | "closed" | "expired";

/** Events that reach every node holding a socket of `identity`. */
export type StoreEvent =
  | { kind: "retired"; identity: string; channel: string; reason: RetireReason }
  /** A new binding (resume) took over `channel`: older bindings must let go. */
  | { kind: "rebound"; identity: string; channel: string; binding: string };

export interface Store {
  /**
   * Atomically writes `rec`, makes it the active channel of its identity and
   * deletes the channel it replaces (publishing `retired`/`replaced` for it).
   * @returns the id of the replaced channel, if any.
   */
  activate(rec: ChannelRecord): Promise<string | undefined>;
  /** The channel, or undefined when unknown, expired or retired. */
  getChannel(id: string): Promise<ChannelRecord | undefined>;
  /** Active channel id of an identity. */
  activeChannel(identity: string): Promise<string | undefined>;
  /** Deletes a channel and publishes `retired`. @returns whether it existed. */
  retire(id: string, reason: RetireReason): Promise<boolean>;
  /** Retires the active channel of an identity. @returns the retired ids. */
  retireIdentity(identity: string, reason: RetireReason): Promise<string[]>;
  /** Records that `binding` now owns `channel` and publishes `rebound`. */
  bind(channel: string, identity: string, binding: string): Promise<void>;
  /** All live channels (for operators; bounded by the store's size). */
  listChannels(): Promise<ChannelRecord[]>;
  /**
   * Counts one event under `key` in a fixed window of `windowMs` and returns
   * the count so far in this window (rate limits shared by all nodes).
   */
  hit(key: string, windowMs: number): Promise<number>;
  /** Events are delivered for identities that are watched on this node. */
  watch(identity: string): void;
  unwatch(identity: string): void;
  onEvent(handler: (e: StoreEvent) => void): void;
  /** Resolves when the store answers; rejects when it is unreachable. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
