/**
 * Operator operations, carried over the channel like any request and granted
 * only to identities registered with the `operator` role (`psimbols keys add
 * --role operator`). Everyone else gets `forbidden`. The web console and the
 * CLI use these.
 *
 * The `admin.` namespace is the broker's (PROTOCOL.md §6.6, docs/BACKEND.md
 * §2): every `admin.*` handler runs behind {@link operatorOnly}, and a name no
 * handler takes is answered here ({@link ADMIN_NOT_FOUND}), never forwarded
 * to an application.
 */
import { ErrorCode, PsimbolsError, badField } from "../shared/errors.js";
import { FINGERPRINT_PATTERN, importPublicKey } from "../shared/crypto.js";
import { publicKeyFromPem } from "../node/key-files.js";
import type { Broker, Handler, HandlerContext } from "./broker.js";
import { FileRegistry, type KeyRef, type KeyRegistry, type ManagedRegistry, type RegisteredKey, Role, managedRegistry } from "./registry.js";
import { MemoryStore } from "./store/memory-store.js";
import { MAX_KEY_COMMENT, escapeComment } from "../shared/comment.js";
import type { ChannelRecord, Store } from "./store/store.js";

// The namespace is the protocol's (shared/frames.ts): the CLI tells the broker's refusals by it too.
export { ADMIN_PREFIX, isAdminOp } from "../shared/frames.js";

/**
 * `f`, run only for a caller whose registered role (read at the request) is
 * `operator`; anyone else gets `forbidden`, whatever `f` would answer.
 */
export function operatorOnly(f: Handler): Handler {
  return async (data: unknown, ctx: HandlerContext): Promise<unknown> => {
    if ((await ctx.role()) !== Role.operator) throw new PsimbolsError(ErrorCode.forbidden, "this operation needs the operator role");
    return f(data, ctx);
  };
}

/**
 * Every `admin.*` op the broker implements (PROTOCOL.md §6.6), in the order the
 * docs list them: {@link registerOperatorOps} registers exactly these, and the
 * CLI's hint for an unknown one names them.
 */
export const ADMIN_OPS = ["admin.channels", "admin.revoke", "admin.push", "admin.keys", "admin.keys.add", "admin.keys.block", "admin.keys.unblock", "admin.keys.remove"] as const;
export type AdminOp = (typeof ADMIN_OPS)[number];

/** The message of {@link ADMIN_NOT_FOUND}, by which the CLI tells an unknown op from another `not_found` (no such key, no such channel). */
export const UNKNOWN_ADMIN_OP = "no handler for this op";

/** The answer to an `admin.*` name the broker does not implement: `forbidden` to a non-operator, `not_found` to an operator. */
export const ADMIN_NOT_FOUND: Handler = operatorOnly(() => {
  throw new PsimbolsError(ErrorCode.notFound, UNKNOWN_ADMIN_OP);
});

type Target = { identity?: string; channel?: string };

/**
 * Where a channel's socket is (docs/CLI.md, channels list): `held` by a node that beats,
 * `not_connected` since its last connection closed, or `node_gone`: the node that last held it
 * stopped beating (killed, or cut off from the store) without letting go.
 */
export type HolderState = "held" | "not_connected" | "node_gone";

/** What operators see of a channel: everything but the key. */
export interface ChannelRow {
  channel: string;
  identity: string;
  /** The node that issued it (its handshake). */
  node: string;
  valid_until: string;
  /** The node that holds its socket, or held it last; absent on a record written by a node older than the field. */
  holder?: string;
  /** With `holder`: whether it still holds it. */
  state?: HolderState;
}

/** The row of `c`, given the node instances that beat now (Store.liveInstances). */
export function channelRow(c: ChannelRecord, live: ReadonlySet<string>): ChannelRow {
  const row: ChannelRow = { channel: c.id, identity: c.identity, node: c.node, valid_until: new Date(c.validUntil).toISOString() };
  const h = c.holder;
  if (h) {
    row.holder = h.node;
    row.state = h.conn === undefined ? "not_connected" : live.has(h.instance) ? "held" : "node_gone";
  }
  return row;
}

/** The rows of every live channel (of one identity, if given): the listing, then one read of the holders' beats. */
export async function channelRows(store: Store, identity?: string): Promise<ChannelRow[]> {
  const all = await store.listChannels();
  for (const c of all) c.key.fill(0); // copies: only the rows leave
  const live = await store.liveInstances(all.flatMap((c) => (c.holder?.conn !== undefined ? [c.holder.instance] : [])));
  return all.filter((c) => identity === undefined || c.identity === identity).map((c) => channelRow(c, live));
}

/** Parses `{identity}` or `{channel}` (exactly one). @throws PsimbolsError bad_request. */
export function target(data: unknown): Target {
  if (typeof data !== "object" || data === null) throw badField("data", "object {identity} or {channel}", data);
  const { identity, channel } = data as Record<string, unknown>;
  if (identity !== undefined && typeof identity !== "string") throw badField("identity", "string", identity);
  if (channel !== undefined && typeof channel !== "string") throw badField("channel", "string", channel);
  if ((identity === undefined) === (channel === undefined)) throw badField("data", "exactly one of identity or channel");
  return identity !== undefined ? { identity } : { channel: channel as string };
}

/** Most registered-key comments one `admin.channels` answer looks up (one registry lookup each). */
export const MAX_COMMENT_LOOKUPS = 1000;

/**
 * Every live channel, each with the comment its identity was registered with
 * (`psimbols keys add --comment`), when it has one: what an operator knows a
 * key by. At most {@link MAX_COMMENT_LOOKUPS} distinct identities are looked up.
 */
async function channelsWithComments(broker: Broker, registry: KeyRegistry | undefined): Promise<(ChannelRow & { comment?: string })[]> {
  const rows = await channelRows(broker.store);
  if (!registry) return rows;
  const ids = [...new Set(rows.map((r) => r.identity))].slice(0, MAX_COMMENT_LOOKUPS);
  const comments = new Map((await Promise.all(ids.map(async (id) => [id, (await registry.lookup(id))?.comment] as const))).filter(([, c]) => c));
  // Escaped as admin.keys rows are (keyRow): a comment written before comments were checked cannot forge a listing.
  return rows.map((r) => (comments.has(r.identity) ? { ...r, comment: escapeComment(comments.get(r.identity)!) } : r));
}

/** Registers the `admin.*` ops on a broker (Broker.handle puts each behind {@link operatorOnly}); `registry` gives `admin.channels` its key comments, and `admin.keys.*` the keys they manage. */
export function registerOperatorOps(broker: Broker, registry: KeyRegistry | undefined): void {
  const handle = (op: AdminOp, f: Handler) => broker.handle(op, f);
  registerKeyOps(handle, broker, registry);
  handle(
    "admin.channels",
    async () => ({
      node: broker.config.node,
      stats: broker.stats,
      connections: broker.connectionCount,
      /** Sockets bound on this node. */
      connected: broker.channels(),
      /** Every live channel of the service (all nodes, from the store); never a key. */
      channels: await channelsWithComments(broker, registry),
    }),
  );
  handle(
    "admin.revoke",
    async (data) => ({ revoked: await broker.revoke(target(data)) }),
  );
  handle(
    "admin.push",
    async (data) => {
      const t = target(data);
      let seq: number | undefined;
      try {
        seq = await broker.push(t, (data as { message?: unknown }).message ?? null);
      } catch (e) {
        // Broker.push refuses a message over MAX_PUSH_BYTES with a RangeError: the operator's input, not the node, is at fault.
        if (e instanceof RangeError) throw new PsimbolsError(ErrorCode.badRequest, e.message);
        throw e;
      }
      if (seq === undefined) throw new PsimbolsError(ErrorCode.notFound, "no such channel");
      return { seq };
    },
  );
}

// ------------------------------------------------------------------ registered keys (PROTOCOL.md §6.6)

/** Longest comment of a registered key, checked on every write (shared/comment.ts). */
export { MAX_KEY_COMMENT };
/** Longest PEM text `admin.keys.add` reads (an RSA-4096 public key is about 800 characters). */
const MAX_PEM_CHARS = 8192;
/** Budget of one `admin.keys` page (UTF-8 bytes of its rows' JSON), well inside a response (MAX_INNER_BYTES) whatever the comments hold. */
const KEYS_PAGE_BYTES = 32 * 1024;

/** What `role` may be, for the error of any other (docs/BACKEND.md "Calls"). */
const ROLES = `one of ${Object.values(Role).map((r) => JSON.stringify(r)).join(", ")}`;

/** A key to register, parsed and checked: nothing has been written yet. */
export interface Registration {
  key: KeyRef;
  role: Role;
  /** Undefined when none was given: a block by fingerprint then keeps the registered comment. */
  comment: string | undefined;
}

/**
 * Parses a key to register (server API `POST /v1/keys`, `admin.keys.add`):
 * `{public_key, role?, comment?}`, or `{fingerprint, role: "blocked",
 * comment?}` (a fingerprint alone only blocks). `public_key` is the wire form
 * `{type, data}`, or with `options.pem` also a PEM public key as `psimbols
 * keys add` reads from a file; a PEM private key is refused (it never needs
 * to leave its owner).
 * @throws PsimbolsError `bad_request` (or `unsupported` for a key type psimbols does not accept) naming the field.
 */
export async function parseRegistration(body: unknown, options: { pem?: boolean } = {}): Promise<Registration> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw badField("body", "a JSON object", body);
  const o = body as Record<string, unknown>;
  const role = o.role ?? Role.client;
  // A string of the wrong value says what is valid, not its type ("got string" read as if a string were wrong).
  if (typeof role !== "string") throw badField("role", ROLES, role);
  if (!(Object.values(Role) as string[]).includes(role)) throw badField("role", `${ROLES}, not another name`);
  const comment = o.comment;
  // Its length and characters are the registry's to check (server/registry.ts), on every write.
  if (comment !== undefined && typeof comment !== "string") throw badField("comment", `a string of at most ${MAX_KEY_COMMENT} characters`, comment);
  let key: KeyRef;
  if (o.public_key !== undefined) {
    if (o.fingerprint !== undefined) throw badField("body", "public_key or fingerprint, not both");
    key = options.pem && typeof o.public_key === "string" ? await pemPublicKey(o.public_key) : await importPublicKey(o.public_key);
  } else if (o.fingerprint !== undefined) {
    key = { fingerprint: fingerprintField(o.fingerprint) };
    if (role !== Role.blocked) throw badField("public_key", `required for a ${role} key (a fingerprint alone only blocks)`);
  } else {
    throw badField("public_key", options.pem ? "a PEM public key, or object {type, data}" : "object {type, data}");
  }
  return { key, role: role as Role, comment };
}

async function pemPublicKey(pem: string): Promise<KeyRef> {
  if (pem.length > MAX_PEM_CHARS) throw badField("public_key", `a PEM public key of at most ${MAX_PEM_CHARS} characters`);
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new PsimbolsError(ErrorCode.badRequest, `"public_key" is a private key: send the public key (the .pub.pem file psimbols keygen writes beside it)`);
  }
  return publicKeyFromPem(pem, `"public_key"`);
}

function fingerprintField(x: unknown): string {
  if (typeof x !== "string" || !FINGERPRINT_PATTERN.test(x)) throw badField("fingerprint", "a fingerprint SHA256:… (43 base64 characters)", x);
  return x;
}

/**
 * What `admin.keys` shows of a registration: never the key bytes; a comment
 * written before comments were checked has its control characters escaped
 * (shared/comment.ts) and is cut at {@link MAX_KEY_COMMENT} characters.
 * `updated` is there when the role or comment changed after `added`.
 */
export function keyRow(k: RegisteredKey): { fingerprint: string; type: string | null; role: string; comment: string; added: string; updated?: string; moved_from?: string } {
  const chars = typeof k.comment === "string" ? [...escapeComment(k.comment)] : [];
  const comment = chars.length > MAX_KEY_COMMENT ? chars.slice(0, MAX_KEY_COMMENT).join("") + "…" : chars.join("");
  return {
    fingerprint: k.fingerprint,
    type: typeof k.public_key?.type === "string" ? k.public_key.type : null,
    role: k.role,
    comment,
    added: typeof k.added === "string" ? k.added : "",
    ...(typeof k.updated === "string" ? { updated: k.updated } : {}),
    ...(typeof k.moved_from === "string" ? { moved_from: k.moved_from } : {}),
  };
}

/**
 * Where the node keeps keys, for `admin.keys`: what persists is the console's to say (docs/OPERATIONS.md, Web console).
 * `program`: a registry the embedding program gave the broker, read only here. (With no registry there is no operator to ask.)
 */
function registryKind(registry: KeyRegistry | undefined): { kind: "file"; path: string } | { kind: "redis" } | { kind: "program" } {
  const managed = managedRegistry(registry);
  if (managed instanceof FileRegistry) return { kind: "file", path: managed.path };
  return managed ? { kind: "redis" } : { kind: "program" };
}

/**
 * `admin.keys`, `admin.keys.add`, `admin.keys.block`, `admin.keys.unblock`,
 * `admin.keys.remove` (PROTOCOL.md §6.6). Every write is one call of the
 * registry's own atomic write (server/registry.ts), as `psimbols keys` and the
 * server API make it; input is checked in full before it, so a refusal
 * changes nothing. A session may not block, remove or demote the key it is
 * connected with. Blocking a key also revokes its channels (Broker.revoke,
 * as `admin.revoke {identity}`), the second step the CLI leaves to the operator.
 */
function registerKeyOps(handle: (op: AdminOp, f: Handler) => void, broker: Broker, registry: KeyRegistry | undefined): void {
  const managed = managedRegistry(registry);
  /**
   * One info line per change of the registry (docs/OPERATIONS.md "Logs"): who (the operator's
   * fingerprint), what, which key, its role after, the channels revoked. Never key bytes or a comment.
   */
  const logged = (ctx: HandlerContext, op: AdminOp, fingerprint: string, role: string | null, revoked: string[] = []): void => {
    broker.log.info("registered keys changed", { component: "operator", operator: ctx.identity, op, fingerprint, role, revoked: revoked.length, channels: revoked });
  };
  const writable = (): ManagedRegistry => {
    if (!managed) throw new PsimbolsError(ErrorCode.unsupported, "this node has no keys file or Redis registry to manage");
    return managed;
  };
  const notSelf = (fingerprint: string, ctx: HandlerContext, what: string) => {
    if (fingerprint === ctx.identity) {
      throw new PsimbolsError(ErrorCode.badRequest, `this is the key this session is connected with: ${what} it from another operator key, or with psimbols keys`);
    }
  };
  /** The registration of `fingerprint`, read fresh (list reads the file, or Redis). @throws PsimbolsError not_found. */
  const registered = async (r: ManagedRegistry, fingerprint: string): Promise<RegisteredKey> => {
    const entry = (await r.list()).find((k) => k.fingerprint === fingerprint);
    if (!entry) throw new PsimbolsError(ErrorCode.notFound, "this key is not registered (to block a key the service does not know, add it with the role blocked)");
    return entry;
  };
  /** The public key stored in `entry`, when it imports to the same fingerprint. */
  const storedKey = async (entry: RegisteredKey): Promise<KeyRef | undefined> => {
    if (!entry.public_key) return undefined;
    const k = await importPublicKey(entry.public_key).catch(() => undefined);
    return k?.fingerprint === entry.fingerprint ? k : undefined;
  };
  const fingerprintOf = (data: unknown): string => {
    if (typeof data !== "object" || data === null || Array.isArray(data)) throw badField("data", "object {fingerprint}", data);
    return fingerprintField((data as Record<string, unknown>).fingerprint);
  };

  handle("admin.keys", async (data, ctx) => {
    let offset = 0;
    if (data !== undefined && data !== null) {
      if (typeof data !== "object" || Array.isArray(data)) throw badField("data", "object {offset?}", data);
      const o = (data as Record<string, unknown>).offset ?? 0;
      if (typeof o !== "number" || !Number.isSafeInteger(o) || o < 0) throw badField("offset", "an integer ≥ 0", o);
      offset = o;
    }
    const all = managed ? (await managed.list()).map(keyRow) : [];
    all.sort((a, b) => (a.added < b.added ? -1 : a.added > b.added ? 1 : a.fingerprint < b.fingerprint ? -1 : 1));
    const keys: ReturnType<typeof keyRow>[] = [];
    let bytes = 0;
    for (const row of all.slice(offset)) {
      bytes += Buffer.byteLength(JSON.stringify(row)) + 1;
      if (keys.length > 0 && bytes > KEYS_PAGE_BYTES) break;
      keys.push(row);
    }
    const next = offset + keys.length < all.length ? offset + keys.length : null;
    return {
      node: broker.config.node,
      registry: registryKind(registry),
      store: broker.store instanceof MemoryStore ? "memory" : "redis",
      self: ctx.identity,
      total: all.length,
      offset,
      next,
      keys,
    };
  });

  handle("admin.keys.add", async (data, ctx) => {
    const r = writable();
    const reg = await parseRegistration(data, { pem: true });
    if (reg.role !== Role.operator) notSelf(reg.key.fingerprint, ctx, `give the role ${reg.role} to`);
    const key = keyRow(await r.add(reg.key, { role: reg.role, ...(reg.comment !== undefined ? { comment: reg.comment } : {}) }));
    const revoked = reg.role === Role.blocked ? await broker.revoke({ identity: key.fingerprint }) : [];
    logged(ctx, "admin.keys.add", key.fingerprint, key.role, revoked);
    return { key, revoked };
  });

  handle("admin.keys.block", async (data, ctx) => {
    const r = writable();
    const fingerprint = fingerprintOf(data);
    notSelf(fingerprint, ctx, "block");
    await registered(r, fingerprint);
    // A block by fingerprint keeps the public key and comment (server/registry.ts), so that unblocking gives the key back its registration.
    const key = keyRow(await r.add({ fingerprint }, { role: Role.blocked }));
    const revoked = await broker.revoke({ identity: fingerprint });
    logged(ctx, "admin.keys.block", fingerprint, key.role, revoked);
    return { key, revoked };
  });

  handle("admin.keys.unblock", async (data, ctx) => {
    const r = writable();
    const fingerprint = fingerprintOf(data);
    const role = (data as Record<string, unknown>).role ?? Role.client;
    if (role !== Role.client && role !== Role.operator) throw badField("role", "client or operator", role);
    const entry = await registered(r, fingerprint);
    if (entry.role !== Role.blocked) throw new PsimbolsError(ErrorCode.badRequest, `this key is not blocked (its role is ${entry.role})`);
    // A key blocked by its fingerprint alone was never registered otherwise: unblocking removes the entry.
    if (!entry.public_key) {
      const removed = await r.remove(fingerprint);
      logged(ctx, "admin.keys.unblock", fingerprint, null);
      return { key: null, removed };
    }
    const key = await storedKey(entry);
    if (!key) throw new PsimbolsError(ErrorCode.badRequest, "the public key stored with this fingerprint does not import: remove the entry and add the key again");
    const row = keyRow(await r.add(key, { role, comment: entry.comment }));
    logged(ctx, "admin.keys.unblock", fingerprint, row.role);
    return { key: row };
  });

  handle("admin.keys.remove", async (data, ctx) => {
    const r = writable();
    const fingerprint = fingerprintOf(data);
    notSelf(fingerprint, ctx, "remove");
    if (!(await r.remove(fingerprint))) throw new PsimbolsError(ErrorCode.notFound, "this key is not registered");
    logged(ctx, "admin.keys.remove", fingerprint, null);
    return { removed: fingerprint };
  });
}
