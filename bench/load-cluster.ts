/**
 * Load across the cluster (docs/PERFORMANCE.md, Across the cluster): N broker nodes behind HAProxy
 * (`startCluster`, the local equivalent of `docker compose up --scale
 * node=N`), thousands of clients connected through the balancer, a steady
 * open-loop rate of requests, application pushes to many identities through
 * Redis (as `psimbols push --redis` does), and revocations. Loopback only,
 * bounded in time.
 *
 *   npm run load:cluster -- --nodes 1,2,3 --clients 2000 --seconds 20
 *
 * For each node count it reports: connections held, requests/s, pushes
 * delivered/s, p50/p99 latency of requests, pushes (push call to delivery)
 * and revocation-to-notice, each node's CPU (% of one core) and RSS, and the
 * nodes' CPU per operation (µs per request or push delivered, all nodes
 * together): on a 2-core machine shared with the load generator, Redis and
 * HAProxy, that, not the total, is the figure that shows how it scales.
 * `--json FILE` also writes the figures as JSON.
 *
 * Options (defaults): --nodes 1,2,3 (one run per count), --clients 2000,
 * --seconds 20 (measured window, after all clients are connected),
 * --rate 1000 (requests/s, all clients together), --push-rate 200
 * (pushes/s, each to a random identity), --revoke-rate 2 (revocations/s),
 * --ramp 150 (new connections/s while connecting; the nodes' hello budget
 * is 200/s each).
 */
import { cpuSeconds, rssMiB } from "./proc.js";
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { generateSigningKey } from "../shared/crypto.js";
import { type Client, connect } from "../client/node.js";
import { type Cluster, startCluster } from "../cli/cluster/local-cluster.js";
import { RedisStore } from "../server/store/redis-store.js";
import { parseWrapKey } from "../server/store/wrap.js";
import { number, parseOptions } from "./options.js";

interface Options {
  nodes: number[];
  clients: number;
  seconds: number;
  rate: number;
  pushRate: number;
  revokeRate: number;
  ramp: number;
  json?: string;
}

const USAGE = "usage: npm run load:cluster -- [--nodes 1,2,3] [--clients 2000] [--seconds 20] [--rate 1000] [--push-rate 200] [--revoke-rate 2] [--ramp 150] [--json FILE]";

function options(argv: string[]): Options {
  const o: Options = { nodes: [1, 2, 3], clients: 2000, seconds: 20, rate: 1000, pushRate: 200, revokeRate: 2, ramp: 150 };
  parseOptions(argv, USAGE, {
    "--nodes": (v) => (o.nodes = v.split(",").map((x) => number(x, 1, 16))),
    "--clients": (v) => (o.clients = number(v, 1, 20_000)),
    "--seconds": (v) => (o.seconds = number(v, 1, 600)),
    "--rate": (v) => (o.rate = number(v, 0, 100_000)),
    "--push-rate": (v) => (o.pushRate = number(v, 0, 10_000)),
    "--revoke-rate": (v) => (o.revokeRate = number(v, 0, 100)),
    "--ramp": (v) => (o.ramp = number(v, 1, 10_000)),
    "--json": (v) => (o.json = v),
  });
  return o;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));


class Latencies {
  readonly #v: number[] = [];
  add(ms: number): void {
    if (this.#v.length < 2_000_000) this.#v.push(ms);
  }
  get count(): number {
    return this.#v.length;
  }
  pct(p: number): number {
    if (this.#v.length === 0) return NaN;
    const s = [...this.#v].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
  }
}

interface Held {
  client: Client;
  identity: string;
  revokedAt?: number;
  closed: boolean;
}

export interface ClusterLoadFigures {
  nodes: number;
  clients: number;
  connectionsHeld: number;
  connectSeconds: number;
  seconds: number;
  requestsPerSecond: number;
  requestErrors: number;
  /** Requests in flight on a client when it was revoked (they fail, as they should). */
  requestsToRevoked: number;
  /** The machine's 1-minute load average at the end of the window (2 cores here: above 2, everything waits). */
  loadAverage: number;
  pushesPerSecond: number;
  pushesSent: number;
  pushesDelivered: number;
  revocations: number;
  revocationsNoticed: number;
  requestP50Ms: number;
  requestP99Ms: number;
  pushP50Ms: number;
  pushP99Ms: number;
  revokeP50Ms: number;
  revokeP99Ms: number;
  nodeCpuPct: number[];
  nodeRssMiB: number[];
  redisCpuPct: number;
  haproxyCpuPct: number;
  loadGeneratorCpuPct: number;
  /** Nodes' CPU (all together) per operation (request answered or push delivered), µs. */
  nodeCpuUsPerOp: number;
}

async function runOnce(nodes: number, o: Options): Promise<ClusterLoadFigures> {
  const say = (m: string) => console.error(`[${nodes} node${nodes > 1 ? "s" : ""}] ${m}`);
  // Every client comes through HAProxy from 127.0.0.1: per-address limits would be one address's.
  const cluster: Cluster = await startCluster({ nodes, nodeArgs: ["--hellos-per-address", "1000000", "--max-connections-per-address", "1000000"], logLevel: "error" });
  const app = new RedisStore({ url: cluster.redis.url, wrapKey: parseWrapKey(cluster.wrapKey) });
  const held: Held[] = [];
  const pushLat = new Latencies();
  const revokeLat = new Latencies();
  let pushesDelivered = 0;
  let measuring = false;
  try {
    // ---- connect, at a bounded rate (the hello budget), retrying a refused one
    const keys = await Promise.all(Array.from({ length: o.clients }, () => generateSigningKey()));
    const t0 = Date.now();
    let next = 0;
    const workers = Array.from({ length: Math.min(64, o.clients) }, async () => {
      for (let i = next++; i < o.clients; i = next++) {
        const due = t0 + (i * 1000) / o.ramp;
        if (due > Date.now()) await sleep(due - Date.now());
        const key = keys[i]!;
        for (let attempt = 0; ; attempt++) {
          try {
            const client = await connect(cluster.url, { key, serverKey: cluster.fingerprint, reconnect: { baseMs: 200, maxMs: 2000 }, requestTimeoutMs: 30_000 });
            const h: Held = { client, identity: key.public.fingerprint, closed: false };
            client.on("push", (m) => {
              const t = (m as { t?: number }).t;
              if (!measuring || typeof t !== "number") return;
              pushesDelivered++;
              pushLat.add(Date.now() - t);
            });
            client.on("notice", (n) => {
              if (n.kind === "revoked" && h.revokedAt !== undefined) revokeLat.add(Date.now() - h.revokedAt);
            });
            client.on("close", () => (h.closed = true));
            held.push(h);
            break;
          } catch (e) {
            if (attempt >= 20) throw e;
            await sleep(200 + Math.random() * 300);
          }
        }
      }
    });
    await Promise.all(workers);
    const connectSeconds = (Date.now() - t0) / 1000;
    say(`${held.length} clients connected in ${connectSeconds.toFixed(1)} s`);
    await sleep(1000);

    // ---- the measured window
    const reqLat = new Latencies();
    let requestErrors = 0;
    let requestsToRevoked = 0;
    let requestsOk = 0;
    let pushesSent = 0;
    let revocations = 0;
    const pids = cluster.nodes.map((n) => n.proc.pid);
    const cpu0 = pids.map(cpuSeconds);
    const redis0 = cpuSeconds(cluster.redis.proc.pid);
    const lb0 = cpuSeconds(cluster.haproxy.proc.pid);
    const self0 = process.cpuUsage();
    const start = Date.now();
    const end = start + o.seconds * 1000;
    measuring = true;
    const live = () => held.filter((h) => !h.closed && h.revokedAt === undefined);
    const pending: Promise<void>[] = [];
    const TICK = 10;
    let credit = { req: 0, push: 0, revoke: 0 };
    // Open loop: what is due follows the clock, so a late tick sends more, not less.
    let last = Date.now();
    for (let now = last; now < end; now = Date.now()) {
      const dt = (now - last) / 1000;
      last = now;
      credit = { req: credit.req + o.rate * dt, push: credit.push + o.pushRate * dt, revoke: credit.revoke + o.revokeRate * dt };
      const pool = live();
      for (; credit.req >= 1; credit.req--) {
        const h = pool[Math.floor(Math.random() * pool.length)]!;
        const t = performance.now();
        pending.push(
          h.client.request("echo", { t }).then(
            () => {
              requestsOk++;
              reqLat.add(performance.now() - t);
            },
            // A request in flight when its client is revoked fails by design; anything else is an error.
            () => void (h.revokedAt === undefined ? requestErrors++ : requestsToRevoked++),
          ),
        );
      }
      for (; credit.push >= 1; credit.push--) {
        const h = pool[Math.floor(Math.random() * pool.length)]!;
        pushesSent++;
        pending.push(app.push(h.identity, JSON.stringify({ t: Date.now() }), { count: 1000, ageMs: 600_000 }).then(() => undefined, () => undefined));
      }
      for (; credit.revoke >= 1; credit.revoke--) {
        const h = pool[Math.floor(Math.random() * pool.length)]!;
        h.revokedAt = Date.now();
        revocations++;
        pending.push(app.retireIdentity(h.identity, "revoked").then(() => undefined, () => undefined));
      }
      if (pending.length > 10_000) await Promise.all(pending.splice(0));
      await sleep(Math.max(0, TICK - (Date.now() - now)));
    }
    const elapsed = (Date.now() - start) / 1000;
    const cpu1 = pids.map(cpuSeconds);
    const redis1 = cpuSeconds(cluster.redis.proc.pid);
    const lb1 = cpuSeconds(cluster.haproxy.proc.pid);
    const self1 = process.cpuUsage(self0);
    const nodeRssMiB = pids.map(rssMiB);
    await Promise.race([Promise.all(pending), sleep(10_000)]);
    await sleep(500);
    measuring = false;
    const nodeCpu = cpu1.map((c, i) => c - cpu0[i]!);
    const ops = requestsOk + pushesDelivered;
    const figures: ClusterLoadFigures = {
      nodes,
      clients: o.clients,
      connectionsHeld: held.filter((h) => !h.closed).length,
      connectSeconds: round(connectSeconds, 1),
      seconds: round(elapsed, 1),
      requestsPerSecond: Math.round(requestsOk / elapsed),
      requestErrors,
      requestsToRevoked,
      loadAverage: round(loadavg()[0]!, 1),
      pushesPerSecond: Math.round(pushesDelivered / elapsed),
      pushesSent,
      pushesDelivered,
      revocations,
      revocationsNoticed: revokeLat.count,
      requestP50Ms: round(reqLat.pct(50), 2),
      requestP99Ms: round(reqLat.pct(99), 2),
      pushP50Ms: round(pushLat.pct(50), 1),
      pushP99Ms: round(pushLat.pct(99), 1),
      revokeP50Ms: round(revokeLat.pct(50), 1),
      revokeP99Ms: round(revokeLat.pct(99), 1),
      nodeCpuPct: nodeCpu.map((c) => round((100 * c) / elapsed, 1)),
      nodeRssMiB: nodeRssMiB.map((r) => round(r, 0)),
      redisCpuPct: round((100 * (redis1 - redis0)) / elapsed, 1),
      haproxyCpuPct: round((100 * (lb1 - lb0)) / elapsed, 1),
      loadGeneratorCpuPct: round((100 * (self1.user + self1.system)) / 1e6 / elapsed, 1),
      nodeCpuUsPerOp: round((nodeCpu.reduce((a, b) => a + b, 0) * 1e6) / Math.max(1, ops), 1),
    };
    return figures;
  } finally {
    measuring = false;
    say("stopping");
    await Promise.allSettled(held.map((h) => h.client.close()));
    await app.close();
    await cluster.stop();
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function table(rows: ClusterLoadFigures[]): string {
  const lines = [
    "| nodes | load avg | conns held | req/s | pushes/s | req p50/p99 ms | push p50/p99 ms | revoke→notice p50/p99 ms (n) | node CPU % each | node RSS MiB each | node CPU µs/op | redis CPU % | haproxy CPU % | load gen CPU % |",
    "|---:|---:|---:|---:|---:|---|---|---|---|---|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.nodes} | ${r.loadAverage} | ${r.connectionsHeld} | ${r.requestsPerSecond} | ${r.pushesPerSecond} | ${r.requestP50Ms} / ${r.requestP99Ms} | ${r.pushP50Ms} / ${r.pushP99Ms} | ${r.revokeP50Ms} / ${r.revokeP99Ms} (${r.revocationsNoticed}/${r.revocations}) | ${r.nodeCpuPct.join(", ")} | ${r.nodeRssMiB.join(", ")} | ${r.nodeCpuUsPerOp} | ${r.redisCpuPct} | ${r.haproxyCpuPct} | ${r.loadGeneratorCpuPct} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const o = options(process.argv.slice(2));
  const rows: ClusterLoadFigures[] = [];
  for (const n of o.nodes) {
    const r = await runOnce(n, o);
    console.error(JSON.stringify(r));
    rows.push(r);
  }
  console.log(`\nload:cluster — ${o.clients} clients, ${o.rate} req/s, ${o.pushRate} pushes/s, ${o.revokeRate} revocations/s, ${o.seconds} s per run, loopback\n`);
  console.log(table(rows));
  if (o.json) writeFileSync(o.json, `${JSON.stringify({ options: o, runs: rows }, null, 2)}\n`);
  const bad = rows.filter((r) => r.requestErrors > 0 || r.revocationsNoticed < r.revocations || r.connectionsHeld < r.clients - r.revocations);
  if (bad.length > 0) {
    console.error(`\nerror: ${bad.map((r) => `${r.nodes} node(s): ${r.requestErrors} request errors, ${r.revocationsNoticed}/${r.revocations} revocations noticed, ${r.connectionsHeld}/${r.clients} connections held`).join("; ")}`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
