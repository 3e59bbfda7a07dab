/**
 * A reconnect storm (docs/PERFORMANCE.md "Fleets"): three nodes behind
 * HAProxy (`startCluster`, nodes with `--trust-proxy`) hold N clients in all,
 * connected by several load-generator processes, each from loopback source
 * addresses of its own (127.0.x.y); then one node is killed with SIGKILL.
 * Loopback only, bounded in time.
 *
 *   npm run storm                       # 3,000 clients
 *   npm run storm -- --clients 9900 --workers 8 --addresses 100 --ramp 700     # the full figure (HAProxy here holds 9,986)
 *   npm run storm -- --clients 9900 --workers 8 --addresses 100 --ramp 7000 --no-kill   # ten times the offered rate
 *   npm run storm -- --single-node --clients 15000 --workers 8 --addresses 100 # one node, no balancer
 *   npm run storm -- --fleet            # each generator from ONE address, nodes with --fleet-range 127.0.0.0/8 (PROTOCOL.md §11.3)
 *
 * Connecting, each generator offers `ramp / workers` new clients a second;
 * a client refused with `too_many` tries again after the node's hint
 * (`retry_after_ms`, PROTOCOL.md §11.4) plus a jitter, up to 60 times.
 * Reports for the connect phase: the time to connect all, handshakes per
 * second, failed attempts by reason (`too_many` with the hint: the node was
 * busy; without: a per-address window), handshake timeouts (the client's own
 * handshake timeout, or the socket lost before the grant: a node's 4001),
 * and the nodes' refusals from /metrics. For the storm: time from the kill
 * to the last resume, the killed node's clients by outcome (resumed, new
 * handshake, closed for good, not back), refusals by reason (the clients'
 * error events, and the survivors' /metrics), each survivor's CPU during the
 * storm, surviving clients' request p50/p99 during the storm, and the load
 * average. `--no-kill` stops after connecting.
 *
 * `--single-node`: one node (Redis store, no balancer: HAProxy here holds
 * at most 9,986 connections), clients straight to its port; reports the
 * time to connect them all, the node's RSS per connection (its RSS bound
 * minus its RSS before, over the clients), and its CPU while they idle for
 * `--seconds` with the node pinging every `--ping-interval` seconds and the
 * clients' own liveness pings (every 30 s of silence).
 * `--json FILE` also writes the figures.
 *
 * Options (defaults): --clients 3000, --nodes 3, --workers 4 (generator
 * processes), --addresses 50 (source addresses per generator; 1 with
 * --fleet), --ramp 300 (new connections offered per second while
 * connecting, all generators), --rate 200 (requests/s from surviving clients
 * during the storm), --seconds 15 (the storm window after the kill; the
 * idle window with --single-node), --ping-interval 10 (--single-node: the
 * node's ping interval, s), --fleet, --no-kill, --single-node.
 */
import { type ChildProcess, fork } from "node:child_process";
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { cpuSeconds, rssMiB } from "./proc.js";
import { generateSigningKey } from "../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { type Client, type WebSocketCtor, connect, nodeWebSocket } from "../client/node.js";
import { type Cluster, startCluster } from "../cli/cluster/local-cluster.js";
import { integer, parseOptions } from "./options.js";

interface Options {
  clients: number;
  nodes: number;
  workers: number;
  addresses: number;
  ramp: number;
  rate: number;
  seconds: number;
  fleet: boolean;
  kill: boolean;
  singleNode: boolean;
  pingInterval: number;
  json?: string;
}

const USAGE =
  "usage: npm run storm -- [--clients 3000] [--nodes 3] [--workers 4] [--addresses 50] [--ramp 300] [--rate 200] [--seconds 15] [--fleet] [--no-kill] [--single-node [--ping-interval 10]] [--json FILE]";

function options(argv: string[]): Options {
  const o: Options = { clients: 3000, nodes: 3, workers: 4, addresses: 50, ramp: 300, rate: 200, seconds: 15, fleet: false, kill: true, singleNode: false, pingInterval: 10 };
  parseOptions(argv, USAGE, {
    "--clients": (v) => (o.clients = integer(v, 1, 20_000)),
    "--nodes": (v) => (o.nodes = integer(v, 2, 8)),
    "--workers": (v) => (o.workers = integer(v, 1, 16)),
    "--addresses": (v) => (o.addresses = integer(v, 1, 250)),
    "--ramp": (v) => (o.ramp = integer(v, 1, 10_000)),
    "--rate": (v) => (o.rate = integer(v, 0, 10_000)),
    "--seconds": (v) => (o.seconds = integer(v, 3, 300)),
    "--fleet": () => (o.fleet = true),
    "--no-kill": () => (o.kill = false),
    "--single-node": () => (o.singleNode = true),
    "--ping-interval": (v) => (o.pingInterval = integer(v, 1, 300)),
    "--json": (v) => (o.json = v),
  });
  return o;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function pct(v: number[], p: number): number {
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

// ------------------------------------------------------------------ messages

interface StartMsg { type: "start"; url: string; fingerprint: string; count: number; addresses: string[]; ramp: number }
interface StormMsg { type: "storm"; victim: string; killAt: number; rate: number; seconds: number }
interface StopMsg { type: "stop" }
interface ConnectedMsg {
  type: "connected";
  byNode: Record<string, number>;
  seconds: number;
  /** Failed connect attempts by reason (retried). */
  failures: Record<string, number>;
  /** Attempts that ended in a handshake timeout (the client's, or the socket lost before the grant). */
  timeouts: number;
  /** Clients that gave up (60 attempts). */
  gaveUp: number;
  /** This generator's own event-loop delay while connecting, ms (p99, max). */
  lag: [number, number];
}
interface ResultMsg {
  type: "result";
  victims: number;
  /** ms after the kill, one per resumed client of the victim. */
  resumedMs: number[];
  /** ms after the kill, one per victim client that needed a new handshake. */
  establishedMs: number[];
  /** ms after the kill at which each victim client learnt that its socket was lost. */
  lostMs: number[];
  closed: number;
  errors: Record<string, number>;
  latencies: number[];
  requestsFailed: number;
  /** This generator's own event-loop delay during the storm, ms (p99, max): a late generator makes every figure it times late. */
  lag: [number, number];
}

// ------------------------------------------------------------------ generator process

/** The Node client's WebSocket class, its sockets leaving from `localAddress`. */
function from(localAddress: string): WebSocketCtor {
  return nodeWebSocket({ localAddress });
}

async function worker(): Promise<void> {
  const send = (m: ConnectedMsg | ResultMsg) => process.send!(m);
  const start = await new Promise<StartMsg>((r) => process.once("message", (m) => r(m as StartMsg)));
  const keys = await Promise.all(Array.from({ length: start.count }, () => generateSigningKey()));
  const held: { c: Client; node: string }[] = [];
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  const lagOf = (): [number, number] => [Math.round(delay.percentile(99) / 1e6), Math.round(delay.max / 1e6)];
  const failures: Record<string, number> = {};
  let timeouts = 0;
  let gaveUp = 0;
  const t0 = Date.now();
  let next = 0;
  const ctors = start.addresses.map(from);
  // Enough connects in flight to offer the ramp (a handshake takes ~0.25 s under load), at least 32.
  const lanes = Math.min(start.count, Math.max(32, Math.ceil(start.ramp / 4)));
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      for (let i = next++; i < start.count; i = next++) {
        const due = t0 + (i * 1000) / start.ramp;
        if (due > Date.now()) await sleep(due - Date.now());
        for (let attempt = 0; ; attempt++) {
          try {
            const c = await connect(start.url, { key: keys[i]!, serverKey: start.fingerprint, WebSocket: ctors[i % ctors.length], reconnect: { baseMs: 100, maxMs: 2000 }, requestTimeoutMs: 30_000 });
            const w = (await c.request("whoami", null)) as { node: string };
            held.push({ c, node: w.node });
            break;
          } catch (e) {
            const code = e instanceof PsimbolsError ? e.code : "other";
            const hint = e instanceof PsimbolsError ? e.retryAfterMs : undefined;
            const reason = code === ErrorCode.tooMany ? (hint === undefined ? "too_many" : "too_many (busy)") : code;
            failures[reason] = (failures[reason] ?? 0) + 1;
            if (code === ErrorCode.timeout || code === ErrorCode.connectionLost) timeouts++;
            if (attempt >= 60) {
              gaveUp++;
              break;
            }
            await sleep((hint ?? 200) + Math.random() * 300);
          }
        }
      }
    }),
  );
  const byNode: Record<string, number> = {};
  for (const h of held) byNode[h.node] = (byNode[h.node] ?? 0) + 1;
  send({ type: "connected", byNode, seconds: (Date.now() - t0) / 1000, failures, timeouts, gaveUp, lag: lagOf() });
  delay.reset();

  const storm = await new Promise<StormMsg | StopMsg>((r) => process.once("message", (m) => r(m as StormMsg | StopMsg)));
  if (storm.type === "stop") {
    await Promise.allSettled(held.map((h) => h.c.close()));
    process.exit(0);
  }
  const victims = held.filter((h) => h.node === storm.victim);
  const survivors = held.filter((h) => h.node !== storm.victim);
  const resumedMs: number[] = [];
  const establishedMs: number[] = [];
  const lostMs: number[] = [];
  const errors: Record<string, number> = {};
  let closed = 0;
  for (const h of victims) {
    let back = false;
    h.c.on("resumed", () => !back && ((back = true), resumedMs.push(Date.now() - storm.killAt)));
    h.c.on("established", () => !back && ((back = true), establishedMs.push(Date.now() - storm.killAt)));
    let lost = false;
    h.c.on("error", (e) => {
      if (e.code === ErrorCode.connectionLost && !lost) ((lost = true), lostMs.push(Date.now() - storm.killAt));
      const k = e.code === ErrorCode.tooMany && e.retryAfterMs !== undefined ? "too_many (busy)" : e.code;
      errors[k] = (errors[k] ?? 0) + 1;
    });
    h.c.on("close", () => closed++);
  }
  // Requests from surviving clients, open loop, from just before the kill to the end of the window.
  const latencies: number[] = [];
  let requestsFailed = 0;
  const pending: Promise<void>[] = [];
  const end = storm.killAt + storm.seconds * 1000;
  let credit = 0;
  let last = Date.now();
  for (let now = last; now < end; now = Date.now()) {
    credit += (storm.rate * (now - last)) / 1000;
    last = now;
    for (; credit >= 1 && survivors.length > 0; credit--) {
      const h = survivors[Math.floor(Math.random() * survivors.length)]!;
      const t = performance.now();
      const during = Date.now() >= storm.killAt;
      pending.push(
        h.c.request("echo", { t }).then(
          () => void (during && latencies.push(performance.now() - t)),
          () => void requestsFailed++,
        ),
      );
    }
    await sleep(10);
  }
  await Promise.allSettled(pending);
  send({ type: "result", victims: victims.length, resumedMs, establishedMs, lostMs, closed, errors, latencies, requestsFailed, lag: lagOf() });
  await Promise.allSettled(held.map((h) => h.c.close()));
  process.exit(0);
}

// ------------------------------------------------------------------ main

/** A node's refusals from /metrics: hellos and resumes refused by a per-address window or cap (`rateLimited`), and by capacity (`busyHello`, `busyResume`, PROTOCOL.md §11.4). */
async function refusals(port: number): Promise<{ rateLimited: number; busyHello: number; busyResume: number }> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const read = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    return {
      rateLimited: read(/^psimbols_handshakes_total\{outcome="rateLimited"\} (\d+)/m),
      busyHello: read(/^psimbols_admission_refused_total\{work="hello"\} (\d+)/m),
      busyResume: read(/^psimbols_admission_refused_total\{work="resume"\} (\d+)/m),
    };
  } catch {
    return { rateLimited: NaN, busyHello: NaN, busyResume: NaN };
  }
}

function minus(a: Awaited<ReturnType<typeof refusals>>, b: Awaited<ReturnType<typeof refusals>>): Awaited<ReturnType<typeof refusals>> {
  return { rateLimited: a.rateLimited - b.rateLimited, busyHello: a.busyHello - b.busyHello, busyResume: a.busyResume - b.busyResume };
}

async function main(): Promise<void> {
  const o = options(process.argv.slice(2));
  const say = (m: string) => console.error(`[storm] ${m}`);
  const nodeArgs = [...(o.fleet ? ["--fleet-range", "127.0.0.0/8"] : []), ...(o.singleNode ? ["--ping-interval", String(o.pingInterval * 1000)] : [])];
  const nodes = o.singleNode ? 1 : o.nodes;
  say(o.singleNode ? `starting one node (clients straight to its port)` : `starting ${nodes} nodes behind HAProxy${o.fleet ? " with --fleet-range 127.0.0.0/8" : ""}`);
  const cluster: Cluster = await startCluster({ nodes, nodeArgs, logLevel: "error" });
  const url = o.singleNode ? cluster.nodes[0]!.url : cluster.url;
  const procs: ChildProcess[] = [];
  try {
    const per = Math.ceil(o.clients / o.workers);
    const connected: ConnectedMsg[] = [];
    const results: ResultMsg[] = [];
    const nodePids = cluster.nodes.map((n) => n.proc.pid);
    const rss0 = nodePids.map(rssMiB);
    const cpuConnect0 = nodePids.map(cpuSeconds);
    // Where the host's cores went: the generators' CPU (all together) and HAProxy's, % of one core over a window.
    const others = (): number[] => [procs.reduce((a, p) => a + cpuSeconds(p.pid), 0), cpuSeconds(cluster.haproxy.proc.pid)];
    const othersPct = (before: number[], seconds: number): { generators: number; haproxy: number } => {
      const now = others();
      return { generators: Math.round(((now[0]! - before[0]!) / seconds) * 100), haproxy: Math.round(((now[1]! - before[1]!) / seconds) * 100) };
    };
    const refused0 = await Promise.all(cluster.nodes.map((n) => refusals(n.port)));
    for (let w = 0; w < o.workers; w++) {
      const count = Math.min(per, o.clients - w * per);
      if (count <= 0) break;
      // Generator w leaves from 127.0.(20+w).1..addresses: loopback, all of 127/8 on Linux.
      const addresses = Array.from({ length: o.fleet ? 1 : o.addresses }, (_, i) => `127.0.${20 + w}.${i + 1}`);
      const p = fork(fileURLToPath(import.meta.url), ["--worker"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      procs.push(p);
      p.on("message", (m: ConnectedMsg | ResultMsg) => (m.type === "connected" ? connected : results).push(m as never));
      p.send({ type: "start", url, fingerprint: cluster.fingerprint, count, addresses, ramp: o.ramp / o.workers } satisfies StartMsg);
    }
    const waitFor = async (list: unknown[], n: number, ms: number, what: string) => {
      const until = Date.now() + ms;
      while (list.length < n) {
        if (Date.now() > until) throw new Error(`${what}: ${list.length} of ${n} generators reported in ${ms / 1000} s`);
        if (procs.some((p) => p.exitCode !== null && p.exitCode !== 0)) throw new Error(`${what}: a generator failed`);
        await sleep(100);
      }
    };
    const othersConnect0 = others();
    await waitFor(connected, procs.length, Math.max(180_000, (o.clients / o.ramp) * 10_000), "connecting");
    const byNode: Record<string, number> = {};
    for (const c of connected) for (const [n, k] of Object.entries(c.byNode)) byNode[n] = (byNode[n] ?? 0) + k;
    const connectSeconds = Math.max(...connected.map((c) => c.seconds));
    const connectCpu = nodePids.map((pid, i) => Math.round(((cpuSeconds(pid) - cpuConnect0[i]!) / connectSeconds) * 100));
    const connectFailures: Record<string, number> = {};
    for (const c of connected) for (const [k, v] of Object.entries(c.failures)) connectFailures[k] = (connectFailures[k] ?? 0) + v;
    const heldClients = Object.values(byNode).reduce((a, b) => a + b, 0);
    const connectRefused = (await Promise.all(cluster.nodes.map((n) => refusals(n.port)))).map((r, i) => minus(r, refused0[i]!));
    const connect = {
      nodes,
      clients: o.clients,
      connected: heldClients,
      offeredPerSecond: o.ramp,
      sourceAddresses: procs.length * (o.fleet ? 1 : o.addresses),
      connectSeconds,
      handshakesPerSecond: Math.round(heldClients / connectSeconds),
      // failed attempts by reason (each retried): "too_many (busy)" carries the node's retry hint
      connectFailures,
      handshakeTimeouts: connected.reduce((a, c) => a + c.timeouts, 0),
      gaveUp: connected.reduce((a, c) => a + c.gaveUp, 0),
      nodesRefused: connectRefused,
      nodeCpuPctWhileConnecting: connectCpu,
      othersCpuPctWhileConnecting: othersPct(othersConnect0, connectSeconds),
      // the generators' own event-loop delay while connecting (worst p99, worst max), ms
      generatorLagMs: [Math.max(...connected.map((c) => c.lag[0])), Math.max(...connected.map((c) => c.lag[1]))],
      byNode,
    };
    say(`${heldClients} of ${o.clients} clients connected in ${connectSeconds.toFixed(1)} s: ${JSON.stringify(byNode)}`);

    if (o.singleNode || !o.kill) {
      let idle = {};
      if (o.singleNode) {
        await sleep(2000);
        const pid = nodePids[0];
        const rss = rssMiB(pid);
        const cpu0 = cpuSeconds(pid);
        const t0 = Date.now();
        await sleep(o.seconds * 1000);
        const cpu = ((cpuSeconds(pid) - cpu0) / ((Date.now() - t0) / 1000)) * 100;
        idle = {
          nodeRssBeforeMiB: Math.round(rss0[0]!),
          nodeRssBoundMiB: Math.round(rss),
          rssPerConnectionKiB: Math.round(((rss - rss0[0]!) * 1024 * 10) / heldClients) / 10,
          idleSeconds: o.seconds,
          nodePingIntervalSeconds: o.pingInterval,
          nodeIdleCpuPct: Math.round(cpu * 10) / 10,
        };
      }
      const figures = { ...connect, ...idle, loadAverage: loadavg().map((x) => Math.round(x * 10) / 10) };
      console.log(JSON.stringify(figures, null, 2));
      if (o.json) writeFileSync(o.json, JSON.stringify(figures, null, 2) + "\n");
      for (const p of procs) p.send({ type: "stop" } satisfies StopMsg);
      await Promise.all(procs.map((p) => (p.exitCode !== null ? undefined : new Promise((r) => p.once("exit", r)))));
      return;
    }
    await sleep(2000);

    // The node holding the most clients dies.
    const victim = cluster.nodes.reduce((a, b) => ((byNode[a.name] ?? 0) >= (byNode[b.name] ?? 0) ? a : b));
    const survivors = cluster.nodes.filter((n) => n !== victim);
    const killAt = Date.now() + 1000;
    for (const p of procs) p.send({ type: "storm", victim: victim.name, killAt, rate: o.rate / procs.length, seconds: o.seconds } satisfies StormMsg);
    await sleep(killAt - Date.now());
    const cpu0 = survivors.map((n) => cpuSeconds(n.proc.pid));
    const othersStorm0 = others();
    const limited0 = await Promise.all(survivors.map((n) => refusals(n.port)));
    const t0 = Date.now();
    await victim.kill("SIGKILL");
    say(`SIGKILL ${victim.name} (${byNode[victim.name]} clients)`);
    await sleep(o.seconds * 1000 - (Date.now() - t0));
    const elapsed = (Date.now() - t0) / 1000;
    const cpu = survivors.map((n, i) => Math.round(((cpuSeconds(n.proc.pid) - cpu0[i]!) / elapsed) * 100));
    const othersStorm = othersPct(othersStorm0, elapsed);
    const limited = (await Promise.all(survivors.map((n) => refusals(n.port)))).map((v, i) => minus(v, limited0[i]!));
    const load = loadavg();
    await waitFor(results, procs.length, 60_000, "results");

    const resumed = results.flatMap((r) => r.resumedMs);
    const established = results.flatMap((r) => r.establishedMs);
    const victims = results.reduce((a, r) => a + r.victims, 0);
    const closed = results.reduce((a, r) => a + r.closed, 0);
    const errors: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    const latencies = results.flatMap((r) => r.latencies);
    const figures = {
      ...connect,
      fleet: o.fleet,
      victimClients: victims,
      resumed: resumed.length,
      newHandshakes: established.length,
      closedForGood: closed,
      notBack: victims - resumed.length - established.length,
      lastResumeMs: resumed.length ? Math.max(...resumed) : NaN,
      resumeP50Ms: pct(resumed, 50),
      resumeP99Ms: pct(resumed, 99),
      lastBackMs: Math.max(...resumed, ...established),
      // when the victims learnt that their socket was lost (p50, last), ms after the kill
      lostP50Ms: pct(results.flatMap((r) => r.lostMs), 50),
      lostLastMs: Math.max(...results.flatMap((r) => r.lostMs)),
      // the clients' error events by code: one connection_lost each is the kill itself; too_many (busy), unavailable… are refusals
      clientErrorsByCode: errors,
      survivorsRefused: limited,
      survivorCpuPct: cpu,
      othersCpuPctDuringStorm: othersStorm,
      requestsDuringStorm: latencies.length,
      requestsFailed: results.reduce((a, r) => a + r.requestsFailed, 0),
      requestP50Ms: Math.round(pct(latencies, 50) * 10) / 10,
      requestP99Ms: Math.round(pct(latencies, 99) * 10) / 10,
      // the generators' own event-loop delay during the storm (worst p99, worst max), ms: what every timing above includes
      generatorStormLagMs: [Math.max(...results.map((r) => r.lag[0])), Math.max(...results.map((r) => r.lag[1]))],
      loadAverage: load.map((x) => Math.round(x * 10) / 10),
    };
    console.log(JSON.stringify(figures, null, 2));
    if (o.json) writeFileSync(o.json, JSON.stringify(figures, null, 2) + "\n");
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
    await cluster.stop();
  }
}

if (process.argv.includes("--worker")) {
  worker().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
