/**
 * `npm run bench`: psimbols against plain WebSocket, wss and mutual TLS on
 * this machine, in one unattended run (docs/PERFORMANCE.md). Starts every server and a
 * separate load-generator process itself, pins them to different cores with
 * `taskset` where it exists (server on core 0, load generator and Redis on
 * core 1), runs each case for a bounded time on 127.0.0.1, prints one table
 * and writes bench/results.json.
 *
 * Server CPU per request is `process.cpuUsage()` of the server process (all
 * its threads, user + system) over the measured window, divided by the
 * requests the load generator completed in that window. Each message case
 * has two windows: one at the same fixed offered load for every
 * case (`--rate`, below every case's ceiling: the CPU column compares the
 * servers' work, not how far each was pushed), then one in closed loop (the
 * maximum rate; `limit` says whether the server or the load generator ran
 * out of core first). The psimbols load generator runs the cheapest engine
 * for its type (libsodium for ChaCha20-Poly1305).
 *
 * No case can hang the run: every wait on a child is bounded, the load
 * generator bounds every handshake step, and a child that does not answer in
 * time is asked for a Node diagnostic report (SIGUSR2) whose JavaScript stack
 * goes into the error (`handshake_psimbols` once gave `no "report"
 * from child within 120000 ms`).
 *
 * Options:
 *   --quick            short windows (smoke test; results are not written unless --out is given)
 *   --only a,b         run only these cases (names as in results.json, plus `*_4k`);
 *                      `--only psimbols_memory,psimbols_forwarded,psimbols_forwarded_batch` gives
 *                      forward_added_cpu_us, forward_added_p99_ms and the same for batches
 *                      (forward_batch_*; at the fixed offered load; docs/BACKEND.md "Cost")
 *   --profile          also profile the server over each psimbols window (V8 CPU profiler, the
 *                      same .cpuprofile as node --cpu-prof, but only the measured window); writes
 *                      $TMPDIR/psimbols-bench-profiles/*.cpuprofile and prints the top frames
 *   --no-variants      skip the rows that run psimbols with JSON channel frames (*_json): the
 *                      protocol's default encoding, which the project's clients replace by binary
 *                      frames (PROTOCOL.md §4.11) whenever the server agrees
 *   --window MS        length of each measured window (default 5000; --quick 2000)
 *   --rate N           the fixed offered load of the CPU-per-request windows, requests/s (default 8000)
 *   --out FILE         where to write the JSON (default bench/results.json)
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { cpus, loadavg, platform, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { makePki, type Pki } from "./certs.js";
import type { LoadConfig, LoadReport } from "./load.js";
import type { ServerConfig } from "./server.js";
import { formatSummary, summarise } from "./profile.js";
import { freePort } from "../cli/cluster/net.js";
import { generateSigningKey } from "../shared/crypto.js";
import { b64u, fromB64u } from "../shared/encoding.js";
import { Feature, KemType, kemTypes } from "../shared/frames.js";
import { type ClientHello, acceptHello, answerChallenge, createHello, sealGrant, verifyProof } from "../shared/handshake.js";
import { chachaEngine, useNodeCrypto } from "../node/engines.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DIST = fileURLToPath(new URL("./", import.meta.url));
const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(name);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = flag("--quick");
const PROFILE = flag("--profile");
const ONLY = option("--only")?.split(",");
const VARIANTS = !flag("--no-variants");
const OUT = option("--out") ?? (QUICK ? undefined : `${ROOT}bench/results.json`);

const WARMUP_MS = QUICK ? 1000 : 3000;
const MEASURE_MS = Number(option("--window") ?? (QUICK ? 2000 : 5000));
/** The fixed offered load of the CPU-per-request windows (requests/s in all). */
const RATE = Number(option("--rate") ?? 8000);
/** Longest wait for a child's answer to a quick question (usage, mark, report). */
const ANSWER_MS = 30_000;
/** Node diagnostic reports of children that did not answer in time land here. */
const REPORT_DIR = join(tmpdir(), `psimbols-bench-reports-${process.pid}`);
const CONNS = 100;
const INFLIGHT = 8;
const IDLE_CONNS = QUICK ? 1000 : 10_000;
/** The idle case opens its connections in steps of this many, after two steps of warm-up. */
const IDLE_STEPS = 5;
const IDLE_WARMUP_STEPS = 2;
/** Source addresses for the sockets (all of 127.0.0.0/8 is local on Linux). */
const ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"];

const HAVE_TASKSET = (() => {
  try {
    execFileSync("taskset", ["-p", String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
const CORES = cpus().length;
const SERVER_CORE = "0";
const LOAD_CORE = CORES > 1 ? "1" : "0";

// ------------------------------------------------------------------ child processes

interface Msg {
  [k: string]: unknown;
}

/** A child process spoken to over IPC: `ask` sends a message and waits for a reply carrying `key`. */
class Child {
  readonly proc: ChildProcess;
  readonly #inbox: Msg[] = [];
  readonly #waiters: { key: string; resolve: (m: Msg) => void; reject: (e: Error) => void }[] = [];
  #exited: string | undefined;
  #stderr = "";

  readonly #name: string;
  readonly #reportDir: string;

  constructor(name: string, script: string, core: string, env: Record<string, string>, nodeArgs: string[] = []) {
    this.#name = name;
    this.#reportDir = join(REPORT_DIR, name.replace(/[^a-z0-9_-]/gi, "_") + `-${Date.now()}`);
    // SIGUSR2 makes Node write a diagnostic report (with the JavaScript stack) even while its loop is busy.
    const diag = ["--report-on-signal", "--report-signal=SIGUSR2", `--report-directory=${this.#reportDir}`];
    const cmd = [...(HAVE_TASKSET ? ["taskset", "-c", core] : []), process.execPath, ...diag, ...nodeArgs, `${DIST}${script}`];
    // The shell raises the open-files limit to the hard limit (the idle case holds 10,000 sockets per side).
    this.proc = spawn("/bin/sh", ["-c", 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', "sh", ...cmd], {
      stdio: ["ignore", "inherit", "pipe", "ipc"],
      env: { ...process.env, ...env },
      cwd: ROOT,
    });
    this.proc.stderr!.setEncoding("utf8").on("data", (d: string) => {
      this.#stderr = (this.#stderr + d).slice(-4000);
      if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${d}`);
    });
    this.proc.on("message", (m: Msg) => {
      if (typeof m.error === "string") process.stderr.write(`[${name}] ${m.error}\n`);
      if (typeof m.failed === "string") {
        for (const w of this.#waiters.splice(0)) w.reject(new Error(`${name}: ${m.failed}`));
        return;
      }
      const i = this.#waiters.findIndex((w) => w.key in m);
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m);
      else this.#inbox.push(m);
    });
    this.proc.on("exit", (code, signal) => {
      this.#exited = `${name} exited (${signal ?? code})\n${this.#stderr}`;
      for (const w of this.#waiters.splice(0)) w.reject(new Error(this.#exited));
    });
  }

  wait(key: string, timeoutMs = 120_000): Promise<Msg> {
    const i = this.#inbox.findIndex((m) => key in m);
    if (i >= 0) return Promise.resolve(this.#inbox.splice(i, 1)[0]!);
    if (this.#exited) return Promise.reject(new Error(this.#exited));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = this.#waiters.findIndex((w) => w.key === key);
        if (i >= 0) this.#waiters.splice(i, 1);
        void this.#diagnose().then((why) => reject(new Error(`no "${key}" from ${this.#name} within ${timeoutMs} ms: ${why}\n${this.#stderr}`)));
      }, timeoutMs);
      this.#waiters.push({
        key,
        resolve: (m) => (clearTimeout(t), resolve(m)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
    });
  }

  /** Why a child did not answer: gone, or (alive) the JavaScript stack of a Node report written on SIGUSR2. */
  async #diagnose(): Promise<string> {
    if (this.#exited) return this.#exited;
    const pid = this.proc.pid;
    if (pid === undefined) return "the child has no pid";
    try {
      process.kill(pid, "SIGUSR2");
    } catch (e) {
      return `the child (pid ${pid}) cannot be signalled: ${e instanceof Error ? e.message : String(e)}`;
    }
    for (let i = 0; i < 50; i++) {
      await sleep(100);
      let files: string[] = [];
      try {
        files = readdirSync(this.#reportDir).filter((f) => f.endsWith(".json"));
      } catch {
        // not written yet
      }
      if (files.length > 0) {
        try {
          const r = JSON.parse(readFileSync(join(this.#reportDir, files[0]!), "utf8")) as { javascriptStack?: { message?: string; stack?: string[] }; libuv?: { type: string; is_active: boolean }[] };
          const stack = (r.javascriptStack?.stack ?? []).slice(0, 8).join(" | ");
          const handles = (r.libuv ?? []).filter((h) => h.is_active).length;
          return `alive (pid ${pid}), ${handles} active handles; JavaScript stack: ${r.javascriptStack?.message ?? ""} ${stack || "(idle: the event loop was waiting)"}`;
        } catch (e) {
          return `alive (pid ${pid}); its report could not be read: ${e instanceof Error ? e.message : String(e)}`;
        }
      }
    }
    return `alive (pid ${pid}) but it wrote no diagnostic report within 5 s on SIGUSR2: its process is stuck outside JavaScript`;
  }

  ask(m: Msg, key: string, timeoutMs?: number): Promise<Msg> {
    const p = this.wait(key, timeoutMs);
    this.proc.send(m);
    return p;
  }

  async stop(cmd: Msg): Promise<void> {
    if (this.#exited) return;
    const gone = new Promise<void>((r) => this.proc.once("exit", () => r()));
    try {
      this.proc.send(cmd);
    } catch {
      // already gone
    }
    const t = setTimeout(() => this.proc.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(t);
  }
}

interface ServerUsage {
  user: number;
  system: number;
  rss: number;
}

async function startServer(cfg: ServerConfig, env: Record<string, string> = {}): Promise<{ child: Child; port: number; fingerprint?: string }> {
  const child = new Child(`server:${cfg.kind}`, "server.js", SERVER_CORE, { BENCH_SERVER: JSON.stringify(cfg), ...env }, ["--expose-gc"]);
  const ready = (await child.wait("ready", 30_000)).ready as { port: number; fingerprint?: string };
  return { child, port: ready.port, ...(ready.fingerprint ? { fingerprint: ready.fingerprint } : {}) };
}

function startLoad(cfg: LoadConfig): Child {
  return new Child(`load:${cfg.kind}`, "load.js", LOAD_CORE, { BENCH_LOAD: JSON.stringify(cfg) });
}

/**
 * Requests forwarded to a local upstream: the same load as psimbols_memory,
 * but the op is one the node forwards (`fwd.echo`) over its keep-alive pool
 * (server/app/http.ts) to bench/upstream.ts, on the load generator's core.
 * The broker's CPU per request minus that of the in-process `echo`
 * (psimbols_memory, same run) is what forwarding adds. BENCH_UPSTREAM_CORE
 * pins the upstream elsewhere (a taskset list, e.g. `0,1`). With `batch`, the
 * route takes batches (`--upstream-batch`, server/app/batch.ts): the
 * psimbols_forwarded_batch row.
 */
async function forwardedCase(env: Env, size: number, o: { profile?: string; channelType?: string; batch?: boolean } = {}): Promise<MsgResult> {
  const upstream = new Child("upstream", "upstream.js", process.env.BENCH_UPSTREAM_CORE ?? LOAD_CORE, {});
  try {
    const { port } = (await upstream.wait("ready", 30_000)).ready as { port: number };
    return await msgCase(env, "psimbols", size, { upstream: `http://127.0.0.1:${port}/`, op: "fwd.echo", ...o });
  } finally {
    await upstream.stop({ cmd: "exit" });
  }
}

// ------------------------------------------------------------------ Redis


function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean) => (s.destroy(), resolve(ok));
    s.setTimeout(500, () => done(false));
    s.once("error", () => done(false));
    s.once("connect", () => s.write("PING\r\n"));
    s.once("data", (d) => done(d.toString("latin1").startsWith("+PONG")));
  });
}

/** A throwaway redis-server on a free port, pinned with the load generator (the server's core stays the server's). */
async function startRedis(): Promise<{ url: string; stop(): void }> {
  const port = await freePort();
  const args = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port", String(port)];
  const proc = HAVE_TASKSET ? spawn("taskset", ["-c", LOAD_CORE, "redis-server", ...args], { stdio: "ignore" }) : spawn("redis-server", args, { stdio: "ignore" });
  let failed: Error | undefined;
  proc.once("error", (e) => (failed = e));
  const deadline = Date.now() + 5000;
  while (!(await answersPing(port))) {
    if (failed) throw new Error(`redis-server could not start: ${failed.message} (apt-get install redis-server)`);
    if (Date.now() > deadline) throw new Error("redis-server did not answer PING within 5 s");
    await sleep(50);
  }
  process.once("exit", () => proc.kill("SIGKILL"));
  return { url: `redis://127.0.0.1:${port}`, stop: () => void proc.kill("SIGTERM") };
}

// ------------------------------------------------------------------ cases

/** One message case as results.json has it. */
interface MsgResult {
  /** Closed loop (the maximum rate): requests/s, latency, server CPU per request. */
  rps: number;
  p50_ms: number;
  p99_ms: number;
  cpu_us_per_req: number;
  /** CPU of the server and of the load generator over the closed-loop window, % of one core. */
  server_cpu_pct: number;
  load_cpu_pct: number;
  /** Which process ran out of core first in closed loop (≥ 90 % of one core), if either did. */
  limit: "server" | "load generator" | "both" | "neither";
  requests: number;
  errors: number;
  /** At the fixed offered load (the same for every case): requests/s offered and completed, server CPU per request. */
  at_rate: { offered: number; rps: number; cpu_us_per_req: number; server_cpu_pct: number; load_cpu_pct: number; p50_ms: number; p99_ms: number; skipped: number };
  /** psimbols: the channel type agreed. */
  channel_type?: string;
}
interface HsResult {
  per_s: number;
  cpu_us: number;
  server_cpu_pct: number;
  load_cpu_pct: number;
  p50_ms: number;
  p99_ms: number;
  handshakes: number;
  errors: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

interface Env {
  pki: Pki;
  redisUrl?: string;
  wrapKey: string;
}

/** Runs one timed window: warm up, snapshot server CPU and zero the load counters, wait, snapshot again. */
async function window(server: Child, load: Child, profilePath?: string, warmupMs = WARMUP_MS): Promise<{ rep: LoadReport; cpuUs: number }> {
  await sleep(warmupMs);
  if (profilePath) await server.ask({ cmd: "profile", on: true }, "profile", ANSWER_MS);
  const [u0] = await Promise.all([server.ask({ cmd: "usage" }, "usage", ANSWER_MS), load.ask({ cmd: "mark" }, "marked", ANSWER_MS)]);
  await sleep(MEASURE_MS);
  const [u1, r] = await Promise.all([server.ask({ cmd: "usage" }, "usage", ANSWER_MS), load.ask({ cmd: "report" }, "report", ANSWER_MS)]);
  if (profilePath) await server.ask({ cmd: "profile", on: false, path: profilePath }, "profile", ANSWER_MS);
  const a = u0.usage as ServerUsage;
  const b = u1.usage as ServerUsage;
  return { rep: r.report as LoadReport, cpuUs: b.user - a.user + (b.system - a.system) };
}

function serverCfg(kind: "ws" | "wss" | "psimbols", env: Env, store: "memory" | "redis" = "memory", json = false, upstream?: string, batch = false): ServerConfig {
  if (kind === "psimbols" && upstream) return { kind, store, upstream, batch };
  if (kind === "wss") return { kind, tls: { key: env.pki.serverKey, cert: env.pki.serverCert, ca: env.pki.ca } };
  if (kind === "psimbols") return { kind, store, ...(store === "redis" ? { redisUrl: env.redisUrl! } : {}) };
  return { kind, json };
}

const limitOf = (serverPct: number, loadPct: number): MsgResult["limit"] =>
  serverPct >= 90 && loadPct >= 90 ? "both" : serverPct >= 90 ? "server" : loadPct >= 90 ? "load generator" : "neither";

async function msgCase(
  env: Env,
  kind: "ws" | "wss" | "psimbols",
  size: number,
  o: { store?: "memory" | "redis"; binary?: boolean; profile?: string; channelType?: string; json?: boolean; upstream?: string; batch?: boolean; op?: string } = {},
): Promise<MsgResult> {
  const { child: server, port, fingerprint } = await startServer(serverCfg(kind, env, o.store, o.json, o.upstream, o.batch), { PSIMBOLS_WRAP_KEY: env.wrapKey });
  const load = startLoad({
    mode: "msg",
    kind,
    port,
    ...(fingerprint ? { fingerprint } : {}),
    ...(kind === "wss" ? { tls: { ca: env.pki.ca } } : {}),
    conns: CONNS,
    inflight: INFLIGHT,
    size,
    n: 0,
    addresses: ADDRESSES,
    binary: o.binary ?? true,
    ...(o.channelType ? { channelTypes: [o.channelType] } : {}),
    rate: RATE,
    ...(o.op ? { op: o.op } : {}),
  });
  try {
    await load.wait("ready", 30_000);
    await load.ask({ cmd: "start" }, "started", 120_000);
    // First the fixed offered load (the CPU column), then closed loop (the maximum rate).
    const fixed = await window(server, load, undefined, Math.min(WARMUP_MS, 2000));
    const f = fixed.rep;
    if (f.count === 0) throw new Error(`no request completed at ${RATE}/s${f.firstError ? `: ${f.firstError}` : ""}`);
    await load.ask({ cmd: "rate", rate: 0 }, "rated", ANSWER_MS);
    const { rep, cpuUs } = await window(server, load, o.profile, Math.min(WARMUP_MS, 2000));
    if (rep.count === 0) throw new Error(`no request completed${rep.firstError ? `: ${rep.firstError}` : ""}`);
    if (rep.errors || f.errors) process.stderr.write(`  ${kind}: ${rep.errors + f.errors} errors, first: ${f.firstError ?? rep.firstError}\n`);
    const serverPct = round(cpuUs / 10 / rep.elapsedMs);
    return {
      rps: Math.round((rep.count * 1000) / rep.elapsedMs),
      p50_ms: round(rep.p50Ms, 2),
      p99_ms: round(rep.p99Ms, 2),
      cpu_us_per_req: round(cpuUs / rep.count),
      server_cpu_pct: serverPct,
      load_cpu_pct: rep.loadCpuPct,
      limit: limitOf(serverPct, rep.loadCpuPct),
      requests: rep.count,
      errors: rep.errors + f.errors,
      at_rate: {
        offered: RATE,
        rps: Math.round((f.count * 1000) / f.elapsedMs),
        cpu_us_per_req: round(fixed.cpuUs / f.count),
        server_cpu_pct: round(fixed.cpuUs / 10 / f.elapsedMs),
        load_cpu_pct: f.loadCpuPct,
        p50_ms: round(f.p50Ms, 2),
        p99_ms: round(f.p99Ms, 2),
        skipped: f.skipped,
      },
      ...(rep.channelType ? { channel_type: rep.channelType } : {}),
    };
  } finally {
    await load.stop({ cmd: "stop" });
    await server.stop({ cmd: "exit" });
  }
}

async function hsCase(env: Env, kind: "psimbols" | "mtls", o: { profile?: string; kem?: KemType } = {}): Promise<HsResult> {
  const cfg: ServerConfig =
    kind === "mtls" ? { kind, tls: { key: env.pki.serverKey, cert: env.pki.serverCert, ca: env.pki.ca } } : { kind, store: "memory" };
  const { child: server, port, fingerprint } = await startServer(cfg);
  const load = startLoad({
    mode: "hs",
    kind,
    port,
    ...(fingerprint ? { fingerprint } : {}),
    ...(kind === "mtls" ? { tls: { ca: env.pki.ca, key: env.pki.clientKey, cert: env.pki.clientCert } } : {}),
    conns: CONNS,
    inflight: 1,
    size: 0,
    n: 0,
    addresses: ADDRESSES,
    binary: true,
    ...(o.kem ? { kem: o.kem } : {}),
  });
  try {
    await load.wait("ready", 30_000);
    await load.ask({ cmd: "start" }, "started", 120_000);
    const { rep, cpuUs } = await window(server, load, o.profile);
    if (rep.count === 0) throw new Error(`no handshake completed${rep.firstError ? `: ${rep.firstError}` : ""}`);
    if (rep.errors) process.stderr.write(`  ${kind} handshakes: ${rep.errors} errors, first: ${rep.firstError}\n`);
    return {
      per_s: Math.round((rep.count * 1000) / rep.elapsedMs),
      cpu_us: round(cpuUs / rep.count),
      server_cpu_pct: round(cpuUs / 10 / rep.elapsedMs),
      load_cpu_pct: rep.loadCpuPct,
      p50_ms: round(rep.p50Ms, 2),
      p99_ms: round(rep.p99Ms, 2),
      handshakes: rep.count,
      errors: rep.errors,
    };
  } finally {
    await load.stop({ cmd: "stop" });
    await server.stop({ cmd: "exit" });
  }
}

/** Bytes of the four handshake frames per KEM (Ed25519 identity and server key, no features; PROTOCOL.md §5.3.1). */
async function handshakeFrameBytes(): Promise<Record<string, Record<string, number>>> {
  await useNodeCrypto();
  const server = await generateSigningKey();
  const out: Record<string, Record<string, number>> = {};
  for (const kem of kemTypes) {
    const h = await createHello(await generateSigningKey(), { kem, features: [Feature.binary] });
    const { challenge, pending } = await acceptHello(h.bytes, h.hello, { key: server, source: "ws://127.0.0.1:9393/", features: [Feature.binary] });
    const { proof } = await answerChallenge(h, challenge, () => {});
    const sig = fromB64u(proof.signature, "signature");
    const grant = { channel: "AAAAAAAAAAAAAAAAAAAAAA", key: { type: "AES-256-GCM" as const, data: b64u(new Uint8Array(32)) }, valid_until: "2030-01-01T00:00:00.000Z", ttl: 3600 };
    const est = await sealGrant(pending, sig, grant, "ws://127.0.0.1:9393/");
    const size = (o: unknown) => new TextEncoder().encode(JSON.stringify(o)).length;
    out[kem] = { hello: h.bytes.length, challenge: size(challenge), proof: size(proof), established: size(est) };
  }
  return out;
}

/**
 * The server's share of one handshake per KEM, in this process on the node:crypto engine (as a
 * broker runs it): acceptHello (KEM import, Encap, key schedule, signature) plus verifyProof and
 * sealGrant, CPU µs per handshake over a fixed count, no sockets: X-Wing against X25519
 * without the load generator and socket noise of the handshake rows.
 */
async function serverCpuByKem(): Promise<Record<string, number>> {
  await useNodeCrypto();
  const server = await generateSigningKey();
  const id = await generateSigningKey();
  const source = "ws://127.0.0.1:9393/";
  const grant = { channel: "AAAAAAAAAAAAAAAAAAAAAA", key: { type: "AES-256-GCM" as const, data: b64u(new Uint8Array(32)) }, valid_until: "2030-01-01T00:00:00.000Z", ttl: 3600 };
  const out: Record<string, number> = {};
  const N = QUICK ? 50 : 300;
  for (const kem of kemTypes) {
    // client work first, outside the measured part
    const prepared: ClientHello[] = [];
    for (let i = 0; i < N + 20; i++) prepared.push(await createHello(id, { kem }));
    const one = async (h: ClientHello) => {
      const { challenge, pending } = await acceptHello(h.bytes, h.hello, { key: server, source });
      const { proof } = await answerChallenge(h, challenge, () => {});
      return { pending, sig: fromB64u(proof.signature, "signature") };
    };
    for (const h of prepared.slice(N)) await one(h); // warm-up
    let cpu = 0;
    for (const h of prepared.slice(0, N)) {
      const t0 = process.cpuUsage();
      const { challenge, pending } = await acceptHello(h.bytes, h.hello, { key: server, source });
      let t = process.cpuUsage(t0);
      cpu += t.user + t.system;
      const { proof } = await answerChallenge(h, challenge, () => {});
      const sig = fromB64u(proof.signature, "signature");
      const t1 = process.cpuUsage();
      await verifyProof(pending, sig);
      await sealGrant(pending, sig, grant, source);
      t = process.cpuUsage(t1);
      cpu += t.user + t.system;
    }
    out[kem] = round(cpu / N);
  }
  return out;
}

interface IdleResult {
  /** RSS per idle connection, KiB: the least-squares slope of RSS over the measured steps. */
  kib: number;
  /** Connections in the measured steps (the warm-up ones not counted). */
  n: number;
  /** The same from a single pair of samples, before any connection and after all (the earlier method: one-time costs of the first connections included). */
  kibFromZero: number;
  /** V8 heap used and off-heap (ArrayBuffers, native handles) per connection, KiB (slopes too). */
  heapKib: number;
  externalKib: number;
  /** [connections held, RSS bytes, heapUsed bytes] after full GCs: before any, after the warm-up, after each step. */
  points: [number, number, number][];
}

type Mem = { rss: number; heapUsed: number; external: number };

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  return sxy / sxx;
}

/**
 * Memory per idle connection (psimbols: each with a bound channel, each its own
 * identity). The first connections of a process carry one-time costs that are
 * no connection's: JIT code, the young generation growing to its working size
 * (16 to 32 MB, for ws as for psimbols), the crypto thread pool and OpenSSL
 * state of the first handshakes (some 15 MB for psimbols). Divided by 10,000 they
 * read as 2-4 KiB "per connection", and a single pair of samples swings by
 * ±1 KiB from one run to the next. So: two warm-up steps first, not counted;
 * then IDLE_CONNS more in IDLE_STEPS steps, RSS sampled after full GCs (and a
 * settling second) after each, and the per-connection figure is the slope.
 */
async function idleCase(env: Env, kind: "ws" | "psimbols"): Promise<IdleResult> {
  const { child: server, port, fingerprint } = await startServer(serverCfg(kind, env));
  const step = Math.round(IDLE_CONNS / IDLE_STEPS);
  const load = startLoad({
    mode: "idle",
    kind,
    port,
    ...(fingerprint ? { fingerprint } : {}),
    conns: CONNS,
    inflight: 0,
    size: 0,
    n: step, // each "start" opens this many more
    addresses: ADDRESSES,
    binary: true,
  });
  try {
    await load.wait("ready");
    const mem = async (): Promise<Mem> => (await server.ask({ cmd: "mem" }, "mem")).mem as Mem;
    const points: [number, number, number][] = [];
    const m0 = await mem();
    points.push([0, m0.rss, m0.heapUsed]);
    const measured: { held: number; m: Mem }[] = [];
    for (let i = 0; i < IDLE_WARMUP_STEPS + IDLE_STEPS; i++) {
      const { held } = (await load.ask({ cmd: "start" }, "started", 300_000)).started as { held: number };
      if (held !== step * (i + 1)) throw new Error(`idle: ${held} connections held, expected ${step * (i + 1)}`);
      await sleep(1000);
      const m = await mem();
      points.push([held, m.rss, m.heapUsed]);
      if (i >= IDLE_WARMUP_STEPS - 1) measured.push({ held, m });
    }
    if (process.env.BENCH_HEAPSNAPSHOT) await server.ask({ cmd: "heapsnapshot", path: `${process.env.BENCH_HEAPSNAPSHOT}-${kind}.heapsnapshot` }, "heapsnapshot", 300_000);
    const xs = measured.map((p) => p.held);
    const per = (f: (m: Mem) => number) => round(slope(xs, measured.map((p) => f(p.m))) / 1024);
    const last = measured[measured.length - 1]!;
    return {
      kib: per((m) => m.rss),
      n: last.held - measured[0]!.held,
      kibFromZero: round((last.m.rss - m0.rss) / last.held / 1024),
      heapKib: per((m) => m.heapUsed),
      externalKib: per((m) => m.external),
      points,
    };
  } finally {
    await load.stop({ cmd: "stop" });
    await server.stop({ cmd: "exit" });
  }
}

// ------------------------------------------------------------------ table

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? "" : `${(a / b).toFixed(2)}×`;
}

/** Message rows and the row each compares with. */
const MSG_BASE: Record<string, string> = {
  ws_plain: "",
  ws_json: "",
  wss: "ws_json",
  psimbols_memory: "wss",
  psimbols_memory_chacha: "wss",
  psimbols_redis: "psimbols_memory",
  psimbols_redis_chacha: "psimbols_memory_chacha",
  psimbols_memory_json: "wss",
  psimbols_forwarded: "psimbols_memory",
  psimbols_forwarded_batch: "psimbols_memory",
};

function table(c: Record<string, unknown>): string {
  const rows: string[][] = [["case", "size", "CPU µs/req @rate", "baseline", "CPU ratio", "max req/s", "p50 ms", "p99 ms", "CPU µs/req @max", "limit", "req/s ratio"]];
  for (const [sizeName, set] of [["256 B", c], ["4 KiB", c.cases_4k]] as const) {
    const s = (set ?? {}) as Record<string, MsgResult | undefined>;
    for (const [name, b] of Object.entries(MSG_BASE)) {
      const r = s[name];
      if (!r || typeof r.rps !== "number") continue;
      const bl = b ? s[b] : undefined;
      rows.push([
        name,
        sizeName,
        r.at_rate.cpu_us_per_req.toFixed(1),
        b,
        ratio(r.at_rate.cpu_us_per_req, bl?.at_rate.cpu_us_per_req),
        String(r.rps),
        r.p50_ms.toFixed(2),
        r.p99_ms.toFixed(2),
        r.cpu_us_per_req.toFixed(1),
        r.limit,
        ratio(r.rps, bl?.rps),
      ]);
    }
  }
  const hs = c as Record<string, HsResult | undefined>;
  const hsRows: string[][] = [["handshakes", "per s", "p50 ms", "p99 ms", "CPU µs/hs", "baseline", "per-s ratio", "CPU ratio"]];
  for (const [name, b] of [["handshake_mtls", ""], ["handshake_psimbols", "handshake_mtls"], ["handshake_psimbols_xwing", "handshake_psimbols"]] as const) {
    const r = hs[name];
    if (!r || typeof r.per_s !== "number") continue;
    const bl = b ? hs[b] : undefined;
    hsRows.push([name, String(r.per_s), r.p50_ms.toFixed(2), r.p99_ms.toFixed(2), r.cpu_us.toFixed(1), b, ratio(r.per_s, bl?.per_s), ratio(r.cpu_us, bl?.cpu_us)]);
  }
  const memRows: string[][] = [["memory (idle connections)", "KiB per conn", "baseline", "ratio"]];
  const m = c as Record<string, number | undefined>;
  if (typeof m.rss_per_conn_kib_ws === "number") memRows.push(["ws (rss_per_conn_kib_ws)", String(m.rss_per_conn_kib_ws), "", ""]);
  if (typeof m.rss_per_conn_kib === "number") memRows.push(["psimbols, bound channel (rss_per_conn_kib)", String(m.rss_per_conn_kib), "ws", ratio(m.rss_per_conn_kib, m.rss_per_conn_kib_ws)]);
  return [rows, hsRows, memRows].map(fmt).join("\n\n");
}

function fmt(rows: string[][]): string {
  if (rows.length <= 1) return "";
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((x, i) => (i === 0 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join("  ");
  return [line(rows[0]!), w.map((n) => "-".repeat(n)).join("  "), ...rows.slice(1).map(line)].join("\n");
}

/** The issue's targets, evaluated on this run. */
function targets(c: Record<string, any>): Record<string, { value: number | null; target: string; met: boolean | null }> {
  const t: Record<string, { value: number | null; target: string; met: boolean | null }> = {};
  const add = (name: string, value: number | undefined, target: string, ok: (v: number) => boolean) => {
    t[name] = value === undefined || !Number.isFinite(value) ? { value: null, target, met: null } : { value: round(value, 2), target, met: ok(value) };
  };
  const q = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? a / b : undefined);
  // Server CPU per request at the same offered load (docs/PERFORMANCE.md).
  const k4 = c.cases_4k ?? {};
  const cpu = (r: any) => r?.at_rate?.cpu_us_per_req as number | undefined;
  add("chacha_cpu_vs_wss", q(cpu(c.psimbols_memory_chacha), cpu(c.wss)), "<= 1.25", (v) => v <= 1.25);
  add("chacha_cpu_vs_wss_4k", q(cpu(k4.psimbols_memory_chacha), cpu(k4.wss)), "<= 1.0", (v) => v <= 1.0);
  add("chacha_cpu_vs_ws_json", q(cpu(c.psimbols_memory_chacha), cpu(c.ws_json)), "<= 1.3", (v) => v <= 1.3);
  add("aes_cpu_vs_wss", q(cpu(c.psimbols_memory), cpu(c.wss)), "<= 2.32 (before)", (v) => v <= 2.32);
  add("aes_cpu_vs_wss_4k", q(cpu(k4.psimbols_memory), cpu(k4.wss)), "<= 1.40 (before)", (v) => v <= 1.4);
  // The same on the closed-loop windows.
  add("memory_rps_vs_wss", q(c.psimbols_memory?.rps, c.wss?.rps), ">= 0.8", (v) => v >= 0.8);
  add("memory_cpu_vs_wss", q(c.psimbols_memory?.cpu_us_per_req, c.wss?.cpu_us_per_req), "<= 1.25", (v) => v <= 1.25);
  add("redis_rps_vs_memory", q(c.psimbols_redis?.rps, c.psimbols_memory?.rps), ">= 0.9", (v) => v >= 0.9);
  add("handshake_rate_vs_mtls", q(c.handshake_psimbols?.per_s, c.handshake_mtls?.per_s), ">= 1.8", (v) => v >= 1.8);
  add("handshake_cpu_vs_mtls", q(c.handshake_psimbols?.cpu_us, c.handshake_mtls?.cpu_us), "<= 0.6", (v) => v <= 0.6);
  add("rss_per_conn_kib", c.rss_per_conn_kib, "<= 16", (v) => v <= 16);
  add("rss_vs_ws", q(c.rss_per_conn_kib, c.rss_per_conn_kib_ws), "<= 1.5", (v) => v <= 1.5);
  // What forwarding to an upstream adds to the broker, at the fixed offered load (docs/BACKEND.md "Cost"):
  // CPU µs per request and p99 ms over the in-process op of the same run, for each row: one POST per
  // request (the default) and batches (`--upstream-batch`).
  const mem = c.psimbols_memory?.at_rate;
  const sub = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a - b : undefined);
  for (const [suffix, row] of [["", c.psimbols_forwarded], ["_batch", c.psimbols_forwarded_batch]] as const) {
    const fwd = row?.at_rate;
    add(`forward${suffix}_added_cpu_us`, sub(fwd?.cpu_us_per_req, mem?.cpu_us_per_req), "<= 25", (v) => v <= 25);
    add(`forward${suffix}_added_p99_ms`, sub(fwd?.p99_ms, mem?.p99_ms), "<= 2", (v) => v <= 2);
    add(`forward${suffix}_rate_vs_offered`, q(fwd?.rps, fwd?.offered), ">= 0.95", (v) => v >= 0.95);
  }
  const k = c.cases_4k ?? {};
  add("memory_rps_vs_wss_4k", q(k.psimbols_memory?.rps, k.wss?.rps), ">= 0.8", (v) => v >= 0.8);
  add("memory_cpu_vs_wss_4k", q(k.psimbols_memory?.cpu_us_per_req, k.wss?.cpu_us_per_req), "<= 1.25", (v) => v <= 1.25);
  add("redis_rps_vs_memory_4k", q(k.psimbols_redis?.rps, k.psimbols_memory?.rps), ">= 0.9", (v) => v >= 0.9);
  return t;
}

// ------------------------------------------------------------------ main

/** The code measured: BENCH_COMMIT, or the work tree's HEAD (+ "-dirty" with uncommitted changes). */
function commitOf(): string {
  if (process.env.BENCH_COMMIT) return process.env.BENCH_COMMIT;
  try {
    const head = execFileSync("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["-C", ROOT, "status", "--porcelain", "--untracked-files=no"], { encoding: "utf8" }).trim();
    return dirty ? `${head}-dirty` : head;
  } catch {
    return "unknown";
  }
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const load0 = loadavg()[0]!;
  const want = (name: string) => !ONLY || ONLY.includes(name);
  const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
  log(`psimbols bench: ${CORES} cores, taskset ${HAVE_TASKSET ? `yes (server core ${SERVER_CORE}, load core ${LOAD_CORE})` : "no"}, window ${MEASURE_MS} ms after ${WARMUP_MS} ms warm-up`);
  const env: Env = { pki: makePki("p256"), wrapKey: randomBytes(32).toString("base64url") };
  const needRedis = ["psimbols_redis", "psimbols_redis_4k", "psimbols_redis_chacha", "psimbols_redis_chacha_4k"].some(want);
  const redis = needRedis ? await startRedis() : undefined;
  if (redis) env.redisUrl = redis.url;
  // Profiles are large and belong to one machine: kept out of the work tree.
  const profDir = join(tmpdir(), "psimbols-bench-profiles") + "/";
  if (PROFILE) {
    rmSync(profDir, { recursive: true, force: true });
    mkdirSync(profDir, { recursive: true });
  }

  const cases: Record<string, unknown> = {};
  const k4: Record<string, unknown> = {};
  const run = async <T>(name: string, f: () => Promise<T>, into: Record<string, unknown> = cases, key = name): Promise<void> => {
    if (!want(name)) return;
    log(`${name} ...`);
    try {
      const r = await f();
      into[key] = r;
      log(`${name}: ${JSON.stringify(r)}`);
    } catch (e) {
      log(`${name} FAILED: ${e instanceof Error ? e.message : String(e)}`);
      into[key] = { error: e instanceof Error ? e.message.split("\n")[0] : String(e) };
    }
  };

  const AES = "AES-256-GCM";
  const CC = "ChaCha20-Poly1305";
  for (const [size, into, suffix] of [[256, cases, ""], [4096, k4, "_4k"]] as const) {
    const prof = (name: string) => (PROFILE ? { profile: `${profDir}${name}${suffix}.cpuprofile` } : {});
    await run(`ws_plain${suffix}`, () => msgCase(env, "ws", size), into, "ws_plain");
    await run(`ws_json${suffix}`, () => msgCase(env, "ws", size, { json: true }), into, "ws_json");
    await run(`wss${suffix}`, () => msgCase(env, "wss", size), into, "wss");
    await run(`psimbols_memory${suffix}`, () => msgCase(env, "psimbols", size, { channelType: AES, ...prof("psimbols_memory") }), into, "psimbols_memory");
    await run(`psimbols_memory_chacha${suffix}`, () => msgCase(env, "psimbols", size, { channelType: CC, ...prof("psimbols_memory_chacha") }), into, "psimbols_memory_chacha");
    await run(`psimbols_redis${suffix}`, () => msgCase(env, "psimbols", size, { store: "redis", channelType: AES }), into, "psimbols_redis");
    await run(`psimbols_redis_chacha${suffix}`, () => msgCase(env, "psimbols", size, { store: "redis", channelType: CC }), into, "psimbols_redis_chacha");
    if (size === 256) {
      const profF = PROFILE ? { profile: `${profDir}psimbols_forwarded.cpuprofile` } : {};
      await run("psimbols_forwarded", () => forwardedCase(env, size, { channelType: AES, ...profF }));
      const profB = PROFILE ? { profile: `${profDir}psimbols_forwarded_batch.cpuprofile` } : {};
      await run("psimbols_forwarded_batch", () => forwardedCase(env, size, { channelType: AES, batch: true, ...profB }));
    }
    if (VARIANTS) {
      await run(`psimbols_memory_json${suffix}`, () => msgCase(env, "psimbols", size, { binary: false, channelType: AES, ...prof("psimbols_memory_json") }), into, "psimbols_memory_json");
    }
  }
  cases.cases_4k = k4;
  await run("handshake_mtls", () => hsCase(env, "mtls"));
  const profH = PROFILE ? `${profDir}handshake_psimbols.cpuprofile` : undefined;
  await run("handshake_psimbols", () => hsCase(env, "psimbols", profH ? { profile: profH } : {}));
  // The same handshakes with the post-quantum hybrid KEM, and the frame sizes of both
  const profX = PROFILE ? `${profDir}handshake_psimbols_xwing.cpuprofile` : undefined;
  await run("handshake_psimbols_xwing", () => hsCase(env, "psimbols", { kem: KemType.xwing, ...(profX ? { profile: profX } : {}) }));
  await run("handshake_frame_bytes", () => handshakeFrameBytes());
  await run("handshake_server_cpu_us_by_kem", () => serverCpuByKem());
  await run("rss_per_conn_kib_ws", async () => {
    const r = await idleCase(env, "ws");
    cases.rss_detail_ws = r;
    return r.kib;
  });
  await run("rss_per_conn_kib", async () => {
    const r = await idleCase(env, "psimbols");
    cases.rss_detail_psimbols = r;
    return r.kib;
  });
  redis?.stop();

  const results = {
    machine: `${cpus()[0]?.model ?? "unknown CPU"}, ${CORES} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, ${platform()} ${release()}, Node ${process.versions.node}, OpenSSL ${process.versions.openssl}`,
    date: new Date().toISOString(),
    cases,
    targets: targets(cases as Record<string, any>),
    setup: {
      command: "npm run bench",
      commit: commitOf(),
      pinning: HAVE_TASKSET ? `taskset: server core ${SERVER_CORE}, load generator and redis core ${LOAD_CORE}` : "none (taskset missing)",
      warmup_ms: WARMUP_MS,
      window_ms: MEASURE_MS,
      connections: CONNS,
      in_flight_per_connection: INFLIGHT,
      payload: "256 (cases) or 4096 (cases_4k) characters of request data, echoed back",
      idle_connections: `${IDLE_CONNS} in ${IDLE_STEPS} steps after ${IDLE_WARMUP_STEPS} warm-up steps of ${Math.round(IDLE_CONNS / IDLE_STEPS)}; RSS per connection = least-squares slope over the steps, after full GCs`,
      tls: `TLS 1.3, ${env.pki.algorithm} certificates`,
      frames:
        "psimbols rows use binary channel frames (the `binary` feature, PROTOCOL.md §4.11), as the project's clients do by default; rows ending _json use JSON channel frames (the protocol's default without the feature)",
      cpu: "server process.cpuUsage() (user + system, all threads) over the window / completed requests",
      fixed_rate: `${RATE} requests/s offered in all, the same for every message case (at_rate); then closed loop (rps, cpu_us_per_req, limit)`,
      channel_types: "psimbols rows: AES-256-GCM unless the name says chacha (ChaCha20-Poly1305, libsodium on both sides); the load generator offers only the row's type",
      engines: `ChaCha20-Poly1305 on ${chachaEngine()}`,
      seconds: Math.round((Date.now() - t0) / 1000),
      // Other work on the machine skews req/s far more than CPU per request: judge a run by these.
      loadavg_1min_start: round(load0, 2),
      loadavg_1min_end: round(loadavg()[0]!, 2),
    },
  };
  console.log(`\npsimbols bench — ${results.machine}\n${results.date}\n`);
  console.log(table(cases));
  console.log("\ntargets:");
  for (const [k, v] of Object.entries(results.targets)) console.log(`  ${k.padEnd(24)} ${String(v.value).padStart(8)}  ${v.target.padEnd(8)} ${v.met === null ? "n/a" : v.met ? "met" : "MISSED"}`);
  if (PROFILE) {
    for (const f of ["psimbols_memory", "psimbols_memory_chacha", "psimbols_forwarded", "psimbols_forwarded_batch", "psimbols_memory_json", "psimbols_memory_4k", "psimbols_memory_chacha_4k", "psimbols_memory_json_4k", "handshake_psimbols"]) {
      try {
        const p = JSON.parse(readFileSync(`${profDir}${f}.cpuprofile`, "utf8"));
        console.log(`\n${formatSummary(summarise(p, 20), `profile ${f}`)}`);
      } catch {
        // not run
      }
    }
  }
  if (OUT) {
    writeFileSync(OUT, JSON.stringify(results, null, 2) + "\n");
    log(`wrote ${OUT} (${results.setup.seconds} s)`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
