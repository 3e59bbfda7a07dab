/**
 * Soak with faults on the cluster (docs/PERFORMANCE.md, Soak with faults): `npm run soak --
 * --cluster`. The local cluster with Sentinel (Redis master, replica, three
 * sentinels; N nodes; HAProxy), M clients through the balancer sending
 * echo requests at a steady rate, an application pushing to them through
 * Redis, and a fault every `--fault-every` seconds, in turn:
 *   - node kill: SIGKILL of a random node, restarted on its port 3 s later;
 *   - Redis master kill: SIGKILL of the current master; Sentinel promotes
 *     the replica; the old master is restarted on its port through
 *     deploy/redis-start.sh (as compose restarts it), which asks the
 *     sentinels and starts it as the new master's replica;
 *   - link cuts: a third of the clients' sockets terminated without a close
 *     frame, as a network fault (client side only: cutting links between
 *     nodes and Redis needs network namespaces, test/partition/).
 * Ends with a table: requests issued, answered, failed by kind and lost
 * (neither answered nor failed: must be 0), pushes acknowledged and lost
 * (must be 0), clients closed for good (must be 0), new handshakes (a
 * channel the store lost) and what the clients logged besides the expected
 * reconnect-and-resume, and the RSS of every process at start, middle and
 * end (a restarted process counts from its restart).
 *
 * Options (defaults): --minutes 10, --nodes 3, --connections 60, --rate 4
 * (requests/s per client), --push-rate 20 (pushes/s), --fault-every 30 (s).
 */
import { rssMiB } from "./proc.js";
import { type ChildProcess, spawn } from "node:child_process";
import { Redis } from "ioredis";
import { generateSigningKey } from "../shared/crypto.js";
import { PsimbolsError } from "../shared/errors.js";
import { type Client, connect } from "../client/node.js";
import { type Cluster, startCluster } from "../cli/cluster/local-cluster.js";
import { REDIS_START, SENTINEL_MASTER_NAME } from "../cli/cluster/sentinel.js";
import { RedisStore } from "../server/store/redis-store.js";
import { parseWrapKey } from "../server/store/wrap.js";

interface Options {
  minutes: number;
  nodes: number;
  connections: number;
  rate: number;
  pushRate: number;
  faultEvery: number;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { minutes: 10, nodes: 3, connections: 60, rate: 4, pushRate: 20, faultEvery: 30 };
  const names: Record<string, keyof Options> = { "--minutes": "minutes", "--nodes": "nodes", "--connections": "connections", "--rate": "rate", "--push-rate": "pushRate", "--fault-every": "faultEvery" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--cluster") continue;
    const k = names[a];
    const v = Number(argv[i + 1]);
    if (!k || !Number.isFinite(v) || v <= 0) throw new Error(`usage: npm run soak -- --cluster [--minutes N] [--nodes N] [--connections M] [--rate R] [--push-rate P] [--fault-every S]`);
    o[k] = v;
    i++;
  }
  return o;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const alive = (p: ChildProcess) => p.exitCode === null && p.signalCode === null;

/** A process of the cluster that a fault may kill and this soak restarts with the same command line. */
interface Slot {
  name: string;
  proc: ChildProcess;
  port: number;
  rss: { start: number; middle: number; end: number; restarts: number };
}

function respawn(slot: Slot, env: NodeJS.ProcessEnv): void {
  const [command, ...args] = slot.proc.spawnargs;
  // A node was started on port 0: it comes back on the port it had (HAProxy's server line names it).
  const i = args.indexOf("--port");
  if (i >= 0) args[i + 1] = String(slot.port);
  slot.proc = spawn(command!, args, { env, stdio: "ignore", detached: true });
  slot.rss.restarts++;
}

/**
 * A Redis server comes back through deploy/redis-start.sh, as compose's
 * restart policy brings it back: it asks the sentinels and starts as the
 * replica of the master they name (its first command line's --replicaof,
 * if any, is dropped: the script decides).
 */
function respawnRedis(slot: Slot, sentinels: string): void {
  // [redis-server, ...options], or [sh, redis-start.sh, host, port, ...options] once restarted through it
  const argv = slot.proc.spawnargs;
  const args = argv[0] === "sh" ? argv.slice(4) : argv.slice(1);
  const r = args.indexOf("--replicaof");
  if (r >= 0) args.splice(r, 3);
  const env = { ...process.env, PSIMBOLS_SENTINELS: sentinels, PSIMBOLS_MASTER_NAME: SENTINEL_MASTER_NAME };
  slot.proc = spawn("sh", [REDIS_START, "127.0.0.1", String(slot.port), ...args], { env, stdio: "ignore", detached: true });
  slot.rss.restarts++;
}

const counts = { issued: 0, ok: 0, mismatched: 0, errors: new Map<string, number>(), closedForGood: 0, handshakes: 0, resumes: 0, faults: new Map<string, number>() };
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
const fmt = (m: Map<string, number>) => (m.size === 0 ? "none" : [...m].map(([k, v]) => `${k} ${v}`).join(", "));

export async function soakCluster(argv: string[]): Promise<number> {
  const o = parseOptions(argv);
  const cluster: Cluster = await startCluster({
    nodes: o.nodes,
    sentinel: true,
    nodeArgs: ["--hellos-per-address", "100000", "--max-connections-per-address", "100000"],
    logLevel: "error",
  });
  const sentinel = cluster.sentinel!;
  const nodeEnv = { ...process.env, PSIMBOLS_WRAP_KEY: cluster.wrapKey, PSIMBOLS_LOG_LEVEL: "error" };
  const slot = (name: string, proc: ChildProcess, port: number): Slot => ({ name, proc, port, rss: { start: rssMiB(proc.pid), middle: NaN, end: NaN, restarts: 0 } });
  const nodes = cluster.nodes.map((n) => slot(n.name, n.proc, n.port));
  const redis = [slot("redis-a", sentinel.master.proc, sentinel.master.port), slot("redis-b", sentinel.replica.proc, sentinel.replica.port)];
  const others = [slot("haproxy", cluster.haproxy.proc, cluster.haproxy.port), ...sentinel.sentinels.map((s) => slot(s.name, s.proc, s.port))];
  const all = [...nodes, ...redis, ...others];
  const app = new RedisStore({ url: sentinel.url, wrapKey: parseWrapKey(cluster.wrapKey) });
  console.log(`soak --cluster: ${o.minutes} min, ${o.nodes} nodes + Sentinel, ${o.connections} clients × ${o.rate} req/s, ${o.pushRate} pushes/s, a fault every ${o.faultEvery} s`);

  // ---- clients
  interface C {
    client: Client;
    identity: string;
    pushes: Set<number>;
    sockets: Set<{ terminate(): void; readyState: number }>;
  }
  const { WebSocket } = await import("ws");
  const clients: C[] = [];
  let running = false;
  const seen: [number, string][] = [];
  let t0 = Date.now();
  for (let i = 0; i < o.connections; i++) {
    const sockets = new Set<InstanceType<typeof WebSocket>>();
    class Tracked extends WebSocket {
      constructor(url: string) {
        super(url);
        sockets.add(this);
        this.once("close", () => sockets.delete(this));
      }
    }
    const key = await generateSigningKey();
    // What each client went through, by message and time (s into the run): resumes refused, notices...
    const note = (level: string) => (message: string) => {
      if (running) seen.push([Date.now() - t0, `${level}${message}`]);
    };
    const logger = { debug() {}, info: note(""), warn: note("warn: "), error: note("error: ") };
    const client = await connect(cluster.url, { key, serverKey: cluster.fingerprint, WebSocket: Tracked, logger, requestTimeoutMs: 15_000, reconnect: { baseMs: 100, maxMs: 2000 } });
    const c: C = { client, identity: key.public.fingerprint, pushes: new Set(), sockets };
    client.on("push", (m) => c.pushes.add((m as { n: number }).n));
    client.on("notice", (n) => running && seen.push([Date.now() - t0, `notice ${n.kind}${n.current ? "" : " (old channel)"}`]));
    client.on("established", () => counts.handshakes++);
    client.on("resumed", () => counts.resumes++);
    client.on("close", () => {
      if (running) counts.closedForGood++;
    });
    clients.push(c);
  }

  running = true;
  t0 = Date.now();
  const loops = clients.map(async (c, w) => {
    const period = 1000 / o.rate;
    await sleep(Math.random() * period);
    for (let n = 0; running; n++) {
      const started = Date.now();
      counts.issued++;
      try {
        const got = (await c.client.request("echo", { w, n })) as { w: number; n: number };
        if (got?.w === w && got.n === n) counts.ok++;
        else counts.mismatched++;
      } catch (e) {
        bump(counts.errors, e instanceof PsimbolsError ? e.code : String(e));
      }
      const left = period - (Date.now() - started);
      if (left > 0) await sleep(left);
    }
  });
  const acked = new Map<number, C>();
  const ackedAt = new Map<number, number>();
  let pushRefused = 0;
  const pusher = (async () => {
    for (let n = 1; running; n++) {
      const c = clients[n % clients.length]!;
      try {
        await app.push(c.identity, JSON.stringify({ n }), { count: 1000, ageMs: 3_600_000 });
        acked.set(n, c);
        ackedAt.set(n, Date.now());
      } catch {
        pushRefused++;
      }
      await sleep(1000 / o.pushRate);
    }
  })();

  // ---- faults, in turn
  const log: string[] = [];
  const faults = (async () => {
    for (let k = 0; running; k++) {
      await sleep(o.faultEvery * 1000);
      if (!running) break;
      const t = Date.now();
      const kind = (["node kill", "redis master kill", "link cuts"] as const)[k % 3]!;
      bump(counts.faults, kind);
      if (kind === "node kill") {
        const s = nodes[Math.floor(Math.random() * nodes.length)]!;
        s.proc.kill("SIGKILL");
        await sleep(3000);
        respawn(s, nodeEnv);
        log.push(`${((t - t0) / 1000).toFixed(0)} s: ${s.name} killed, restarted`);
      } else if (kind === "redis master kill") {
        const port = await sentinel.masterPort();
        const s = redis.find((r) => r.port === port);
        if (!s) {
          log.push(`${((t - t0) / 1000).toFixed(0)} s: no master known; skipped`);
          continue;
        }
        s.proc.kill("SIGKILL");
        const deadline = Date.now() + 30_000;
        while ((await sentinel.masterPort()) === port && Date.now() < deadline) await sleep(100);
        const switched = Date.now() - t;
        respawnRedis(s, sentinel.sentinels.map((x) => `127.0.0.1:${x.port}`).join(" "));
        // Back as the new master's replica, in sync, before the next Redis fault.
        const probe = new Redis({ host: "127.0.0.1", port: s.port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
        probe.on("error", () => {}); // refused until it is back: expected
        while (Date.now() < deadline + 30_000) {
          const info = await probe.info("replication").catch(() => "");
          if (/role:slave/.test(info) && /master_link_status:up/.test(info)) break;
          await sleep(200);
        }
        probe.disconnect();
        log.push(`${((t - t0) / 1000).toFixed(0)} s: ${s.name} (master) killed; new master after ${switched} ms; old one back as replica after ${Date.now() - t} ms`);
      } else {
        let cut = 0;
        for (const c of clients.filter((_, i) => i % 3 === k % 3)) {
          for (const ws of c.sockets) {
            if (ws.readyState === 1) {
              ws.terminate();
              cut++;
            }
          }
        }
        log.push(`${((t - t0) / 1000).toFixed(0)} s: ${cut} client sockets cut`);
      }
      console.log(`  fault: ${log[log.length - 1]}; so far ok ${counts.ok}, errors ${fmt(counts.errors)}`);
    }
  })();

  const duration = o.minutes * 60_000;
  await sleep(duration / 2);
  for (const s of all) s.rss.middle = rssMiB(s.proc.pid);
  await sleep(duration / 2);
  for (const s of all) s.rss.end = rssMiB(s.proc.pid);
  running = false;
  await Promise.race([Promise.all([...loops, pusher, faults]), sleep(60_000)]);
  const settled = counts.ok + counts.mismatched + [...counts.errors.values()].reduce((a, b) => a + b, 0);
  const lostRequests = counts.issued - settled;
  for (const until = Date.now() + 15_000; [...acked].some(([n, c]) => !c.pushes.has(n)) && Date.now() < until; ) await sleep(200);
  const lost = [...acked].filter(([n, c]) => !c.pushes.has(n));
  const lostPushes = lost.length;
  if (lostPushes > 0) {
    // Where they fell: acknowledgement time (s into the run) → count, and how many clients.
    const byTime = new Map<number, number>();
    for (const [n] of lost) bump(byTime as unknown as Map<string, number>, String(Math.floor((ackedAt.get(n)! - t0) / 5000) * 5) as never);
    console.log(`  lost pushes by acknowledgement time (s): ${fmt(byTime as unknown as Map<string, number>)}; clients: ${new Set(lost.map(([, c]) => c.identity)).size}`);
    for (const [n, c] of lost.slice(0, 5)) console.log(`    lost ${n}: client got up to ${Math.max(0, ...[...c.pushes].filter((x) => x < n))} below it and ${[...c.pushes].filter((x) => x > n).length} above it`);
  }

  console.log("");
  console.log(`soak --cluster finished after ${((Date.now() - t0) / 60_000).toFixed(1)} min`);
  console.log(`  faults             ${fmt(counts.faults)}`);
  for (const l of log) console.log(`    ${l}`);
  console.log(`  requests           issued ${counts.issued}, answered ${counts.ok}, mismatched ${counts.mismatched}, failed ${fmt(counts.errors)}, lost ${lostRequests}`);
  console.log(`  pushes             acknowledged ${acked.size}, lost ${lostPushes}; refused during faults ${pushRefused}`);
  console.log(`  clients            ${clients.length}; closed for good ${counts.closedForGood}; handshakes ${counts.handshakes}, resumes ${counts.resumes}`);
  // The clients' own account, by message: when (s into the run, 5 s buckets) and how often.
  const byMessage = new Map<string, Map<string, number>>();
  for (const [t, m] of seen) {
    if (m === "socket closed" || m === "reconnecting" || m === "channel resumed") continue; // the expected path of every fault
    if (!byMessage.has(m)) byMessage.set(m, new Map());
    bump(byMessage.get(m)!, String(Math.floor(t / 5000) * 5));
  }
  console.log(`  client log, besides socket closed / reconnecting / resumed (message: s into the run → count)`);
  for (const [m, at] of byMessage) console.log(`    ${m.slice(0, 90)}: ${fmt(at)}`);
  console.log(`  RSS MiB (start / middle / end; restarts)`);
  for (const s of all) console.log(`    ${s.name.padEnd(10)} ${s.rss.start.toFixed(1)} / ${s.rss.middle.toFixed(1)} / ${s.rss.end.toFixed(1)}; ${s.rss.restarts}`);

  await Promise.allSettled(clients.map((c) => c.client.close()));
  await app.close();
  for (const s of all) if (alive(s.proc) && s.rss.restarts > 0) s.proc.kill("SIGKILL");
  await cluster.stop();
  const failed = lostRequests > 0 || counts.mismatched > 0 || lostPushes > 0 || counts.closedForGood > 0;
  console.log(failed ? "SOAK FAILED" : "soak passed");
  return failed ? 1 : 0;
}
