/**
 * The server API and lifecycle events on the local cluster (three nodes +
 * Redis + HAProxy, cli/cluster/local-cluster.ts; docs/BACKEND.md): a push and
 * a revoke through one node's API reach a client that HAProxy put on another
 * node; the events of one identity are in the Redis Stream in order across a
 * kill -9 of its node, read by a consumer group as a backend would.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Redis } from "ioredis";
import { generateSigningKey, wirePublicKey } from "../../shared/crypto.js";
import { CloseCode } from "../../shared/errors.js";
import { type Client, connect } from "../../client/node.js";
import { type Cluster, type ClusterNode, startCluster } from "../../cli/cluster/local-cluster.js";
import { EVENT_DEFAULTS, type BrokerEvent } from "../../server/app/events.js";
import { runCli } from "../helpers/broker.js";

const t = suite("cluster: server API and events across nodes");
let cluster: Cluster;
let token: string;
let redis: Redis;

t.before(async () => {
  try {
    cluster = await startCluster({ nodes: 3, nodeArgs: ["--hellos-per-address", "1000", "--api-listen", "127.0.0.1:0"] });
  } catch (e) {
    console.error(e);
    throw e;
  }
  const created = await runCli(["api-token", "create", "--redis", cluster.redis.url, "--comment", "cluster test"]);
  assert.is(created.code, 0, created.stderr);
  token = created.stdout.trim();
  redis = new Redis(cluster.redis.url);
});
t.after(async () => {
  redis?.disconnect();
  await cluster?.stop();
});

/** A node's server API URL, from the line it printed. */
function apiOf(node: ClusterNode): string {
  const m = /server API listening on (http:\/\/\S+)/.exec(node.output());
  assert.ok(m, `${node.name} printed no API address:\n${node.output()}`);
  return m[1]!;
}

async function api(node: ClusterNode, path: string, body: unknown): Promise<{ status: number; json: Record<string, any> }> {
  const r = await fetch(new URL(path, apiOf(node)), {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: r.status, json: (await r.json()) as Record<string, any> };
}

const whoami = async (c: Client) => ((await c.request("whoami")) as { node: string; channel: string }).node;

function next<T>(c: Client, event: "push" | "resumed", ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (off(), reject(new Error(`no ${event} in ${ms} ms`))), ms);
    const off: () => void = c.on(event, (v: unknown, ..._: unknown[]) => (clearTimeout(timer), off(), resolve(v as T)));
  });
}

t("a push and a revoke through node A's API reach a client that HAProxy put on node B, each within a second", async () => {
  const key = await generateSigningKey();
  const c = await connect(cluster.url, { key, serverKey: cluster.fingerprint, reconnect: false, renew: false });
  const on = await whoami(c);
  const other = cluster.nodes.find((n) => n.name !== on)!;
  const got = next<unknown>(c, "push", 1000);
  let started = performance.now();
  const pushed = await api(other, "v1/push", { identity: key.public.fingerprint, message: { from: other.name } });
  assert.equal([pushed.status, pushed.json], [200, { seq: 1 }]);
  assert.equal(await got, { from: other.name });
  const pushMs = performance.now() - started;
  const closed = new Promise<number>((r) => c.on("close", (e) => r(e.code)));
  const channel = c.channel!.id; // the client forgets it on the notice, maybe before the API answers
  started = performance.now();
  const revoked = await api(other, "v1/revoke", { identity: key.public.fingerprint });
  assert.equal([revoked.status, revoked.json], [200, { revoked: [channel] }]);
  const code = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-1), 1000))]);
  assert.is(code, CloseCode.revoked.code, "the revocation did not reach the client within a second");
  console.log(`    API on ${other.name} → client on ${on}: push ${pushMs.toFixed(1)} ms, revoke ${(performance.now() - started).toFixed(1)} ms`);
  // A wrong token is refused on every node alike: the tokens live in Redis.
  for (const n of cluster.nodes) {
    const r = await fetch(new URL("v1/stats", apiOf(n)), { headers: { authorization: "Bearer psat_0000000000000000_" + "A".repeat(43) } });
    assert.is(r.status, 401, n.name);
  }
});

t("a token created and revoked with --redis works, then is refused, on every node at once", async () => {
  const created = await runCli(["api-token", "create", "--redis", cluster.redis.url, "--comment", "short-lived"]);
  assert.is(created.code, 0, created.stderr);
  const other = created.stdout.trim();
  const stats = (n: ClusterNode) => fetch(new URL("v1/stats", apiOf(n)), { headers: { authorization: `Bearer ${other}` } }).then((r) => r.status);
  assert.equal(await Promise.all(cluster.nodes.map(stats)), cluster.nodes.map(() => 200));
  const listed = await runCli(["api-token", "list", "--redis", cluster.redis.url, "--json"]);
  const ids = (JSON.parse(listed.stdout) as { id: string }[]).map((x) => x.id);
  assert.ok(ids.includes(other.slice(5, 21)) && ids.includes(token.slice(5, 21)));
  assert.not.ok(listed.stdout.includes(other.slice(22)), "list printed a token");
  const revoked = await runCli(["api-token", "revoke", other.slice(5, 21), "--redis", cluster.redis.url]);
  assert.is(revoked.code, 0, revoked.stderr);
  assert.equal(await Promise.all(cluster.nodes.map(stats)), cluster.nodes.map(() => 401));
  const kept = await fetch(new URL("v1/stats", apiOf(cluster.nodes[0]!)), { headers: { authorization: `Bearer ${token}` } });
  assert.is(kept.status, 200, "the other token was revoked too");
});

t("keys added through one node's API are seen by every node (Redis registry) and refused at once when blocked", async () => {
  const member = await generateSigningKey();
  const [a, b] = cluster.nodes;
  const added = await api(a!, "v1/keys", { public_key: wirePublicKey(member.public), role: "blocked", comment: "via node A" });
  assert.is(added.status, 201);
  const listed = await fetch(new URL("v1/keys", apiOf(b!)), { headers: { authorization: `Bearer ${token}` } });
  const keys = ((await listed.json()) as { keys: { fingerprint: string; role: string }[] }).keys;
  assert.ok(keys.some((k) => k.fingerprint === member.public.fingerprint && k.role === "blocked"), "node B does not see the key");
  const refused = await connect(cluster.url, { key: member, serverKey: cluster.fingerprint, reconnect: false }).then(
    () => "connected",
    (e: { code?: string }) => e.code,
  );
  assert.is(refused, "forbidden");
  const removed = await api(b!, "v1/keys/remove", { fingerprint: member.public.fingerprint });
  assert.equal([removed.status, removed.json], [200, { removed: member.public.fingerprint }]);
  const c = await connect(cluster.url, { key: member, serverKey: cluster.fingerprint, reconnect: false });
  await c.close();
});

t("the events of one identity are in the stream in order across a kill -9 of its node, read with a consumer group", async () => {
  const stream = EVENT_DEFAULTS.streamKey;
  await redis.xgroup("CREATE", stream, "backend", "$", "MKSTREAM");
  const key = await generateSigningKey();
  const id = key.public.fingerprint;
  const c = await connect(cluster.url, { key, serverKey: cluster.fingerprint, reconnect: { baseMs: 50, maxMs: 500 }, renew: false, requestTimeoutMs: 10_000 });
  try {
    const first = await whoami(c);
    const victim = cluster.nodes.find((n) => n.name === first)!;
    const pusher = cluster.nodes.find((n) => n !== victim && n.alive())!;
    let got = next<unknown>(c, "push", 3000);
    assert.is((await api(pusher, "v1/push", { identity: id, message: 1 })).status, 200);
    assert.is(await got, 1);
    const resumed = next<unknown>(c, "resumed", 20_000);
    await victim.kill("SIGKILL");
    await resumed;
    const second = await whoami(c);
    assert.is.not(second, first);
    got = next<unknown>(c, "push", 3000);
    assert.is((await api(pusher, "v1/push", { identity: id, message: 2 })).status, 200);
    assert.is(await got, 2);
    const closed = new Promise<number>((r) => c.on("close", (e) => r(e.code)));
    assert.is((await api(pusher, "v1/revoke", { identity: id })).status, 200);
    assert.is(await closed, CloseCode.revoked.code);

    // A backend reading with its consumer group sees them in order (and acknowledges them).
    const mine: BrokerEvent[] = [];
    const deadline = Date.now() + 5000;
    while (mine.length < 5 && Date.now() < deadline) {
      const r = (await redis.xreadgroup("GROUP", "backend", "w1", "COUNT", 1000, "BLOCK", 200, "STREAMS", stream, ">")) as [string, [string, string[]][]][] | null;
      for (const [entryId, f] of r?.[0]?.[1] ?? []) {
        const ev = JSON.parse(f[f.indexOf("event") + 1]!) as BrokerEvent;
        if (ev.identity === id) mine.push(ev);
        await redis.xack(stream, "backend", entryId);
      }
    }
    assert.equal(
      mine.map((e) => [e.type, e.node, e.data.seq ?? e.data.node ?? null]),
      [
        ["channel.established", first, null],
        ["push.delivered", first, 1],
        ["channel.resumed", second, second],
        ["push.delivered", second, 2],
        ["channel.revoked", pusher.name, null],
      ],
    );
    const channel = mine[0]!.data.channel;
    assert.ok(mine.every((e) => e.data.channel === channel), "events name different channels");
  } finally {
    await c.close().catch(() => undefined);
  }
});

t.run();
