/**
 * A hello flood while a node dies (PROTOCOL.md §11.1, §11.4): a local
 * cluster (Redis, two nodes, HAProxy) with the default limits. 160 source
 * addresses (127.0.3.x: all of 127/8 is loopback on Linux; each socket is
 * bound to its address) flood the surviving node with hellos at their
 * per-address rate (2 a second, 320 a second in all, over the 200 a second
 * that the node-wide budget once allowed), while the node holding 50 clients
 * is killed: all 50 resume their channels, none refused, and a newcomer's
 * first handshake succeeds within NEWCOMER_BOUND_MS. The node admits by
 * capacity: it takes the flood while it keeps up, and past its hello target
 * it refuses hellos before resumes (whose target is higher). With the first
 * limits (one first-come budget per second for hellos and resumes) the flood
 * took ~60% of every second's budget before the rest asked, so some resumes
 * and the newcomer's first hello were refused.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import WebSocket from "ws";
import { generateSigningKey } from "../../shared/crypto.js";
import { createHello } from "../../shared/handshake.js";
import { type Client, connect } from "../../client/node.js";
import { type Cluster, type ClusterNode, startCluster } from "../../cli/cluster/local-cluster.js";

/** All 50 clients of the killed node must have resumed within this (HAProxy notices the dead node, clients back off). */
const RESUME_BOUND_MS = 15_000;
/** A newcomer's handshake, through the balancer, under the flood. */
const NEWCOMER_BOUND_MS = 5_000;
const HONEST = 50;
const FLOODERS = 160;
/** A flooder's pace: its per-address rate (20 per 10 s). */
const FLOOD_PERIOD_MS = 500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A WebSocket class whose sockets leave from `localAddress`. */
function from(localAddress: string): typeof WebSocket {
  return class extends WebSocket {
    constructor(url: string) {
      super(url, { localAddress });
    }
  } as typeof WebSocket;
}

interface WhoAmI {
  channel: string;
  node: string;
}

const t = suite("fair limits: a hello flood from 160 addresses while 50 clients resume");
let cluster: Cluster;
t.before(async () => {
  try {
    cluster = await startCluster({ nodes: 2 });
  } catch (e) {
    console.error(e);
    throw e;
  }
});
t.after(async () => {
  await cluster?.stop();
});

/**
 * One flooding address: a fresh socket per hello, one every FLOOD_PERIOD_MS whether or not the
 * last was answered (open loop: a slow node does not slow the flood); counts what was sent and answered.
 */
function flooder(url: string, address: string, hello: string, stop: { now: boolean }, tally: Record<string, number>, sent: { n: number }): Promise<void> {
  const Ws = from(address);
  const once = () =>
    new Promise<void>((resolve) => {
      const ws = new Ws(url);
      let counted = false;
      const done = (what: string) => {
        if (counted) return;
        counted = true;
        tally[what] = (tally[what] ?? 0) + 1;
        ws.terminate();
        resolve();
      };
      const timer = setTimeout(() => done("no answer"), 3000);
      ws.on("open", () => ws.send(hello));
      ws.on("message", (d: Buffer) => {
        clearTimeout(timer);
        const f = JSON.parse(d.toString()) as { type: string; error?: { code: string } };
        done(f.type === "error" ? f.error!.code : f.type);
      });
      ws.on("error", () => (clearTimeout(timer), done("socket error")));
      ws.on("close", () => (clearTimeout(timer), done("closed")));
    });
  return (async () => {
    let next = Date.now() + Math.random() * FLOOD_PERIOD_MS; // spread over the period, as independent hosts would be
    const out: Promise<void>[] = [];
    while (!stop.now) {
      await sleep(Math.max(0, next - Date.now()));
      if (stop.now) break;
      sent.n++;
      out.push(once());
      next += FLOOD_PERIOD_MS; // behind schedule (a busy test process), it catches up
    }
    await Promise.all(out);
  })();
}

t(`all ${HONEST} clients of a killed node resume and a newcomer gets a channel within ${NEWCOMER_BOUND_MS / 1000} s`, async () => {
  const fingerprint = cluster.fingerprint;
  const [victim, survivor] = cluster.nodes as [ClusterNode, ClusterNode];
  // Honest clients through the balancer, each from an address of its own, until 50 are on the victim.
  const clients: { c: Client; channel: string; node: string }[] = [];
  for (let i = 1; clients.filter((x) => x.node === victim.name).length < HONEST; i++) {
    assert.ok(i < 250, "round robin put too few clients on the first node");
    const c = await connect(cluster.url, { key: await generateSigningKey(), serverKey: fingerprint, WebSocket: from(`127.0.2.${i}`), reconnect: { baseMs: 100, maxMs: 1000 } });
    const w = (await c.request("whoami", null)) as WhoAmI;
    clients.push({ c, channel: w.channel, node: w.node });
  }
  const onVictim = clients.filter((x) => x.node === victim.name);
  let newcomer: Client | undefined;
  const stop = { now: false };
  try {
  let established = 0;
  const resumedAt = new Map<Client, number>();
  let refused = 0;
  for (const { c } of onVictim) {
    c.on("error", (e) => void (e.code === "too_many" && refused++));
    c.on("established", () => established++);
    c.on("resumed", () => resumedAt.set(c, Date.now()));
  }

  // The flood, straight at the survivor (as the balancer would spread it; the survivor is the node that must cope).
  const tally: Record<string, number> = {};
  const sent = { n: 0 };
  const hellos = await Promise.all(Array.from({ length: FLOODERS }, async () => new TextDecoder().decode((await createHello(await generateSigningKey())).bytes)));
  const floodStart = Date.now();
  const flood = Promise.all(hellos.map((h, i) => flooder(survivor.url, `127.0.3.${i + 1}`, h, stop, tally, sent)));
  await sleep(2500); // the flood is on; the survivor's shares follow it

  const killedAt = Date.now();
  await victim.kill("SIGKILL");
  // A newcomer, from an address of its own, through the balancer, a second into the resume storm.
  await sleep(1000);
  const newcomerStart = Date.now();
  let attempts = 0;
  while (!newcomer && Date.now() - newcomerStart < NEWCOMER_BOUND_MS + 5000) {
    attempts++;
    try {
      newcomer = await connect(cluster.url, { key: await generateSigningKey(), serverKey: fingerprint, WebSocket: from("127.0.4.1"), reconnect: false });
    } catch {
      await sleep(200); // a refused first handshake is final for the client: the application retries
    }
  }
  const newcomerMs = Date.now() - newcomerStart;

  const deadline = killedAt + RESUME_BOUND_MS;
  while (resumedAt.size < onVictim.length && Date.now() < deadline) await sleep(100);
  const floodMs = Date.now() - floodStart;
  const offered = sent.n / (floodMs / 1000);
  stop.now = true;
  await flood;

  const lastResume = Math.max(...resumedAt.values()) - killedAt;
  const asked = Object.values(tally).reduce((a, b) => a + b, 0);
  console.log(
    `    flood: ${sent.n} hellos sent from ${FLOODERS} addresses in ${(floodMs / 1000).toFixed(1)} s (${Math.round(offered)}/s), ${asked} answered: ${JSON.stringify(tally)}`,
  );
  console.log(`    ${resumedAt.size}/${onVictim.length} resumed, the last ${lastResume} ms after the kill; newcomer: ${newcomerMs} ms, ${attempts} attempt(s)`);

  assert.ok(offered > 200, `the flood asked for more than the old node-wide budget of 200 a second (${Math.round(offered)}/s)`);
  assert.ok((tally["challenge"] ?? 0) > 0, "flooders got their share");
  assert.is(resumedAt.size, onVictim.length, `all ${onVictim.length} clients of the killed node resumed`);
  assert.is(refused, 0, "no resume was refused too_many: resumes have budgets and a capacity target of their own");
  assert.is(established, 0, "by resume: not one new handshake");
  for (const x of onVictim) {
    assert.is(x.c.channel?.id, x.channel, "the same channel");
    const w = (await x.c.request("whoami", null)) as WhoAmI;
    assert.is(w.node, survivor.name);
  }
  assert.ok(newcomer, `the newcomer got a channel (${attempts} attempts)`);
  // By capacity: the node keeps up with the flood here (about a third of a core), so nothing refuses the newcomer.
  assert.is(attempts, 1, "the newcomer's first hello was admitted");
  assert.ok(newcomerMs <= NEWCOMER_BOUND_MS, `the newcomer got a channel in ${newcomerMs} ms (bound ${NEWCOMER_BOUND_MS} ms)`);
  } finally {
    stop.now = true;
    await Promise.allSettled([...clients.map((x) => x.c.close()), newcomer?.close()]);
  }
});

t.run();
