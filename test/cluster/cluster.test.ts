/**
 * The cluster from local processes (cli/cluster/local-cluster.ts): three
 * nodes + Redis + HAProxy on deploy/haproxy.cfg. A client connected through
 * the balancer loses its node to SIGKILL and resumes its channel on another
 * node with no new handshake — by its own count and by every node's /metrics.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../shared/crypto.js";
import { type Client, connect } from "../../client/node.js";
import { type Cluster, type ClusterNode, startCluster } from "../../cli/cluster/local-cluster.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { parseWrapKey } from "../../server/store/wrap.js";

const t = suite("cluster: nodes, Redis and HAProxy from local processes");
let cluster: Cluster;
t.before(async () => {
  try {
    // Three nodes as in the topology, plus one spare: three tests below each take a node down.
    cluster = await startCluster({ nodes: 4, nodeArgs: ["--hellos-per-address", "1000"] });
  } catch (e) {
    console.error(e); // uvu does not print a failing hook's error
    throw e;
  }
});
t.after(async () => {
  await cluster?.stop();
});

/** The value of one sample of a node's /metrics (0 when absent). */
async function metric(node: ClusterNode, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `) || (labels === "" && l.startsWith(`${name} `)));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}
const established = (node: ClusterNode) => metric(node, "psimbols_handshakes_total", 'outcome="established"');

function nextEvent(c: Client, event: "resumed" | "established", ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (off(), reject(new Error(`no ${event} event in ${ms} ms (state ${c.state})`))), ms);
    const off = c.on(event, () => (clearTimeout(timer), off(), resolve()));
  });
}

interface WhoAmI {
  identity: string;
  channel: string;
  node: string;
}

t("every node holds the shared server key and is in rotation", async () => {
  assert.is(cluster.nodes.length, 4);
  const seen = new Set<string>();
  // Round robin without stickiness: eight fresh connections meet all four nodes.
  for (let i = 0; i < 8; i++) {
    const c = await connect(cluster.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: false });
    seen.add(((await c.request("whoami", null)) as WhoAmI).node);
    await c.close();
  }
  assert.equal([...seen].sort(), ["node1", "node2", "node3", "node4"]);
});

t("a client whose node is killed resumes on another node without a new handshake, and gets the pushes it missed", async () => {
  const key = await generateSigningKey();
  const c = await connect(cluster.url, { key, serverKey: cluster.fingerprint, reconnect: { baseMs: 50, maxMs: 500 }, requestTimeoutMs: 10_000 });
  // A pusher from outside the nodes: the same store API that `psimbols push --redis` uses.
  const pusher = new RedisStore({ url: cluster.redis.url, wrapKey: parseWrapKey(cluster.wrapKey) });
  const push = (m: number) => pusher.push(key.public.fingerprint, JSON.stringify(m), { count: 1000, ageMs: 3600_000 });
  const got: unknown[] = [];
  c.on("push", (m) => got.push(m));
  try {
    assert.equal(await c.request("echo", { n: 1 }), { n: 1 });
    await push(1);
    const before = (await c.request("whoami", null)) as WhoAmI;
    assert.is(before.identity, key.public.fingerprint);
    const victim = cluster.nodes.find((x) => x.name === before.node);
    assert.ok(victim, `whoami named ${before.node}, not a node of the cluster`);
    const others = cluster.nodes.filter((x) => x !== victim);
    const handshakes = c.stats.handshakes;
    const establishedBefore = await Promise.all(others.map(established));
    const resumesBefore = await Promise.all(others.map((x) => metric(x, "psimbols_resumes_total", 'outcome="ok"')));

    const resumed = nextEvent(c, "resumed", 20_000);
    await victim.kill("SIGKILL");
    for (const m of [2, 3, 4]) await push(m); // while the client has no node
    await resumed;
    await push(5);
    const deadline = Date.now() + 5000;
    while (got.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(got, [1, 2, 3, 4, 5], "pushes lost, duplicated or out of order");

    assert.equal(await c.request("echo", { n: 2 }), { n: 2 });
    const after = (await c.request("whoami", null)) as WhoAmI;
    assert.is.not(after.node, before.node, "still on the killed node");
    assert.is(after.channel, before.channel, "the channel changed: a new handshake happened");
    assert.is(after.identity, before.identity);
    assert.is(c.stats.handshakes, handshakes, "the client made a new handshake");
    assert.is(c.stats.resumes, 1);
    // No surviving node established a handshake; the one that took the client counted a resume.
    assert.equal(await Promise.all(others.map(established)), establishedBefore, "a node counted a new handshake");
    const resumesAfter = await Promise.all(others.map((x) => metric(x, "psimbols_resumes_total", 'outcome="ok"')));
    const taker = others.findIndex((x) => x.name === after.node);
    assert.is(resumesAfter[taker], resumesBefore[taker]! + 1, `${after.node} did not count the resume`);

    // Until the health checks mark the dead node down (about a second), round
    // robin still picks it for some new connections: HAProxy redispatches them.
    for (let i = 0; i < 3; i++) {
      const fresh = await connect(cluster.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: false });
      assert.is.not(((await fresh.request("whoami", null)) as WhoAmI).node, victim.name);
      await fresh.close();
    }
  } finally {
    await c.close();
    await pusher.close();
  }
});

/** Keeps `n` echo requests in flight until stopped; records each outcome. */
function traffic(c: Client, n: number) {
  const outcomes = { ok: 0, lost: 0, other: [] as string[] };
  let running = true;
  const loops = Array.from({ length: n }, async (_, w) => {
    for (let i = 0; running; i++) {
      try {
        assert.equal(await c.request("echo", { w, i }), { w, i });
        outcomes.ok++;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === "connection_lost") outcomes.lost++;
        else outcomes.other.push(String(code ?? e));
      }
    }
  });
  return { outcomes, stop: async () => ((running = false), await Promise.all(loops)) };
}

/** Puts `c` under 8 requests in flight, sends `signal` to its node, waits for the resume elsewhere, settles all requests. */
async function signalUnderTraffic(c: Client, signal: NodeJS.Signals) {
  const before = ((await c.request("whoami", null)) as WhoAmI).node;
  const node = cluster.nodes.find((x) => x.name === before && x.alive());
  assert.ok(node, "the client's node is not running");
  const load = traffic(c, 8);
  await new Promise((r) => setTimeout(r, 300));
  const resumed = nextEvent(c, "resumed", 20_000);
  await node.kill(signal);
  await resumed;
  await new Promise((r) => setTimeout(r, 300));
  await load.stop(); // returns only when every request settled: none hangs
  assert.equal(load.outcomes.other, [], "requests failed with another error than connection_lost");
  assert.is.not(((await c.request("whoami", null)) as WhoAmI).node, before);
  return load.outcomes;
}

t("SIGTERM drains a node without failing a request: its clients move to other nodes", async () => {
  const c = await connect(cluster.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: { baseMs: 50, maxMs: 500 } });
  try {
    const o = await signalUnderTraffic(c, "SIGTERM");
    assert.is(o.lost, 0, "a request failed during the drain");
    assert.ok(o.ok > 50, `only ${o.ok} requests answered`);
  } finally {
    await c.close();
  }
});

t("kill -9 under traffic: every request in flight completes or fails with connection_lost, none vanishes", async () => {
  const c = await connect(cluster.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: { baseMs: 50, maxMs: 500 }, requestTimeoutMs: 10_000 });
  try {
    const o = await signalUnderTraffic(c, "SIGKILL");
    console.log(`    kill -9 under 8 requests in flight: ${o.ok} answered, ${o.lost} connection_lost`);
    assert.ok(o.lost <= 8, "more requests lost than were in flight");
  } finally {
    await c.close();
  }
});

t("stop() ends every process of the cluster", async () => {
  const procs = [cluster.redis, cluster.haproxy, ...cluster.nodes];
  await cluster.stop();
  for (const p of procs) assert.not.ok(p.alive(), `${p.name} still runs`);
});

t.run();
