/**
 * Operations on a running service, through its Redis or over a channel with
 * an operator key: `channels list|revoke`, `push`.
 */
import type { Command } from "commander";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { connect } from "../client/node.js";
import { MAX_PUSH_BYTES } from "../server/broker.js";
import { RedisStore } from "../server/store/redis-store.js";
import { type ChannelRow, channelRows } from "../server/operator.js";
import { loadIdentityKey } from "./client.js";
import { atRedis, wrapKeyFrom } from "./errors.js";
import { int } from "./options.js";

/** Where a channel's socket is, as `channels list` prints it (docs/CLI.md). */
export function where(r: ChannelRow): string {
  switch (r.state) {
    case "held":
      return `held by ${r.holder}`;
    case "not_connected":
      return `not connected (last on ${r.holder})`;
    case "node_gone":
      return `node gone (last on ${r.holder})`;
    default:
      return `issued on ${r.node}`; // a record from a node older than the holder fields
  }
}

/** Adds the operator commands to `p`. */
export function operatorCommands(p: Command): void {
  // ---- operations on a running service: through Redis, or over a channel with an operator key
  type AdminOpts = { redis?: string; wrapKeyFile?: string; url?: string; key?: string; serverKey?: string };
  const adminWhere = (c: Command) =>
    c
      .option("--redis <url>", "act on the cluster's Redis directly (needs the wrap key: PSIMBOLS_WRAP_KEY or --wrap-key-file)")
      .option("--wrap-key-file <file>", "with --redis: the cluster's key-wrapping key (instead of PSIMBOLS_WRAP_KEY)")
      .option("--url <url>", "or: a broker URL, acting through its admin ops")
      .option("--key <file>", "with --url: an operator identity key (keys add --role operator)")
      .option("--server-key <fingerprint>", "with --url: pin the server key");
  const targetOf = (o: { channel?: string; identity?: string }) => {
    if ((o.channel === undefined) === (o.identity === undefined)) throw new PsimbolsError(ErrorCode.badRequest, "give exactly one of --channel or --identity");
    return o.channel !== undefined ? { channel: o.channel } : { identity: o.identity! };
  };
  /** Runs `viaStore` on a RedisStore, or `viaOps` on an operator's channel. */
  async function admin<T>(o: AdminOpts, viaStore: (s: RedisStore) => Promise<T>, viaOps: (request: (op: string, data?: unknown) => Promise<unknown>) => Promise<T>): Promise<T> {
    if (o.redis) {
      const wrapKey = wrapKeyFrom(o.wrapKeyFile);
      const store = new RedisStore({ url: o.redis, wrapKey });
      wrapKey.fill(0);
      try {
        return await atRedis(o.redis, () => viaStore(store));
      } finally {
        await store.close();
      }
    }
    if (!o.url || !o.key) throw new PsimbolsError(ErrorCode.badRequest, "give --redis URL, or --url URL with --key FILE");
    const client = await connect(o.url, { key: await loadIdentityKey(o.key, "--key"), ...(o.serverKey ? { serverKey: o.serverKey } : {}), reconnect: false, renew: false });
    try {
      return await viaOps((op, data) => client.request(op, data));
    } finally {
      await client.close().catch(() => {});
    }
  }

  const channels = p.command("channels").description("list or revoke the channels of a running service");
  adminWhere(channels.command("list"))
    .description("list live channels (never their keys)")
    .option("--json", "print JSON")
    .action(async (o: AdminOpts & { json?: boolean }) => {
      const rows = await admin(
        o,
        async (store) => channelRows(store),
        async (request) => ((await request("admin.channels")) as { channels: ChannelRow[] }).channels,
      );
      if (o.json) return console.log(JSON.stringify(rows, null, 2));
      for (const r of rows) console.log(`${r.channel}  ${r.identity}  ${where(r)}  until ${r.valid_until}`);
      if (rows.length === 0) console.error("no live channels");
    });
  adminWhere(channels.command("revoke"))
    .description("revoke a channel, or the channel of an identity; its client gets `revoked`")
    .option("--channel <id>")
    .option("--identity <fingerprint>")
    .action(async (o: AdminOpts & { channel?: string; identity?: string }) => {
      const t = targetOf(o);
      const revoked = await admin(
        o,
        async (store) => (t.channel !== undefined ? ((await store.retire(t.channel, "revoked")) ? [t.channel] : []) : store.retireIdentity(t.identity!, "revoked")),
        async (request) => ((await request("admin.revoke", t)) as { revoked: string[] }).revoked,
      );
      if (revoked.length === 0) throw new PsimbolsError(ErrorCode.notFound, "no live channel matched");
      console.log(`revoked ${revoked.join(" ")}`);
    });

  adminWhere(p.command("push"))
    .description("push an application message to an identity (or one channel) wherever it is connected")
    .argument("<json>", "the message, as JSON")
    .option("--channel <id>")
    .option("--identity <fingerprint>")
    .option("--push-window-count <n>", "with --redis: pushes kept per identity (match the nodes)", int("--push-window-count"), 1000)
    .option("--push-window-age <seconds>", "with --redis: longest a push is kept", int("--push-window-age"), 3600)
    .action(async (json: string, o: AdminOpts & { channel?: string; identity?: string; pushWindowCount: number; pushWindowAge: number }) => {
      let message: unknown;
      try {
        message = JSON.parse(json);
      } catch {
        throw new PsimbolsError(ErrorCode.badRequest, "the message is not valid JSON");
      }
      // The same bound as Broker.push (with --redis the store is written directly).
      if (Buffer.byteLength(JSON.stringify(message)) > MAX_PUSH_BYTES) throw new PsimbolsError(ErrorCode.badRequest, `the message is larger than ${MAX_PUSH_BYTES} bytes of JSON`);
      const t = targetOf(o);
      const seq = await admin(
        o,
        async (store) => {
          const identity = t.identity ?? (await store.getChannel(t.channel!))?.identity;
          if (identity === undefined) throw new PsimbolsError(ErrorCode.notFound, "no such channel");
          return store.push(identity, JSON.stringify(message), { count: o.pushWindowCount, ageMs: o.pushWindowAge * 1000 }, t.channel);
        },
        async (request) => ((await request("admin.push", { ...t, message })) as { seq: number }).seq,
      );
      console.log(JSON.stringify({ seq }));
    });

}
