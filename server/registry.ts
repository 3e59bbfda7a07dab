/**
 * Registered keys: a JSON file managed by `psimbols keys add|list|remove`,
 * re-read by a running broker when it changes (or a Redis hash, below). A
 * closed service serves only registered keys; any service serves the
 * `operator` role's operations only to operators and refuses `blocked` keys.
 *
 * File format (version 1):
 *   {"version":1,"keys":[{"fingerprint":"SHA256:…","public_key":{"type","data"},
 *                         "role":"client"|"operator"|"blocked","comment":"…","added":"RFC 3339",
 *                         "updated"?:"RFC 3339","moved_from"?:"SHA256:…","moved"?:"RFC 3339"}]}
 * A `blocked` entry may name its key by fingerprint alone (no `public_key`);
 * blocking by fingerprint a key that is registered keeps its public key (and
 * its comment, unless one is given), so that unblocking restores it.
 * A comment is one line of at most 200 characters without control characters
 * (shared/comment.ts), checked on every write.
 * `added` is when the key was first registered; a later change of its role or
 * comment keeps it and sets `updated` (docs/BACKEND.md "Calls", `POST /v1/keys`).
 *
 * Every write (add, remove, move; from the server API, the CLI or a handshake)
 * is one atomic step (DESIGN.md §11): on the file a read-modify-write under its
 * lock, the file replaced by rename (server/file-lock.ts); on Redis one HDEL or
 * compare-and-set script (add, move).
 */
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { replaceFile, withFileLock } from "./file-lock.js";
import type { Redis } from "ioredis";
import { createRedis, parseRedisAddress } from "./store/redis-address.js";
import type { PublicKey } from "../shared/crypto.js";
import { wirePublicKey } from "../shared/crypto.js";
import { CloseCode, ErrorCode, PsimbolsError } from "../shared/errors.js";
import { commentProblem } from "../shared/comment.js";

export const Role = { client: "client", operator: "operator", blocked: "blocked" } as const;
export type Role = (typeof Role)[keyof typeof Role];

export interface RegisteredKey {
  fingerprint: string;
  /** Absent only for a `blocked` entry made from a fingerprint. */
  public_key?: { type: string; data: string };
  role: Role;
  comment: string;
  /** When the key was first registered (RFC 3339); a change of role or comment keeps it. */
  added: string;
  /** When its role or comment last changed (RFC 3339); absent while they are as first registered. */
  updated?: string;
  /** Set by an identity move (§5.7): the key this registration moved from, and when. */
  moved_from?: string;
  moved?: string;
}

interface KeysFile {
  version: 1;
  keys: RegisteredKey[];
}

/** Who may get a channel, and with which role. */
export interface KeyRegistry {
  lookup(fingerprint: string): Promise<RegisteredKey | undefined>;
  /**
   * Moves the registration `expected` (role, comment, date added) to the key
   * `to` (PROTOCOL.md §5.7), in one atomic step: only if the old key's entry is
   * still exactly `expected` and `to` is not registered. Of concurrent moves
   * of one registration, on any nodes, exactly one succeeds.
   * @returns the entry now registered under `to`.
   * @throws MoveLostError when the old key's entry is no longer `expected` or `to` is registered; nothing changed.
   */
  move?(expected: RegisteredKey, to: PublicKey): Promise<RegisteredKey>;
}

/**
 * A registry this node also writes (keys file or Redis): the server API and
 * `psimbols keys`. Every write is one atomic step (DESIGN.md §11): concurrent
 * writers on any nodes leave the registry as some serial order of them would.
 */
export interface ManagedRegistry extends KeyRegistry {
  list(): Promise<RegisteredKey[]>;
  /** Adds (or replaces the role and comment of) a key. @returns the entry written. */
  add(key: KeyRef, options?: { role?: Role; comment?: string }): Promise<RegisteredKey>;
  /** Removes a key by fingerprint. @returns whether it was there. */
  remove(fingerprint: string): Promise<boolean>;
  move(expected: RegisteredKey, to: PublicKey): Promise<RegisteredKey>;
}

/**
 * A move that lost to another write of the same key (another move, a removal,
 * a block or role change), or whose new key is registered: code `forbidden`,
 * close 4008 (PROTOCOL.md §5.7). Nothing changed.
 */
export class MoveLostError extends PsimbolsError {
  constructor(message: string) {
    super(ErrorCode.forbidden, message, { close: CloseCode.forbidden });
    this.name = "MoveLostError";
  }
}

const changed = () => new MoveLostError("the registration of this key changed while it was being moved (another move, a removal or a block came first); nothing moved");
const taken = () => new MoveLostError("the key to move to is already registered with the service");

/** The entry of `to` that takes over `old` (a move keeps role, comment and the date added). */
function movedEntry(old: RegisteredKey, to: PublicKey): RegisteredKey {
  return { ...old, fingerprint: to.fingerprint, public_key: wirePublicKey(to), moved_from: old.fingerprint, moved: new Date().toISOString() };
}

/**
 * Moves the registration `expected` in a keys file to `to` (§5.7), under the
 * file's lock: only if the file still holds exactly `expected` and not `to`.
 * @returns the new entry. @throws MoveLostError otherwise (the file unchanged).
 */
export async function moveKey(path: string, expected: RegisteredKey, to: PublicKey): Promise<RegisteredKey> {
  return withKeysFileLock(path, () => {
    const keys = readKeysFile(path);
    const i = keys.findIndex((k) => k.fingerprint === expected.fingerprint);
    if (i < 0 || JSON.stringify(keys[i]) !== JSON.stringify(expected)) throw changed();
    if (keys.some((k) => k.fingerprint === to.fingerprint)) throw taken();
    const entry = movedEntry(keys[i]!, to);
    keys[i] = entry;
    writeKeysFile(path, keys);
    return entry;
  });
}

/**
 * Reads a keys file; a missing file is an empty list.
 * @throws PsimbolsError `unavailable` naming the file when it does not parse (a write then changes nothing).
 */
export function readKeysFile(path: string): RegisteredKey[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw unparsable(path, "not valid JSON");
  }
  const f = parsed as Partial<KeysFile>;
  if (f?.version !== 1 || !Array.isArray(f.keys)) throw unparsable(path, `expected {"version":1,"keys":[...]}`);
  for (const [i, k] of f.keys.entries()) {
    if (typeof k?.fingerprint !== "string" || !k.fingerprint.startsWith("SHA256:")) {
      throw unparsable(path, `keys[${i}].fingerprint expected "SHA256:…"`);
    }
    if (!Object.values(Role).includes(k.role)) throw unparsable(path, `keys[${i}].role expected ${Object.values(Role).join(", ")}`);
    if (k.public_key === undefined && k.role !== Role.blocked) throw unparsable(path, `keys[${i}].public_key is required unless the role is blocked`);
  }
  return f.keys;
}

/** A keys file that does not parse: `unavailable` (the operator can fix the file), never overwritten by a write. */
function unparsable(path: string, what: string): PsimbolsError {
  return new PsimbolsError(ErrorCode.unavailable, `the keys file ${path} does not parse (${what}); fix it and try again`);
}

/** Replaces the keys file atomically (a reader sees the old file or the new one). Call it holding the lock. */
function writeKeysFile(path: string, keys: RegisteredKey[]): void {
  replaceFile(path, JSON.stringify({ version: 1, keys } satisfies KeysFile, null, 2) + "\n");
}

/**
 * Runs `fn`, a synchronous read-modify-write of the keys file, holding its lock
 * (server/file-lock.ts). A first `keys add --file DIR/keys.json` makes DIR,
 * private to its owner (as the data directory is).
 */
function withKeysFileLock<T>(path: string, fn: () => T): Promise<T> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  return withFileLock(path, fn);
}

/** A key to register: a public key, or (for `blocked` only) a bare fingerprint. */
export type KeyRef = PublicKey | { fingerprint: string };

/** Adds (or updates the role and comment of) a key, under the file's lock. @returns the entry written. */
export async function addKey(path: string, key: KeyRef, options: { role?: Role; comment?: string } = {}): Promise<RegisteredKey> {
  checkKeyRef(key, options);
  return withKeysFileLock(path, () => {
    const keys = readKeysFile(path);
    const old = keys.find((k) => k.fingerprint === key.fingerprint);
    const entry = entryFor(key, options, old);
    if (entry !== old) writeKeysFile(path, [...keys.filter((k) => k !== old), entry]);
    return entry;
  });
}

/**
 * Checks a write before it reads anything: every writer (CLI, server API,
 * `admin.keys.*`) comes through here.
 * @throws PsimbolsError `bad_request` when a key that is not to be blocked comes as a bare
 *   fingerprint, or the comment is not one line of at most 200 characters without control characters.
 */
function checkKeyRef(key: KeyRef, options: { role?: Role; comment?: string }): void {
  const role = options.role ?? Role.client;
  if (!("spki" in key) && role !== Role.blocked) throw new PsimbolsError(ErrorCode.badRequest, `a ${role} key needs its public key (a PEM file), not a fingerprint`);
  if (options.comment !== undefined) {
    if (typeof options.comment !== "string") throw new PsimbolsError(ErrorCode.badRequest, `"comment" expected a string`);
    const problem = commentProblem(options.comment);
    if (problem) throw new PsimbolsError(ErrorCode.badRequest, `"comment" refused: ${problem}; nothing was changed`);
  }
}

/**
 * The entry that registering `key` with `options` leaves, given the entry
 * registered now (`old`): a new key is `added` now; a change of an entry
 * keeps its `added` (and a move's `moved_from` and `moved`) and records the
 * time in `updated`; a write that changes nothing returns `old` itself.
 * Blocking by fingerprint a key registered with its public key keeps that key
 * (so unblocking restores it) and, unless `options.comment` is given, its comment.
 */
function entryFor(key: KeyRef, options: { role?: Role; comment?: string }, old: RegisteredKey | undefined): RegisteredKey {
  checkKeyRef(key, options);
  const now = new Date().toISOString();
  const byFingerprint = !("spki" in key);
  const publicKey = "spki" in key ? wirePublicKey(key) : old?.public_key;
  const fresh: RegisteredKey = {
    fingerprint: key.fingerprint,
    ...(publicKey !== undefined ? { public_key: publicKey } : {}),
    role: options.role ?? Role.client,
    comment: options.comment ?? (byFingerprint ? (old?.comment ?? "") : ""),
    added: now,
  };
  if (old === undefined) return fresh;
  const what = (k: RegisteredKey) => JSON.stringify([k.fingerprint, k.public_key ?? null, k.role, k.comment]);
  if (what(old) === what(fresh)) return old;
  return { ...fresh, added: old.added, ...(old.moved_from !== undefined ? { moved_from: old.moved_from, moved: old.moved } : {}), updated: now };
}

/** Removes a key by fingerprint, under the file's lock. @returns whether it was there. */
export async function removeKey(path: string, fingerprint: string): Promise<boolean> {
  return withKeysFileLock(path, () => {
    const keys = readKeysFile(path);
    const rest = keys.filter((k) => k.fingerprint !== fingerprint);
    if (rest.length === keys.length) return false;
    writeKeysFile(path, rest);
    return true;
  });
}

/** Where {@link FileRegistry} reports a keys file it cannot use. */
export interface RegistryLogger {
  warn(message: string, meta?: Record<string, unknown>): unknown;
}

/** Margin for the coarseness of file times: a file modified this close to the last read is read again. */
const MTIME_TICK_MS = 1000;

/**
 * A registry over a keys file, re-read when its inode, mtime or size changes,
 * or when it was modified around the last read (checked at most once a
 * second; at once after a write of this node). A file that stops parsing keeps the last
 * good set and logs one warning per change of the file.
 */
export class FileRegistry implements ManagedRegistry {
  readonly path: string;
  readonly #log: RegistryLogger | undefined;
  #byFp = new Map<string, RegisteredKey>();
  #stamp = "";
  /** When the file was last read (ms). */
  #readAt = 0;
  #badStamp = "";
  #checked = 0;
  /**
   * @param path - the keys file; a missing file is an empty registry.
   * @param options.logger - receives a warning when a changed file does not parse.
   * @throws Error naming the file when it exists and does not parse.
   */
  constructor(path: string, options: { logger?: RegistryLogger } = {}) {
    this.path = path;
    this.#log = options.logger;
    this.#reload(true);
  }
  /** How many keys are registered (of any role), as last read. */
  get size(): number {
    return this.#byFp.size;
  }
  async lookup(fingerprint: string): Promise<RegisteredKey | undefined> {
    if (Date.now() - this.#checked >= 1000) this.#reload(false);
    return this.#byFp.get(fingerprint);
  }
  async list(): Promise<RegisteredKey[]> {
    return readKeysFile(this.path);
  }
  async add(key: KeyRef, options: { role?: Role; comment?: string } = {}): Promise<RegisteredKey> {
    return this.#wrote(await addKey(this.path, key, options));
  }
  async remove(fingerprint: string): Promise<boolean> {
    return this.#wrote(await removeKey(this.path, fingerprint));
  }
  async move(expected: RegisteredKey, to: PublicKey): Promise<RegisteredKey> {
    return this.#wrote(await moveKey(this.path, expected, to));
  }
  /** A write of this node takes effect here at once, not at the next re-read. */
  #wrote<T>(result: T): T {
    this.#reload(false);
    return result;
  }
  #reload(strict: boolean): void {
    this.#checked = Date.now();
    const now = Date.now();
    let stamp = "missing";
    let mtime = -Infinity;
    try {
      const st = statSync(this.path);
      stamp = `${st.ino}:${st.mtimeMs}:${st.size}`;
      mtime = st.mtimeMs;
    } catch {
      /* a missing file is an empty registry */
    }
    // The clock behind mtime is coarse: a write of the same size in the tick of the last read
    // keeps the stamp, so a file modified around the last read is read again whatever its stamp says.
    if (stamp === this.#stamp && mtime < this.#readAt - MTIME_TICK_MS) return;
    try {
      this.#byFp = new Map(readKeysFile(this.path).map((k) => [k.fingerprint, k]));
      this.#stamp = stamp;
      this.#readAt = now;
    } catch (e) {
      if (strict) throw e;
      // A half-written or broken file keeps the last good registry: never open a closed service by accident.
      if (stamp !== this.#badStamp) {
        this.#badStamp = stamp;
        this.#log?.warn("keys file does not parse; keeping the last good set of keys", { component: "registry", file: this.path, error: e instanceof Error ? e.message : String(e), keys: this.#byFp.size });
      }
    }
  }
}

/*
 * move. KEYS: the registry hash. ARGV: old fingerprint, its entry as checked
 * (JSON), new fingerprint, new entry (JSON). A compare-and-set: only when the
 * old entry is still exactly the one checked and the new key is not
 * registered does it write the new entry and delete the old, in one step.
 * Returns 1; 0 when the old entry changed or is gone; -1 when the new key is
 * registered.
 */
const MOVE = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return -1 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`;

/*
 * add. KEYS: the registry hash. ARGV: fingerprint, its entry as read (JSON,
 * "" when none), the entry to write. A compare-and-set, so that a change of
 * role or comment keeps the `added` it read: returns 1 when written, 0 when
 * the entry changed since it was read (the caller reads again).
 */
const ADD = `
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`;

/**
 * Attempts of {@link RedisRegistry.add} against concurrent writes of the same key. Between
 * attempts a writer waits a random 0 to 2^attempt ms (at most 64): writers that read in the
 * same round (commands pipelined on one connection do) would otherwise retry in lockstep, one
 * winning per round (20 writers of one key outran 16 attempts). At most about 1.5 s of waiting.
 */
const ADD_ATTEMPTS = 32;

/**
 * Registered keys shared by every node through Redis: one hash
 * `<prefix>keys` of fingerprint → entry JSON. Read on every lookup (one HGET
 * per proven handshake), so `psimbols keys add|remove --redis` takes effect on
 * all nodes at once, without a restart. Each write is one Redis step: a
 * compare-and-set script (add, retried when the entry changed since it was
 * read; move), HDEL (remove).
 */
export class RedisRegistry implements ManagedRegistry {
  readonly #redis: Redis;
  readonly #key: string;
  readonly #wait: { replicas: number; ms: number } | undefined;
  /** @param url a Redis address, Sentinel form included (server/store/redis-address.ts). */
  constructor(url: string, prefix = "psimbols:") {
    const address = parseRedisAddress(url);
    this.#redis = createRedis(address, { lazyConnect: true, enableOfflineQueue: true, maxRetriesPerRequest: 1, commandTimeout: 2000 });
    this.#wait = address.kind === "sentinel" && address.waitReplicas > 0 ? { replicas: address.waitReplicas, ms: address.waitMs } : undefined;
    // A connection error fails the command that needed it (with the caller's context); the event itself adds nothing.
    this.#redis.on("error", () => {});
    this.#key = `${prefix}keys`;
  }
  /** Sentinel form: an added or removed key is acknowledged once replicas have it (a failover cannot undo a removal). */
  async #replicated(): Promise<void> {
    if (!this.#wait) return;
    // Only replicas that are connected now can confirm: a master left without one
    // (after a failover, until the old master returns as a replica) has nothing a
    // failover could promote over it, and waiting for replicas that do not exist
    // would only stop every write.
    const role = (await this.#redis.call("ROLE")) as [string, unknown, unknown[]?];
    const want = Math.min(this.#wait.replicas, Array.isArray(role[2]) ? role[2].length : 0);
    if (want === 0) return;
    const acked = await this.#redis.wait(want, this.#wait.ms);
    if (acked < want) throw new PsimbolsError(ErrorCode.unavailable, `key registry write not confirmed by ${want} replica(s) in ${this.#wait.ms} ms; run it again`);
  }
  async lookup(fingerprint: string): Promise<RegisteredKey | undefined> {
    const v = await this.#redis.hget(this.#key, fingerprint);
    return v ? (JSON.parse(v) as RegisteredKey) : undefined;
  }
  async add(key: KeyRef, options: { role?: Role; comment?: string } = {}): Promise<RegisteredKey> {
    checkKeyRef(key, options);
    for (let i = 0; i < ADD_ATTEMPTS; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, Math.random() * 2 ** Math.min(i, 6)));
      const read = (await this.#redis.hget(this.#key, key.fingerprint)) ?? "";
      const old = read ? (JSON.parse(read) as RegisteredKey) : undefined;
      const entry = entryFor(key, options, old);
      if (entry === old) return old;
      if ((await this.#redis.eval(ADD, 1, this.#key, key.fingerprint, read, JSON.stringify(entry))) === 1) {
        await this.#replicated();
        return entry;
      }
    }
    throw new PsimbolsError(ErrorCode.unavailable, "the key's registration kept changing under this write; run it again");
  }
  async remove(fingerprint: string): Promise<boolean> {
    const removed = (await this.#redis.hdel(this.#key, fingerprint)) === 1;
    await this.#replicated();
    return removed;
  }
  async move(expected: RegisteredKey, to: PublicKey): Promise<RegisteredKey> {
    const entry = movedEntry(expected, to);
    const r = await this.#redis.eval(MOVE, 1, this.#key, expected.fingerprint, JSON.stringify(expected), to.fingerprint, JSON.stringify(entry));
    if (r === 0) throw changed();
    if (r === -1) throw taken();
    await this.#replicated();
    return entry;
  }
  async list(): Promise<RegisteredKey[]> {
    return Object.values(await this.#redis.hgetall(this.#key)).map((v) => JSON.parse(v) as RegisteredKey);
  }
  async close(): Promise<void> {
    this.#redis.disconnect();
  }
}

/**
 * The registry a node writes (server API, `admin.keys.*`): its keys file or
 * Redis, whose writes are atomic (above); undefined for no registry, or for
 * one a program gave the broker, which this node only reads.
 */
export function managedRegistry(registry: KeyRegistry | undefined): FileRegistry | RedisRegistry | undefined {
  return registry instanceof FileRegistry || registry instanceof RedisRegistry ? registry : undefined;
}
