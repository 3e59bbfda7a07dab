/**
 * Every acknowledged push is delivered (at least once, in order) or reported
 * lost, to the client (`pushes_lost`) and to the backend (`push.dropped`),
 * whatever the client's history (DESIGN.md §11, PROTOCOL.md §6.5 and §7.2,
 * SECURITY.md "Push delivery"). Real node processes on a real Redis behind
 * HAProxy (cli/cluster/local-cluster.ts, four nodes: each test kills one); the client reaches HAProxy through
 * a TCP proxy the test controls, so that it is provably away while the pushes
 * are acknowledged: its node is killed with SIGKILL, the proxy refuses its
 * reconnects, five pushes go through the other node's server API (each 200),
 * then the proxy lets it back and it resumes on the surviving node.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createServer } from "node:net";
import { Redis } from "ioredis";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { type Client, connect } from "../../client/node.js";
import { type Cluster, type ClusterNode, startCluster } from "../../cli/cluster/local-cluster.js";
import { EVENT_DEFAULTS, type BrokerEvent } from "../../server/app/events.js";
import { runCli } from "../helpers/broker.js";
import { type Proxy, startProxy } from "../helpers/proxy.js";

/** Pushes kept per identity on these nodes: 5 away fit, 7 do not. */
const WINDOW = 5;

const t = suite("cluster: every acknowledged push is delivered or reported lost");
let cluster: Cluster;
let token: string;
let redis: Redis;
let proxy: Proxy;
let deadPort: number;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.before(async () => {
  cluster = await startCluster({ nodes: 4, nodeArgs: ["--hellos-per-address", "1000", "--api-listen", "127.0.0.1:0", "--push-window-count", String(WINDOW)] });
  const created = await runCli(["api-token", "create", "--redis", cluster.redis.url, "--comment", "push delivery test"]);
  assert.is(created.code, 0, created.stderr);
  token = created.stdout.trim();
  redis = new Redis(cluster.redis.url);
  proxy = await startProxy(cluster.haproxy.port);
  // A port nothing listens on: while the proxy sends new connections there, the client stays away.
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  deadPort = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
});
t.after(async () => {
  proxy?.close();
  redis?.disconnect();
  await cluster?.stop();
});

function apiOf(node: ClusterNode): string {
  const m = /server API listening on (http:\/\/\S+)/.exec(node.output());
  assert.ok(m, `${node.name} printed no API address:\n${node.output()}`);
  return m[1]!;
}

async function push(node: ClusterNode, identity: string, message: unknown): Promise<number> {
  const r = await fetch(new URL("v1/push", apiOf(node)), {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ identity, message }),
    signal: AbortSignal.timeout(5000),
  });
  assert.is(r.status, 200, `push ${JSON.stringify(message)} was not acknowledged`);
  return ((await r.json()) as { seq: number }).seq;
}

/** The stream's events of one identity, in order. */
async function eventsOf(identity: string): Promise<BrokerEvent[]> {
  const entries = (await redis.xrange(EVENT_DEFAULTS.streamKey, "-", "+")) as [string, string[]][];
  return entries.map(([, f]) => JSON.parse(f[f.indexOf("event") + 1]!) as BrokerEvent).filter((e) => e.identity === identity);
}

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) assert.unreachable(`${what} within ${ms} ms`);
    await sleep(50);
  }
}

interface Away {
  key: SigningKey;
  client: Client;
  pushes: unknown[];
  notices: string[];
  seqs: number[];
  /** The node the client was on (killed) and the one it resumed on. */
  first: string;
  second: string;
}

/**
 * A client gets `before` pushes, its node is killed, `away` pushes are acknowledged while
 * it cannot reconnect, then it comes back and resumes on the other node.
 */
async function awayScenario(before: number, away: number): Promise<Away> {
  const key = await generateSigningKey();
  const identity = key.public.fingerprint;
  proxy.retarget(cluster.haproxy.port);
  const client = await connect(proxy.url, { key, serverKey: cluster.fingerprint, reconnect: { baseMs: 50, maxMs: 200 }, renew: false, requestTimeoutMs: 10_000 });
  const pushes: unknown[] = [];
  const notices: string[] = [];
  client.on("push", (m) => pushes.push(m));
  client.on("notice", (n) => notices.push(n.kind));
  try {
    const first = ((await client.request("whoami")) as { node: string }).node;
    const victim = cluster.nodes.find((n) => n.name === first)!;
    const other = cluster.nodes.find((n) => n !== victim && n.alive())!;
    for (let i = 1; i <= before; i++) await push(other, identity, `before ${i}`);
    await until(`the ${before} pushes before the kill arrive`, () => pushes.length === before);
    let resumed = false;
    client.on("resumed", () => (resumed = true));
    proxy.retarget(deadPort);
    await victim.kill("SIGKILL");
    const seqs: number[] = [];
    for (let i = 1; i <= away; i++) seqs.push(await push(other, identity, `away ${i}`));
    assert.not.ok(resumed, "the client came back before the pushes were acknowledged: the scenario did not happen");
    proxy.retarget(cluster.haproxy.port);
    await until("the client resumes", () => resumed, 20_000);
    const second = ((await client.request("whoami")) as { node: string }).node;
    assert.is.not(second, first, "resumed on the killed node");
    return { key, client, pushes, notices, seqs, first, second };
  } catch (e) {
    await client.close();
    throw e;
  }
}

t("a client that never got a push gets all five pushes acknowledged while its node was dead, in order, once each, with push.delivered for each", async () => {
  const a = await awayScenario(0, 5);
  try {
    const want = ["away 1", "away 2", "away 3", "away 4", "away 5"];
    await until("the five pushes arrive", () => a.pushes.length >= 5);
    await sleep(300); // nothing more may follow
    assert.equal(a.pushes, want);
    assert.equal(a.notices.filter((n) => n === "pushes_lost"), []);
    const identity = a.key.public.fingerprint;
    await until("the push.delivered events reach the stream", async () => (await eventsOf(identity)).filter((e) => e.type === "push.delivered").length >= 5);
    const delivered = (await eventsOf(identity)).filter((e) => e.type === "push.delivered");
    assert.equal(delivered.map((e) => [e.node, e.data.seq]), a.seqs.map((s) => [a.second, s]));
  } finally {
    await a.client.close();
  }
});

t("a client that got one push before gets the five acknowledged while away, in order (the control)", async () => {
  const a = await awayScenario(1, 5);
  try {
    await until("the five pushes arrive", () => a.pushes.length >= 6);
    await sleep(300);
    assert.equal(a.pushes, ["before 1", "away 1", "away 2", "away 3", "away 4", "away 5"]);
  } finally {
    await a.client.close();
  }
});

t(`a client that never got a push, away for ${WINDOW + 2} pushes (the window keeps ${WINDOW}): pushes_lost to it, push.dropped to the backend`, async () => {
  const a = await awayScenario(0, WINDOW + 2);
  try {
    await until("the pushes_lost notice arrives", () => a.notices.includes("pushes_lost"));
    const identity = a.key.public.fingerprint;
    await until("push.dropped reaches the stream", async () => (await eventsOf(identity)).some((e) => e.type === "push.dropped"));
    const dropped = (await eventsOf(identity)).filter((e) => e.type === "push.dropped");
    assert.equal(dropped.map((e) => [e.node, e.data.after, e.data.newest]), [[a.second, 0, a.seqs.at(-1)]]);
    // What is not reported lost was delivered: nothing here (the server goes on from the newest id, §7.2).
    assert.equal(a.pushes, []);
    // Later pushes arrive as usual.
    const other = cluster.nodes.find((n) => n.name === a.second)!;
    await push(other, identity, "after");
    await until("a later push arrives", () => a.pushes.length === 1);
    assert.equal(a.pushes, ["after"]);
  } finally {
    await a.client.close();
  }
});

t.run();
