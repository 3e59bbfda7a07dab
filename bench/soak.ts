/**
 * Soak: bounded load on one broker process for a long time, through the
 * client library, with renewals and forced reconnects.
 *
 *   npm run soak -- --minutes 10 --connections 50
 *
 * Starts its own `psimbols serve` (channel ttl 20 s, so renewals happen every
 * ~13 s) with default limits, and M clients (`connect` of psimbols/node), each
 * from its own source address 127.1.x.y (the per-address limits stay at their
 * defaults). Each client keeps a few echo requests going at a bounded rate
 * and checks every answer; at random (mean `--cut-every` seconds per client)
 * its socket is terminated, as a network fault would, so the client
 * reconnects and resumes. Prints progress every 30 s, then:
 *   requests ok, errors by kind, requests lost (neither resolved nor rejected:
 *   must be 0), answers that did not match, handshakes, renewals, resumes,
 *   forced cuts, the broker's own counters, and its RSS at start, middle, end.
 * Exits 1 if a request was lost, an answer did not match, or a client closed
 * for good.
 *
 * `--cluster` runs the soak with faults on the cluster instead (bench/soak-cluster.ts).
 *
 * Options (defaults): --minutes 10, --connections 50, --rate 4 (requests per
 * second per client), --inflight 2 (concurrent requests per client),
 * --cut-every 60 (s), --ttl 20 (s), --payload 256 (max characters per echo).
 */
import { rssMiB } from "./proc.js";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { type SigningKey, generateSigningKey } from "../shared/crypto.js";
import { PsimbolsError } from "../shared/errors.js";
import { type Client, connect, loadKey } from "../client/node.js";

// ------------------------------------------------------------------ options

interface Options {
  minutes: number;
  connections: number;
  rate: number;
  inflight: number;
  cutEvery: number;
  ttl: number;
  payload: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { minutes: 10, connections: 50, rate: 4, inflight: 2, cutEvery: 60, ttl: 20, payload: 256 };
  const names: Record<string, keyof Options> = {
    "--minutes": "minutes",
    "--connections": "connections",
    "--rate": "rate",
    "--inflight": "inflight",
    "--cut-every": "cutEvery",
    "--ttl": "ttl",
    "--payload": "payload",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--help" || a === "-h") {
      console.log("usage: npm run soak -- [--minutes N] [--connections M] [--rate R] [--inflight K] [--cut-every S] [--ttl S] [--payload N]");
      process.exit(0);
    }
    const k = names[a];
    const v = Number(argv[i + 1]);
    if (!k || argv[i + 1] === undefined || !Number.isFinite(v) || v <= 0) {
      console.error(`error: bad option ${a} ${argv[i + 1] ?? ""}`.trim());
      console.error("hint: npm run soak -- --minutes 10 --connections 50");
      process.exit(2);
    }
    o[k] = v;
    i++;
  }
  if (!Number.isInteger(o.connections) || o.connections > 60_000) throw new RangeError(`"--connections" expected an integer up to 60000`);
  if (!Number.isInteger(o.inflight)) throw new RangeError(`"--inflight" expected an integer`);
  if (o.ttl < 4) throw new RangeError(`"--ttl" expected at least 4 seconds`);
  return o;
}

// ------------------------------------------------------------------ broker process

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLI = join(ROOT, "bin", "psimbols.js");

interface Broker {
  proc: ChildProcess;
  url: string;
  fingerprint: string;
  operator: SigningKey;
  output(): string;
  stop(): Promise<void>;
}

function run(args: string[], env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    p.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    p.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`psimbols ${args.join(" ")} exited with ${code}: ${err}`))));
  });
}

async function startBroker(o: Options, dir: string): Promise<Broker> {
  const env = { PSIMBOLS_HOME: dir };
  const opFile = join(dir, "operator.pem");
  const keys = join(dir, "keys.json");
  await run(["keygen", "-o", opFile], env);
  await run(["keys", "add", opFile, "--role", "operator", "--file", keys], env);
  const expiringBefore = Math.max(1, Math.floor(o.ttl / 4));
  const args = ["serve", "--port", "0", "--data-dir", join(dir, "server"), "--keys", keys, "--channel-ttl", String(o.ttl), "--expiring-before", String(expiringBefore), "--log-level", "warn"];
  const proc = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  proc.stderr!.setEncoding("utf8").on("data", (d: string) => (out = (out + d).slice(-200_000)));
  const m = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`broker did not start:\n${out}`)), 15_000);
    proc.stdout!.on("data", () => {
      const x = out.match(/listening on ws:\/\/([^/]+)\/ fingerprint (SHA256:\S+)/);
      if (x) clearTimeout(t), resolve(x);
    });
    proc.once("exit", (c) => (clearTimeout(t), reject(new Error(`broker exited with ${c}:\n${out}`))));
  });
  const port = Number(m[1]!.split(":").pop());
  return {
    proc,
    url: `ws://127.0.0.1:${port}/`,
    fingerprint: m[2]!,
    operator: await loadKey(opFile),
    output: () => out,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once("exit", () => resolve());
        proc.kill("SIGTERM");
        setTimeout(() => proc.kill("SIGKILL"), 10_000).unref();
      }),
  };
}


// ------------------------------------------------------------------ counters

const counts = {
  issued: 0,
  settled: 0,
  ok: 0,
  mismatched: 0,
  errors: new Map<string, number>(),
  handshakes: 0,
  renewals: 0,
  resumes: 0,
  cuts: 0,
  clientsClosed: 0,
  notices: new Map<string, number>(),
  clientErrors: new Map<string, number>(),
};
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
const fmt = (m: Map<string, number>) => (m.size === 0 ? "none" : [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", "));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ one client

/** A WebSocket class bound to one source address that remembers its live sockets (to cut them). */
function socketClass(localAddress: string, live: Set<WebSocket>) {
  return class extends WebSocket {
    constructor(url: string) {
      super(url, { localAddress });
      live.add(this);
      this.once("close", () => live.delete(this));
    }
  };
}

class SoakClient {
  readonly #o: Options;
  readonly #url: string;
  readonly #fingerprint: string;
  readonly #address: string;
  readonly #live = new Set<WebSocket>();
  #client: Client | undefined;
  #running = true;
  #cutTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #workers: Promise<void>[] = [];

  constructor(o: Options, url: string, fingerprint: string, index: number) {
    this.#o = o;
    this.#url = url;
    this.#fingerprint = fingerprint;
    this.#address = `127.1.${(index >> 8) & 255}.${(index & 255) + 1}`;
  }

  async start(): Promise<void> {
    await this.#open();
    for (let i = 0; i < this.#o.inflight; i++) this.#workers.push(this.#loop(i));
    this.#scheduleCut();
  }

  async #open(): Promise<void> {
    const client = await connect(this.#url, {
      key: await generateSigningKey(),
      serverKey: this.#fingerprint,
      WebSocket: socketClass(this.#address, this.#live),
      requestTimeoutMs: 15_000,
      reconnect: { baseMs: 100, maxMs: 3000 },
    });
    counts.handshakes++;
    client.on("established", (e) => (e.renewed ? counts.renewals++ : counts.handshakes++));
    client.on("resumed", () => counts.resumes++);
    client.on("notice", (n) => bump(counts.notices, n.kind));
    client.on("error", (e) => bump(counts.clientErrors, e.code));
    client.on("close", (e) => {
      if (!this.#running) return;
      counts.clientsClosed++;
      bump(counts.errors, `client closed: ${e.error?.code ?? e.code}`);
      // Keep the load up: a fresh client takes its place.
      if (this.#client === client) this.#client = undefined;
      void sleep(500).then(() => (this.#running ? this.#open().catch((x: unknown) => bump(counts.errors, `reopen: ${String(x)}`)) : undefined));
    });
    this.#client = client;
  }

  #scheduleCut(): void {
    const delay = -Math.log(1 - Math.random()) * this.#o.cutEvery * 1000;
    this.#cutTimer = setTimeout(() => {
      if (!this.#running) return;
      for (const ws of this.#live) {
        if (ws.readyState === WebSocket.OPEN) {
          ws.terminate(); // as a network fault: no close frame
          counts.cuts++;
        }
      }
      this.#scheduleCut();
    }, delay);
  }

  async #loop(worker: number): Promise<void> {
    const period = (1000 * this.#o.inflight) / this.#o.rate;
    await sleep(Math.random() * period);
    let n = 0;
    while (this.#running) {
      const started = Date.now();
      const client = this.#client;
      if (!client) {
        await sleep(200);
        continue;
      }
      const data = { w: worker, n: n++, pad: "p".repeat(Math.floor(Math.random() * this.#o.payload)) };
      counts.issued++;
      try {
        const got = (await client.request("echo", data)) as typeof data;
        if (got?.w === data.w && got.n === data.n && got.pad === data.pad) counts.ok++;
        else counts.mismatched++;
      } catch (e) {
        bump(counts.errors, e instanceof PsimbolsError ? e.code : `non-psimbols: ${e instanceof Error ? e.message : String(e)}`);
      } finally {
        counts.settled++;
      }
      const left = period * (0.5 + Math.random()) - (Date.now() - started);
      if (left > 0) await sleep(left);
    }
  }

  /** Stops the loops; waits for every request to settle (the client's own timeouts bound this). */
  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#cutTimer);
    await Promise.all(this.#workers);
  }

  async close(): Promise<void> {
    await this.#client?.close().catch(() => {});
  }
}

// ------------------------------------------------------------------ main

async function serverStats(b: Broker): Promise<Record<string, unknown> | undefined> {
  let c: Client | undefined;
  try {
    c = await connect(b.url, { key: b.operator, serverKey: b.fingerprint, reconnect: false, renew: false, WebSocket: socketClass("127.0.0.3", new Set()) });
    const r = (await c.request("admin.channels")) as { stats: Record<string, unknown>; connected?: unknown[]; channels: unknown[] };
    return { stats: r.stats, bound: (r.connected ?? r.channels).length, storeChannels: r.connected ? r.channels.length : undefined };
  } catch (e) {
    console.error(`(could not read the broker's stats: ${e instanceof Error ? e.message : String(e)})`);
    return undefined;
  } finally {
    await c?.close().catch(() => {});
  }
}

async function main(): Promise<void> {
  // The cluster with faults (node kills, Redis master kills through Sentinel, link cuts): bench/soak-cluster.ts.
  if (process.argv.includes("--cluster")) process.exit(await (await import("./soak-cluster.js")).soakCluster(process.argv.slice(2)));
  const o = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), "psimbols-soak-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  const broker = await startBroker(o, dir);
  const pid = broker.proc.pid;
  console.log(
    `soak: ${o.minutes} min, ${o.connections} connections × ${o.rate} req/s (${o.inflight} in flight each), channel ttl ${o.ttl} s, ` +
      `a forced cut every ${o.cutEvery} s per connection on average; broker pid ${pid} at ${broker.url}`,
  );
  const rssBase = rssMiB(pid);
  const clients = Array.from({ length: o.connections }, (_, i) => new SoakClient(o, broker.url, broker.fingerprint, i));
  for (let i = 0; i < clients.length; i += 10) await Promise.all(clients.slice(i, i + 10).map((c) => c.start()));
  const t0 = Date.now();
  const rss = { idle: rssBase, start: rssMiB(pid), middle: NaN, end: NaN, max: rssBase };
  const durationMs = o.minutes * 60_000;
  let lastOk = 0;
  let lastT = t0;
  let middleTaken = false;
  const progress = () => {
    const now = Date.now();
    const r = rssMiB(pid);
    rss.max = Math.max(rss.max, r);
    if (!middleTaken && now - t0 >= durationMs / 2) (rss.middle = r), (middleTaken = true);
    const rate = ((counts.ok - lastOk) * 1000) / Math.max(1, now - lastT);
    lastOk = counts.ok;
    lastT = now;
    console.log(
      `[${((now - t0) / 1000).toFixed(0).padStart(5)} s] ok ${counts.ok} (${rate.toFixed(0)}/s), in flight ${counts.issued - counts.settled}, ` +
        `errors: ${fmt(counts.errors)}; handshakes ${counts.handshakes}, renewals ${counts.renewals}, resumes ${counts.resumes}, cuts ${counts.cuts}; ` +
        `broker RSS ${r.toFixed(1)} MiB`,
    );
  };
  const ticker = setInterval(progress, 30_000);
  const sampler = setInterval(() => (rss.max = Math.max(rss.max, rssMiB(pid))), 5_000);
  const middle = setTimeout(() => {
    if (!middleTaken) (rss.middle = rssMiB(pid)), (middleTaken = true);
    rss.max = Math.max(rss.max, rss.middle);
  }, durationMs / 2);
  await sleep(durationMs);
  clearInterval(ticker);
  clearInterval(sampler);
  clearTimeout(middle);
  rss.end = rssMiB(pid);
  rss.max = Math.max(rss.max, rss.end);

  // Stop issuing, wait for everything in flight to settle (bounded by the request timeout), then count.
  const stopped = Promise.all(clients.map((c) => c.stop()));
  await Promise.race([stopped, sleep(30_000)]);
  const lost = counts.issued - counts.settled;
  const server = await serverStats(broker);
  await Promise.all(clients.map((c) => c.close()));
  await sleep(500);
  const after = await serverStats(broker);
  const brokerAlive = broker.proc.exitCode === null && broker.proc.signalCode === null;
  await broker.stop();
  const brokerErrors = broker
    .output()
    .split("\n")
    .filter((l) => /"level":"error"|\berror\b/.test(l)).length;

  const minutes = (Date.now() - t0) / 60_000;
  console.log("");
  console.log(`soak finished after ${minutes.toFixed(1)} min with ${o.connections} connections`);
  console.log(`  requests ok        ${counts.ok} (${(counts.ok / (durationMs / 1000)).toFixed(0)}/s)`);
  console.log(`  requests issued    ${counts.issued}, settled ${counts.settled}`);
  console.log(`  requests lost      ${lost}`);
  console.log(`  answers mismatched ${counts.mismatched}`);
  console.log(`  errors by kind     ${fmt(counts.errors)}`);
  console.log(`  client diagnostics ${fmt(counts.clientErrors)}`);
  console.log(`  notices            ${fmt(counts.notices)}`);
  console.log(`  handshakes         ${counts.handshakes} (first connects and re-handshakes), renewals ${counts.renewals}, resumes ${counts.resumes}`);
  console.log(`  forced cuts        ${counts.cuts}; clients closed for good ${counts.clientsClosed}`);
  if (server) console.log(`  broker counters    ${JSON.stringify(server.stats)}`);
  if (after) console.log(`  after all clients closed: ${after.bound} sockets bound (the stats reader's own: 1), ${after.storeChannels ?? "?"} live channels in the store`);
  console.log(`  broker RSS (MiB)   before clients ${rss.idle.toFixed(1)}, start ${rss.start.toFixed(1)}, middle ${rss.middle.toFixed(1)}, end ${rss.end.toFixed(1)}, max ${rss.max.toFixed(1)}`);
  console.log(`  broker alive at the end: ${brokerAlive}; error lines in its log: ${brokerErrors}`);
  const failed = lost > 0 || counts.mismatched > 0 || counts.clientsClosed > 0 || !brokerAlive;
  console.log(failed ? "SOAK FAILED" : "soak passed");
  process.exit(failed ? 1 : 0);
}

main().catch((e: unknown) => {
  console.error(`error: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
