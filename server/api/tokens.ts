/**
 * Bearer tokens of the server API (docs/BACKEND.md "Server
 * API"). `psimbols api-token create` prints a token once; only its SHA-256 is
 * kept, in a tokens file beside the keys file, or in Redis for a cluster (one
 * hash `<prefix>api-tokens`, id → entry), where every node reads it per call,
 * so a revoke takes effect on all nodes at once.
 *
 * Token text: `psat_` + id (16 hex digits) + `_` + secret (43 base64url
 * characters, 32 random bytes). The id names the token in lists and revokes;
 * it is not secret. Tokens file (version 1, mode 0600):
 *   {"version":1,"tokens":[{"id","hash":"<hex SHA-256 of the whole token>","comment","created","scopes":["push",…]}]}
 * An entry without `scopes` was made before scopes existed and keeps every
 * scope (docs/BACKEND.md "Scopes").
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { replaceFile, withFileLock } from "../file-lock.js";
import { Redis } from "ioredis";

/**
 * What a token may do (docs/BACKEND.md "Scopes"): `push` POST /v1/push;
 * `revoke` POST /v1/revoke; `read` GET /v1/channels, /v1/keys, /v1/stats;
 * `keys` register, block and remove client keys; `keys:operator` the same for
 * operator keys (making a key an operator, or changing or removing one), and
 * everything `keys` may do.
 */
export const Scope = { push: "push", revoke: "revoke", read: "read", keys: "keys", keysOperator: "keys:operator" } as const;
export type Scope = (typeof Scope)[keyof typeof Scope];
export const ALL_SCOPES: readonly Scope[] = Object.values(Scope);
/** What `api-token create` grants without `--scope`: everything but operator keys. */
export const DEFAULT_SCOPES: readonly Scope[] = [Scope.push, Scope.revoke, Scope.read, Scope.keys];

/**
 * Parses a `--scope` list: comma-separated scopes, or `all`.
 * @throws RangeError naming the unknown scope and the known ones.
 */
export function parseScopes(text: string): Scope[] {
  const items = text.split(",").map((x) => x.trim()).filter((x) => x !== "");
  if (items.length === 1 && items[0] === "all") return [...ALL_SCOPES];
  if (items.length === 0) throw new RangeError(`--scope: expected a comma-separated list of ${ALL_SCOPES.join(", ")}, or all`);
  for (const x of items) if (!(ALL_SCOPES as readonly string[]).includes(x)) throw new RangeError(`--scope: unknown scope ${JSON.stringify(x.slice(0, 32))}; known: ${ALL_SCOPES.join(", ")}, or all`);
  return ALL_SCOPES.filter((x) => items.includes(x));
}

/** A token as stored: never the token itself. */
export interface TokenEntry {
  id: string;
  /** Hex SHA-256 of the token's text. */
  hash: string;
  comment: string;
  created: string;
  /** What it may do; absent on tokens made before scopes, which may do everything. */
  scopes?: Scope[];
}

/** The scopes a stored entry grants (all of them for an entry made before scopes). */
export function scopesOf(entry: TokenEntry): readonly Scope[] {
  if (entry.scopes === undefined) return ALL_SCOPES;
  return Array.isArray(entry.scopes) ? entry.scopes.filter((x) => (ALL_SCOPES as readonly string[]).includes(x)) : [];
}

/** Whether `entry` grants `scope` (`keys:operator` includes `keys`). */
export function grants(entry: TokenEntry, scope: Scope): boolean {
  const have = scopesOf(entry);
  return have.includes(scope) || (scope === Scope.keys && have.includes(Scope.keysOperator));
}

/** Where tokens are kept. */
export interface TokenStore {
  get(id: string): Promise<TokenEntry | undefined>;
  list(): Promise<TokenEntry[]>;
  add(entry: TokenEntry): Promise<void>;
  /** @returns whether it was there. */
  remove(id: string): Promise<boolean>;
  close(): Promise<void>;
}

const TOKEN = /^psat_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;
const ID = /^[0-9a-f]{16}$/;

/** A new token: the text (print once) and the entry to store. */
export function newToken(comment = "", scopes: readonly Scope[] = DEFAULT_SCOPES): { token: string; entry: TokenEntry } {
  const id = randomBytes(8).toString("hex");
  const token = `psat_${id}_${randomBytes(32).toString("base64url")}`;
  return { token, entry: { id, hash: sha256Hex(token), comment, created: new Date().toISOString(), scopes: [...scopes] } };
}

/** True when `id` is a token id (16 hex digits). */
export function isTokenId(id: unknown): id is string {
  return typeof id === "string" && ID.test(id);
}

function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/**
 * Checks a presented token: its id names a stored entry and the SHA-256 of
 * the text equals the stored hash, compared in constant time.
 * @returns the entry, or undefined (malformed, unknown, revoked or wrong).
 */
export async function verifyToken(store: TokenStore, presented: string): Promise<TokenEntry | undefined> {
  const m = TOKEN.exec(presented);
  if (!m) return undefined;
  const entry = await store.get(m[1]!);
  if (!entry || !/^[0-9a-f]{64}$/.test(entry.hash)) return undefined;
  const want = Buffer.from(entry.hash, "hex");
  const got = createHash("sha256").update(presented, "utf8").digest();
  return timingSafeEqual(got, want) ? entry : undefined;
}

interface TokensFile {
  version: 1;
  tokens: TokenEntry[];
}

/** Tokens in a JSON file, read on every call (a revoke takes effect on the next request). */
export class FileTokenStore implements TokenStore {
  readonly path: string;
  constructor(path: string) {
    this.path = path;
  }
  #read(): TokenEntry[] {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
    let f: Partial<TokensFile>;
    try {
      f = JSON.parse(text) as Partial<TokensFile>;
    } catch {
      throw new Error(`tokens file ${this.path}: not valid JSON`);
    }
    if (f?.version !== 1 || !Array.isArray(f.tokens)) throw new Error(`tokens file ${this.path}: expected {"version":1,"tokens":[...]}`);
    return f.tokens.filter((t) => isTokenId(t?.id) && typeof t.hash === "string");
  }
  /** Under the file's lock, replaced by rename (server/file-lock.ts): concurrent `api-token` runs lose no create or revoke. */
  #write(tokens: TokenEntry[]): void {
    replaceFile(this.path, JSON.stringify({ version: 1, tokens } satisfies TokensFile, null, 2) + "\n");
  }
  async get(id: string): Promise<TokenEntry | undefined> {
    return this.#read().find((t) => t.id === id);
  }
  async list(): Promise<TokenEntry[]> {
    return this.#read();
  }
  async add(entry: TokenEntry): Promise<void> {
    await withFileLock(this.path, () => this.#write([...this.#read().filter((t) => t.id !== entry.id), entry]));
  }
  async remove(id: string): Promise<boolean> {
    return withFileLock(this.path, () => {
      const all = this.#read();
      const rest = all.filter((t) => t.id !== id);
      if (rest.length === all.length) return false;
      this.#write(rest);
      return true;
    });
  }
  async close(): Promise<void> {}
}

/** Tokens shared by every node through Redis: hash `<prefix>api-tokens`, id → entry JSON. */
export class RedisTokenStore implements TokenStore {
  readonly #redis: Redis;
  readonly #key: string;
  constructor(url: string, prefix = "psimbols:") {
    this.#redis = new Redis(url, { lazyConnect: true, enableOfflineQueue: true, maxRetriesPerRequest: 1, commandTimeout: 2000 });
    this.#redis.on("error", () => undefined); // failures surface per call
    this.#key = `${prefix}api-tokens`;
  }
  async get(id: string): Promise<TokenEntry | undefined> {
    const v = await this.#redis.hget(this.#key, id);
    return v ? (JSON.parse(v) as TokenEntry) : undefined;
  }
  async list(): Promise<TokenEntry[]> {
    return Object.values(await this.#redis.hgetall(this.#key)).map((v) => JSON.parse(v) as TokenEntry);
  }
  async add(entry: TokenEntry): Promise<void> {
    await this.#redis.hset(this.#key, entry.id, JSON.stringify(entry));
  }
  async remove(id: string): Promise<boolean> {
    return (await this.#redis.hdel(this.#key, id)) === 1;
  }
  async close(): Promise<void> {
    this.#redis.disconnect();
  }
}
