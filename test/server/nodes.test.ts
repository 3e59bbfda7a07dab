/**
 * Two broker processes sharing one real redis-server: resume on another node,
 * cluster-wide revocation and replacement, pushes that survive an absence.
 * DESIGN.md §6. (The HAProxy topology is test/cluster/.)
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { generateSigningKey } from "../../shared/crypto.js";
import { CloseCode } from "../../shared/errors.js";
import { connect, type Client, loadKey } from "../../client/node.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { startRedis } from "../helpers/redis.js";
import { startProxy, type Proxy } from "../helpers/proxy.js";
import { freePort } from "../../cli/cluster/net.js";
import { MAX_PUSH_BYTES } from "../../server/broker.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { parseWrapKey } from "../../server/store/wrap.js";
import { Raw, call, handshake, openPush, readResponse, requestFrame, resume } from "../helpers/raw.js";

const t = suite("several nodes on one Redis");
let redis: Awaited<ReturnType<typeof startRedis>>;
let a: RunningBroker;
let b: RunningBroker;
let operator: Client;
let proxy: Proxy;
const env = { PSIMBOLS_WRAP_KEY: randomBytes(32).toString("base64url") };

/** Waits (up to 10 s) until the node's /readyz says its store answers; returns the last status. */
async function storeReady(node: RunningBroker): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const status = (await fetch(`http://127.0.0.1:${node.port}/readyz`)).status;
    if (status === 200 || Date.now() > deadline) return status;
    await new Promise((r) => setTimeout(r, 100));
  }
}

t.before(async () => {
  redis = await startRedis();
  const dir = tempDir();
  const opFile = join(dir, "operator.pem");
  assert.is((await runCli(["keygen", "-o", opFile])).code, 0);
  const added = await runCli(["keys", "add", opFile, "--role", "operator", "--redis", redis.url]);
  assert.is(added.code, 0, added.stderr);
  // Both nodes share one server key (the first generates it in the shared data dir).
  const args = ["--redis", redis.url, "--hellos-per-address", "1000", "--push-window-count", "5"];
  a = await startBroker([...args, "--node", "a"], { dataDir: dir, env });
  b = await startBroker([...args, "--node", "b"], { dataDir: dir, env });
  assert.is(a.fingerprint, b.fingerprint);
  operator = await connect(b.url, { key: await loadKey(opFile), serverKey: b.fingerprint });
  proxy = await startProxy(a.port);
});
t.after(async () => {
  await operator?.close();
  proxy?.close();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

t("a channel granted on node a is resumed on node b without a handshake", async () => {
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, await generateSigningKey());
  assert.is((await call(raw, ch, "whoami")).data.node, "a");
  const sent = await requestFrame(ch, "echo", "once");
  raw.send(sent);
  assert.equal(await readResponse(raw, ch), { data: "once" });
  const other = await Raw.open(b.url);
  assert.is((await resume(other, ch)).type, "resumed");
  // A frame accepted on node a is never accepted again on node b, not even with the binding there.
  other.send(sent);
  assert.is((await other.next()).error.code, "unauthorised");
  const who = await call(other, ch, "whoami");
  assert.is(who.data.node, "b");
  assert.is(who.data.channel, ch.grant.channel);
  // The binding on node a is retired by node b's takeover.
  assert.is((await raw.closed).code, CloseCode.replaced.code);
  other.close();
});

t("a revocation made through node b reaches the client on node a, within a second", async () => {
  const key = await generateSigningKey();
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, key);
  const started = performance.now();
  assert.equal(await operator.request("admin.revoke", { identity: key.public.fingerprint }), { revoked: [ch.grant.channel] });
  const n = await raw.next(1000);
  const ms = performance.now() - started;
  assert.equal(await openPush(ch, n), { notice: "revoked" });
  assert.is((await raw.closed).code, CloseCode.revoked.code);
  console.log(`    revocation to notice across nodes: ${ms.toFixed(1)} ms`);
  assert.ok(ms < 1000);
});

t("a new handshake on node b replaces the channel held on node a: notice, then terminal close", async () => {
  const key = await generateSigningKey();
  const first = await Raw.open(a.url);
  const ch = await handshake(first, key);
  const second = await Raw.open(b.url);
  await handshake(second, key);
  assert.equal(await openPush(ch, await first.next(1000)), { notice: "replaced" });
  assert.is((await first.closed).code, CloseCode.replaced.code);
  second.close();
});

t("a revocation missed while away is told, authenticated, on resume", async () => {
  const key = await generateSigningKey();
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, key);
  raw.close();
  await new Promise((r) => setTimeout(r, 100));
  await operator.request("admin.revoke", { channel: ch.grant.channel });
  const back = await Raw.open(b.url);
  assert.is((await resume(back, ch)).type, "resumed");
  back.send(await requestFrame(ch, "ping"));
  const frames = [await back.next(), await back.next()];
  const push = frames.find((f) => f.type === "push");
  assert.ok(push, "a notice arrives");
  assert.equal(await openPush(ch, push!), { notice: "revoked" });
  assert.is((await back.closed).code, CloseCode.revoked.code);
});

t("pushes sent while a client is away arrive on resume at another node, in order, none twice", async () => {
  const key = await generateSigningKey();
  const c = await connect(proxy.url, { key, serverKey: a.fingerprint, knownServersFile: false });
  const got: unknown[] = [];
  c.on("push", (m) => got.push(m));
  await operator.request("admin.push", { identity: key.public.fingerprint, message: 1 });
  while (got.length < 1) await new Promise((r) => setTimeout(r, 10));
  // The client's socket dies; while it is away, three pushes are sent through node b.
  proxy.retarget(b.port);
  const resumed = new Promise<void>((r) => c.on("resumed", () => r()));
  const handshakes = c.stats.handshakes;
  proxy.cut();
  for (const m of [2, 3, 4]) await operator.request("admin.push", { identity: key.public.fingerprint, message: m });
  await resumed;
  assert.equal(await c.request("whoami").then((w: any) => w.node), "b");
  await operator.request("admin.push", { identity: key.public.fingerprint, message: 5 });
  const deadline = Date.now() + 3000;
  while (got.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(got, [1, 2, 3, 4, 5]);
  assert.is(c.stats.handshakes, handshakes);
  await c.close();
  proxy.retarget(a.port);
});

t("a client that fell out of the push window is told plainly", async () => {
  const key = await generateSigningKey();
  const c = await connect(proxy.url, { key, serverKey: a.fingerprint, knownServersFile: false, reconnect: { baseMs: 20, maxMs: 100 } });
  const got: unknown[] = [];
  const notices: string[] = [];
  c.on("push", (m) => got.push(m));
  c.on("notice", (n) => notices.push(n.kind));
  await operator.request("admin.push", { identity: key.public.fingerprint, message: 0 });
  while (got.length < 1) await new Promise((r) => setTimeout(r, 10));
  const resumed = new Promise<void>((r) => c.on("resumed", () => r()));
  // Away for sure while the pushes are made: reconnects meet a closed port until they are done.
  proxy.retarget(await freePort());
  proxy.cut();
  // The window keeps 5 (--push-window-count 5): 8 pushes while away lose 3.
  for (let i = 1; i <= 8; i++) await operator.request("admin.push", { identity: key.public.fingerprint, message: i });
  proxy.retarget(a.port);
  await resumed;
  const deadline = Date.now() + 3000;
  while (!notices.includes("pushes_lost") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(notices.includes("pushes_lost"), `notices: ${notices.join(",")}`);
  await c.close();
});

t("the CLI lists, pushes to and revokes channels through Redis", async () => {
  const key = await generateSigningKey();
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, key);
  const list = await runCli(["channels", "list", "--redis", redis.url, "--json"], env);
  assert.is(list.code, 0, list.stderr);
  const rows = JSON.parse(list.stdout) as { channel: string; identity: string; node: string }[];
  assert.ok(rows.some((r) => r.channel === ch.grant.channel && r.identity === key.public.fingerprint && r.node === "a"));
  assert.not.match(list.stdout, ch.grant.key.data);
  const pushed = await runCli(["push", '{"from":"cli"}', "--identity", key.public.fingerprint, "--redis", redis.url], env);
  assert.is(pushed.code, 0, pushed.stderr);
  // Written straight to the store, it keeps Broker.push's bound (UTF-8 bytes, so 2-byte characters).
  const tooBig = await runCli(["push", JSON.stringify("é".repeat(MAX_PUSH_BYTES / 2)), "--identity", key.public.fingerprint, "--redis", redis.url], env);
  assert.is(tooBig.code, 1);
  assert.match(tooBig.stderr, `larger than ${MAX_PUSH_BYTES} bytes`);
  const p = await openPush(ch, await raw.next(2000));
  assert.equal(p, { message: { from: "cli" }, id: JSON.parse(pushed.stdout).seq });
  const revoked = await runCli(["channels", "revoke", "--channel", ch.grant.channel, "--redis", redis.url], env);
  assert.is(revoked.code, 0, revoked.stderr);
  assert.equal(await openPush(ch, await raw.next(2000)), { notice: "revoked" });
  const again = await runCli(["channels", "revoke", "--channel", ch.grant.channel, "--redis", redis.url], env);
  assert.is(again.code, 1);
  assert.match(again.stderr, "no live channel matched");
});

t("keys added to Redis take effect on every node without a restart", async () => {
  const dir = tempDir();
  const file = join(dir, "member.pem");
  assert.is((await runCli(["keygen", "-o", file])).code, 0);
  const member = await loadKey(file);
  const closedArgs = ["--redis", redis.url, "--closed", "--hellos-per-address", "1000"];
  const c1 = await startBroker([...closedArgs, "--node", "c1"], { dataDir: a.dataDir, env });
  const c2 = await startBroker([...closedArgs, "--node", "c2"], { dataDir: a.dataDir, env });
  try {
    const r1 = await Raw.open(c1.url);
    await handshake(r1, member).then(
      () => assert.unreachable("an unregistered key got a channel"),
      (e: Error) => assert.match(e.message, "forbidden"),
    );
    assert.is((await runCli(["keys", "add", file, "--redis", redis.url])).code, 0);
    for (const node of [c1, c2]) {
      const r = await Raw.open(node.url);
      const ch = await handshake(r, member);
      assert.is((await call(r, ch, "echo", 1)).data, 1);
      r.close();
    }
    assert.is((await runCli(["keys", "remove", member.public.fingerprint, "--redis", redis.url])).code, 0);
    const r2 = await Raw.open(c2.url);
    await handshake(r2, member).then(
      () => assert.unreachable("a removed key got a channel"),
      (e: Error) => assert.match(e.message, "forbidden"),
    );
  } finally {
    await Promise.all([c1.stop(), c2.stop()]);
  }
});

t("the per-message path makes no Redis round trip", async () => {
  const { Redis } = await import("ioredis");
  const probe = new Redis(redis.url);
  // Every command but the nodes' timers, store-watch PINGs (PROTOCOL.md §11.2) and beats (PSETEX,
  // docs/CLUSTER.md, Operating a cluster), and this probe's INFO.
  const timers = new Set(["ping", "psetex", "info"]);
  const processed = async () =>
    [...(await probe.info("commandstats")).matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)].filter((m) => !timers.has(m[1]!)).reduce((n, m) => n + Number(m[2]), 0);
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, await generateSigningKey());
  await call(raw, ch, "echo", 0);
  const before = await processed();
  const n = 300;
  for (let i = 1; i <= n; i++) assert.equal(await call(raw, ch, "echo", i), { data: i });
  const commands = (await processed()) - before;
  console.log(`    Redis commands during ${n} requests: ${commands}`);
  assert.is(commands, 0);
  raw.close();
  probe.disconnect();
});

t("with Redis down: bound channels keep working, handshakes get `unavailable`, /readyz says so; all recovers by itself", async () => {
  const raw = await Raw.open(a.url);
  const ch = await handshake(raw, await generateSigningKey());
  redis.kill();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await call(raw, ch, "echo", "no store needed"), { data: "no store needed" });
  const fresh = await Raw.open(b.url);
  await handshake(fresh, await generateSigningKey()).then(
    () => assert.unreachable("a handshake succeeded without a store"),
    (e: Error) => assert.match(e.message, "unavailable"),
  );
  const ready = await fetch(`http://127.0.0.1:${b.port}/readyz`);
  assert.is(ready.status, 503);
  assert.is((await fetch(`http://127.0.0.1:${b.port}/healthz`)).status, 200);
  await redis.restart();
  assert.is(await storeReady(b), 200);
  const again = await Raw.open(b.url);
  const ch2 = await handshake(again, await generateSigningKey());
  assert.equal(await call(again, ch2, "echo", "back"), { data: "back" });
  assert.is(a.proc.exitCode, null, "node a crashed");
  assert.is(b.proc.exitCode, null, "node b crashed");
  raw.close();
  again.close();
});

// After the test above: Redis has restarted empty once already (the operator key went with it).
t("Redis restarted empty: the client's new channel delivers pushes numbered from 1 again (not dropped as already delivered)", async () => {
  const app = new RedisStore({ url: redis.url, wrapKey: parseWrapKey(env.PSIMBOLS_WRAP_KEY) });
  const window = { count: 100, ageMs: 60_000 };
  // Node a back on the store after the test above (it only waited for node b).
  assert.is(await storeReady(a), 200);
  const key = await generateSigningKey();
  const c = await connect(a.url, { key, serverKey: a.fingerprint, knownServersFile: false, reconnect: { baseMs: 50, maxMs: 500 } });
  const got: unknown[] = [];
  c.on("push", (m) => got.push(m));
  c.on("error", () => {}); // `unavailable` while Redis comes back: the client retries on its own
  const wait = async (n: number) => {
    for (const until = Date.now() + 5000; got.length < n && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
  };
  try {
    for (const m of ["a", "b", "c"]) await app.push(key.public.fingerprint, JSON.stringify(m), window);
    await wait(3);
    assert.equal(got, ["a", "b", "c"]);
    const established = new Promise<void>((r) => c.on("established", () => r()));
    redis.kill();
    await redis.restart();
    // The node's re-check finds the channel gone: `expired`, and the client makes a new one.
    await established;
    assert.is(await app.push(key.public.fingerprint, JSON.stringify("d"), window), 1, "the store numbers from 1 again");
    await wait(4);
    assert.equal(got, ["a", "b", "c", "d"], "push 1 of the new numbering was delivered");
    assert.is(await app.push(key.public.fingerprint, JSON.stringify("e"), window), 2);
    await wait(5);
    assert.equal(got, ["a", "b", "c", "d", "e"]);
  } finally {
    await c.close();
    await app.close();
  }
});

t.run();
