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
import type { Broker, Handler, HandlerContext } from "./broker.js";
import { type KeyRegistry, Role } from "./registry.js";
import type { ChannelRecord, Store } from "./store/store.js";

/** Operation names reserved for operators (PROTOCOL.md §6.6). */
export const ADMIN_PREFIX = "admin.";

/** Whether `op` is in the reserved `admin.` namespace. */
export function isAdminOp(op: string): boolean {
  return op.startsWith(ADMIN_PREFIX);
}

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

/** The answer to an `admin.*` name the broker does not implement: `forbidden` to a non-operator, `not_found` to an operator. */
export const ADMIN_NOT_FOUND: Handler = operatorOnly(() => {
  throw new PsimbolsError(ErrorCode.notFound, "no handler for this op");
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
  return rows.map((r) => (comments.has(r.identity) ? { ...r, comment: comments.get(r.identity)! } : r));
}

/** Registers the `admin.*` ops on a broker (Broker.handle puts each behind {@link operatorOnly}); `registry` gives `admin.channels` its key comments. */
export function registerOperatorOps(broker: Broker, registry: KeyRegistry | undefined): void {
  broker.handle(
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
  broker.handle(
    "admin.revoke",
    async (data) => ({ revoked: await broker.revoke(target(data)) }),
  );
  broker.handle(
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
