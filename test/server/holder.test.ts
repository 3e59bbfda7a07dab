/**
 * Which node holds each channel's socket (docs/CLI.md, channels list): real
 * broker processes on one real redis-server, real clients. A resume on
 * another node moves the holder there, also after the first node was killed
 * (SIGKILL); a clean close says "not connected (last on NODE)"; a node killed
 * with its clients away is "node gone" within NODE_BEAT_TTL_MS; a late
 * release from the node that lost the channel never undoes the resume's
 * claim; the embedded store says the same through a node's admin ops.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { randomBytes } from "node:crypto";
import { generateSigningKey } from "../../shared/crypto.js";
import { connect, type Client } from "../../client/node.js";
import { type RunningBroker, operatorKeys, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { startRedis } from "../helpers/redis.js";
import { startProxy, type Proxy } from "../helpers/proxy.js";
import { freePort } from "../../cli/cluster/net.js";
import { NODE_BEAT_TTL_MS } from "../../server/broker.js";
import { type ChannelRow, channelRows } from "../../server/operator.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { parseWrapKey } from "../../server/store/wrap.js";
import { Raw, call, handshake, resume } from "../helpers/raw.js";

const t = suite("channels list: the node that holds each channel");
let redis: Awaited<ReturnType<typeof startRedis>>;
/** Node a reaches Redis through this proxy (the race test holds a's writes in it). */
let redisProxy: Proxy;
/** Clients reach node a through this one, retargeted to b once a is killed. */
let front: Proxy;
let a: RunningBroker;
let b: RunningBroker;
let store: RedisStore;
let dir: string;
const wrapKey = randomBytes(32).toString("base64url");
const env = { PSIMBOLS_WRAP_KEY: wrapKey };
const clients: Client[] = [];

const startA = () => startBroker(["--redis", `redis://127.0.0.1:${redisProxy.port}`, "--hellos-per-address", "1000", "--node", "a"], { dataDir: dir, env });

/** The row of `channel`, read as the CLI reads it with --redis. */
async function row(channel: string): Promise<ChannelRow | undefined> {
  return (await channelRows(store)).find((r) => r.channel === channel);
}

/** Waits (up to `ms`) until `channel`'s row says `state` on `holder`; returns the last row seen. */
async function until(channel: string, state: ChannelRow["state"], holder: string, ms = 3000): Promise<ChannelRow | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await row(channel);
    if ((r?.state === state && r?.holder === holder) || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 50));
  }
}

t.before(async () => {
  redis = await startRedis();
  redisProxy = await startProxy(redis.port);
  dir = tempDir();
  a = await startA();
  b = await startBroker(["--redis", redis.url, "--hellos-per-address", "1000", "--node", "b"], { dataDir: dir, env });
  front = await startProxy(a.port);
  store = new RedisStore({ url: redis.url, wrapKey: parseWrapKey(wrapKey) });
});
t.after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  front?.close();
  await Promise.all([a?.stop(), b?.stop()]);
  redisProxy?.close();
  await store?.close();
  await redis?.stop();
});

t("node a killed (SIGKILL): the client that resumed on node b is listed as held by b, the one that stayed away as node gone (last on a) within NODE_BEAT_TTL_MS", async () => {
  const opts = { serverKey: a.fingerprint, knownServersFile: false as const };
  const back = await connect(front.url, { key: await generateSigningKey(), ...opts, reconnect: { baseMs: 20, maxMs: 200 } });
  const away = await connect(front.url, { key: await generateSigningKey(), ...opts, reconnect: false });
  clients.push(back, away);
  const backId = back.channel!.id;
  const awayId = away.channel!.id;
  assert.is((await row(backId))?.state, "held");
  assert.is((await row(backId))?.holder, "a");
  assert.is((await row(awayId))?.holder, "a");
  const resumed = new Promise<void>((r) => back.on("resumed", () => r()));
  await a.stop("SIGKILL");
  const killed = Date.now();
  front.retarget(b.port);
  front.cut();
  await resumed;
  assert.is(back.channel!.id, backId, "resumed, not a new channel");
  const moved = await row(backId);
  assert.equal([moved?.state, moved?.holder, moved?.node], ["held", "b", "a"], "held by b (issued on a)");
  const cli = await runCli(["channels", "list", "--redis", redis.url], env);
  assert.is(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, new RegExp(`^${backId}  \\S+  held by b  until \\S+$`, "m"));
  // The client that stays away: a's last beat runs out, then its claim says so.
  const gone = await until(awayId, "node_gone", "a", NODE_BEAT_TTL_MS + 3000);
  assert.equal([gone?.state, gone?.holder], ["node_gone", "a"], `after ${Date.now() - killed} ms`);
  const cli2 = await runCli(["channels", "list", "--redis", redis.url, "--json"], env);
  assert.is(cli2.code, 0, cli2.stderr);
  const rows = JSON.parse(cli2.stdout) as ChannelRow[];
  assert.equal(rows.find((r) => r.channel === awayId), { channel: awayId, identity: gone!.identity, node: "a", valid_until: gone!.valid_until, holder: "a", state: "node_gone" });
  assert.equal(rows.find((r) => r.channel === backId)?.state, "held");
  a = await startA(); // restarted under the same name: another instance, so the away client's claim stays gone
  await new Promise((r) => setTimeout(r, 300));
  assert.is((await row(awayId))?.state, "node_gone", "a restart under the same name does not revive a dead instance's claims");
});

t("a clean close: not connected (last on b), in the JSON and the text", async () => {
  const raw = await Raw.open(b.url);
  const ch = await handshake(raw, await generateSigningKey());
  const id = ch.grant.channel;
  assert.is((await row(id))?.state, "held");
  raw.close();
  const r = await until(id, "not_connected", "b");
  assert.equal([r?.state, r?.holder], ["not_connected", "b"]);
  const cli = await runCli(["channels", "list", "--redis", redis.url], env);
  assert.match(cli.stdout, new RegExp(`^${id}  \\S+  not connected \\(last on b\\)  until \\S+$`, "m"));
});

t("a's late release after the client resumed on b leaves b's claim (compare-and-set): a's writes held in transit while b takes over", async () => {
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, await generateSigningKey());
  const id = ch.grant.channel;
  assert.equal([(await row(id))?.state, (await row(id))?.holder], ["held", "a"]);
  // Node a's writes to Redis wait in the proxy: its release of the closed socket is sent, not yet run.
  redisProxy.holdRequests();
  let held = 0;
  try {
    raw.close();
    await raw.closed;
    await new Promise((r) => setTimeout(r, 150)); // a has seen the close and sent its release
    const other = await Raw.open(b.url);
    assert.is((await resume(other, ch)).type, "resumed");
    assert.is((await call(other, ch, "whoami")).data.node, "b"); // answered after b's bind
    assert.equal([(await row(id))?.state, (await row(id))?.holder], ["held", "b"], "b's claim");
  } finally {
    held = redisProxy.releaseRequests();
  }
  assert.ok(held > 0, "a's release was held in transit");
  // a's /readyz pings Redis on the same connection, behind the held writes: once it answers, they ran.
  assert.is((await fetch(`http://127.0.0.1:${a.port}/readyz`)).status, 200);
  const r = await row(id);
  assert.equal([r?.state, r?.holder], ["held", "b"], "a's late release did not undo b's claim");
});

t("a close while node a cannot reach Redis is released once it can again (the release is retried after the next beat)", async () => {
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, await generateSigningKey());
  const id = ch.grant.channel;
  assert.is((await row(id))?.holder, "a");
  redisProxy.retarget(await freePort()); // nothing listens there: a's reconnects fail
  redisProxy.cut();
  try {
    await new Promise((r) => setTimeout(r, 200));
    raw.close(); // a's release fails: Redis is out of reach
    await new Promise((r) => setTimeout(r, 500));
    assert.equal([(await row(id))?.state, (await row(id))?.holder], ["held", "a"], "not released while a is cut off");
  } finally {
    redisProxy.retarget(redis.port);
  }
  const r = await until(id, "not_connected", "a", 5000);
  assert.equal([r?.state, r?.holder], ["not_connected", "a"], "released once a reaches Redis again");
});

t("the embedded store: held by the node, then not connected (last on it), through the node's admin ops", async () => {
  const op = await operatorKeys();
  const solo = await startBroker(["--keys", op.keysFile, "--node", "solo"], { dataDir: tempDir() });
  try {
    const raw = await Raw.open(solo.url);
    const ch = await handshake(raw, await generateSigningKey());
    const list = async () => {
      const r = await runCli(["channels", "list", "--url", solo.url, "--key", op.keyFile, "--server-key", solo.fingerprint, "--json"]);
      assert.is(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as ChannelRow[]).find((x) => x.channel === ch.grant.channel);
    };
    const held = await list();
    assert.equal([held?.state, held?.holder], ["held", "solo"]);
    raw.close();
    await new Promise((r) => setTimeout(r, 200));
    const closed = await list();
    assert.equal([closed?.state, closed?.holder], ["not_connected", "solo"]);
  } finally {
    await solo.stop();
  }
});

t.run();
