/**
 * The CPU one resume costs (PROTOCOL.md §6.5), on the client and on the node:
 * the unit of a reconnect storm (`npm run storm`, docs/PERFORMANCE.md
 * "Fleets"), without the cluster around it. Loopback only, about 20 s.
 *
 *   node dist/bench/resume.js                  # 1,000 clients, memory store, 3 rounds
 *   node dist/bench/resume.js --redis          # the Redis store (a redis-server on a free port)
 *   node dist/bench/resume.js --profile        # also V8 CPU profiles of both sides over the rounds
 *
 * Three processes: this one holds N clients of the project's own Node client
 * (client/node.ts, one process as one load generator of the storm); a child
 * runs one broker node (bench/server.ts: the real Broker, memory or Redis
 * store, limits raised so nothing is refused); another child is a TCP proxy
 * between them. The clients connect through the proxy and make one request
 * each. Then, each round: the proxy cuts every connection (what a node's
 * death looks like to its clients: the socket is gone) and holds the new
 * ones; once every client has reconnected to it (the node has meanwhile
 * handled the closes, which a survivor of a storm never sees), the proxy
 * lets them all through at once, and each client resumes its channel and
 * sends its first request, which confirms the resume (the client's
 * `resumed` event). Reported per round:
 *
 *   clientUsPerResume   this process's CPU (process.cpuUsage, user + system)
 *                       from the cut to the last `resumed`, over N: the drop,
 *                       the new socket and upgrade, the resume, the first request
 *   nodeUsPerResume     the node's CPU from the release to the last `resumed`, over N
 *   nodeCloseUsPerConn  the node's CPU from the cut to the release, over N (the closes; not in a storm)
 *   releaseToLastMs     from the release to the last `resumed`
 *   loadAverage         the host's, at the end of the round
 *
 * The proxy's CPU is in neither figure. A round where a client does not
 * resume (a new handshake, or none within 30 s) fails the run.
 *
 * Options: --clients N (1000), --rounds R (3), --redis, --profile (writes
 * $TMPDIR/psimbols-bench-profiles/resume-{client,node}.cpuprofile and prints
 * their top frames), --json FILE.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { type Socket, createConnection, createServer } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { formatSummary, summarise } from "./profile.js";
import { generateSigningKey } from "../shared/crypto.js";
import { type Client, connect } from "../client/node.js";
import { startRedis } from "../test/helpers/redis.js";
import { integer, parseOptions } from "./options.js";

const USAGE = "usage: node dist/bench/resume.js [--clients 1000] [--rounds 3] [--redis] [--profile] [--json FILE]";

interface Options {
  clients: number;
  rounds: number;
  redis: boolean;
  profile: boolean;
  json?: string;
}

function options(argv: string[]): Options {
  const o: Options = { clients: 1000, rounds: 3, redis: false, profile: false };
  parseOptions(argv, USAGE, {
    "--clients": (v) => (o.clients = integer(v, 1, 10_000)),
    "--rounds": (v) => (o.rounds = integer(v, 1, 20)),
    "--redis": () => (o.redis = true),
    "--profile": () => (o.profile = true),
    "--json": (v) => (o.json = v),
  });
  return o;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const DIST = fileURLToPath(new URL("./", import.meta.url));

// ------------------------------------------------------------------ IPC

/** A forked child answering `{cmd}` messages; `ask` waits for the first answer that has `key`. */
class Child {
  readonly proc: ChildProcess;
  readonly #waiting: { key: string; resolve(m: Record<string, unknown>): void }[] = [];

  constructor(script: string, args: string[], env: Record<string, string>) {
    this.proc = fork(join(DIST, script), args, { env: { ...process.env, ...env }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.proc.on("message", (m: Record<string, unknown>) => {
      const i = this.#waiting.findIndex((w) => w.key in m);
      if (i >= 0) this.#waiting.splice(i, 1)[0]!.resolve(m);
    });
  }

  wait(key: string, ms: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${key}" from ${this.proc.spawnfile} within ${ms} ms`)), ms);
      const onExit = () => reject(new Error(`${this.proc.spawnfile} exited before "${key}"`));
      this.proc.once("exit", onExit);
      this.#waiting.push({
        key,
        resolve: (m) => {
          clearTimeout(timer);
          this.proc.off("exit", onExit);
          resolve(m);
        },
      });
    });
  }

  ask(msg: Record<string, unknown>, key: string, ms = 30_000): Promise<Record<string, unknown>> {
    const answer = this.wait(key, ms);
    this.proc.send(msg);
    return answer;
  }

  async cpuUs(): Promise<number> {
    const { usage } = (await this.ask({ cmd: "usage" }, "usage")) as { usage: { user: number; system: number } };
    return usage.user + usage.system;
  }
}

// ------------------------------------------------------------------ proxy child

/**
 * The proxy: pipes each connection to the node. `{cmd:"cut", expect}` destroys
 * every connection and holds the new ones (accepted, not yet connected to the
 * node) and answers `{held}` once `expect` are held (or after 10 s);
 * `{cmd:"release"}` connects the held ones, in arrival order, and answers `{released}`.
 */
async function proxy(target: number): Promise<void> {
  const open = new Set<Socket>();
  let holding = false;
  let held: Socket[] = [];
  let want: { n: number; done(): void } | undefined;
  const pipe = (down: Socket) => {
    const up = createConnection(target, "127.0.0.1");
    open.add(down).add(up);
    down.pipe(up);
    up.pipe(down);
    const end = () => {
      open.delete(down);
      open.delete(up);
      down.destroy();
      up.destroy();
    };
    down.on("error", end).on("close", end);
    up.on("error", end).on("close", end);
  };
  const server = createServer((down) => {
    if (!holding) return pipe(down);
    down.pause();
    down.on("error", () => down.destroy());
    held.push(down);
    if (want && held.length >= want.n) want.done();
  });
  server.maxConnections = 1 << 20;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", 4096, r));
  process.on("message", (m: { cmd: string; expect?: number }) => {
    if (m.cmd === "cut") {
      holding = true;
      for (const s of open) s.destroy();
      open.clear();
      const done = () => {
        want = undefined;
        clearTimeout(timer);
        process.send!({ held: held.length });
      };
      const timer = setTimeout(done, 10_000);
      want = { n: m.expect ?? 0, done };
      if (held.length >= want.n) done();
    } else if (m.cmd === "release") {
      holding = false;
      const now = held;
      held = [];
      for (const down of now) if (!down.destroyed) pipe(down);
      process.send!({ released: now.length });
    } else if (m.cmd === "exit") process.exit(0);
  });
  process.on("disconnect", () => process.exit(0));
  process.send!({ ready: { port: (server.address() as { port: number }).port } });
}

// ------------------------------------------------------------------ main

interface Round {
  clientUsPerResume: number;
  /** The client's share before the release: the drop, the backoff timer, the new socket up to the held TCP connection. */
  clientDropUsPerResume: number;
  nodeUsPerResume: number;
  nodeCloseUsPerConn: number;
  releaseToLastMs: number;
  cutToLastMs: number;
  loadAverage: number[];
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function main(): Promise<void> {
  const o = options(process.argv.slice(2));
  const say = (m: string) => console.error(`[resume] ${m}`);
  const redis = o.redis ? await startRedis() : undefined;
  const children: Child[] = [];
  const clients: Client[] = [];
  try {
    const node = new Child("server.js", [], {
      BENCH_SERVER: JSON.stringify({ kind: "psimbols", store: o.redis ? "redis" : "memory", ...(redis ? { redisUrl: redis.url } : {}) }),
      PSIMBOLS_WRAP_KEY: randomBytes(32).toString("base64url"),
      PSIMBOLS_LOG_LEVEL: "error",
    });
    children.push(node);
    const ready = (await node.wait("ready", 30_000)).ready as { port: number; fingerprint: string };
    const px = new Child("resume.js", ["--proxy", String(ready.port)], {});
    children.push(px);
    const url = `ws://127.0.0.1:${((await px.wait("ready", 10_000)).ready as { port: number }).port}/`;

    say(`connecting ${o.clients} clients (${o.redis ? "Redis" : "memory"} store)`);
    const keys = await Promise.all(Array.from({ length: o.clients }, () => generateSigningKey()));
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(50, o.clients) }, async () => {
        for (let i = next++; i < o.clients; i = next++) {
          // As the storm's generators (bench/storm.ts), with the client's own liveness pings out of the rounds.
          const c = await connect(url, { key: keys[i]!, serverKey: ready.fingerprint, reconnect: { baseMs: 100, maxMs: 2000 }, pingIntervalMs: 600_000, idleTimeoutMs: 900_000 });
          await c.request("whoami", null);
          clients.push(c);
        }
      }),
    );
    let resumed = 0;
    let established = 0;
    let onAll: (() => void) | undefined;
    for (const c of clients) {
      c.on("resumed", () => {
        if (++resumed === o.clients) onAll?.();
      });
      c.on("established", () => established++);
    }
    await sleep(500);

    const profDir = join(tmpdir(), "psimbols-bench-profiles");
    let session: Session | undefined;
    if (o.profile) {
      mkdirSync(profDir, { recursive: true });
      session = new Session();
      session.connect();
      await session.post("Profiler.enable");
      await session.post("Profiler.setSamplingInterval", { interval: 200 });
      await session.post("Profiler.start");
      await node.ask({ cmd: "profile", on: true }, "profile");
    }

    const rounds: Round[] = [];
    for (let r = 0; r < o.rounds; r++) {
      resumed = 0;
      const all = new Promise<void>((resolve, reject) => {
        onAll = resolve;
        setTimeout(() => reject(new Error(`round ${r + 1}: ${resumed} of ${o.clients} clients resumed within 30 s`)), 30_000).unref();
      });
      all.catch(() => {}); // awaited after the release
      const node0 = await node.cpuUs();
      const c0 = cpuUs();
      const t0 = performance.now();
      const held = (await px.ask({ cmd: "cut", expect: o.clients }, "held")).held as number;
      if (held < o.clients) throw new Error(`round ${r + 1}: ${held} of ${o.clients} clients reconnected within 10 s`);
      // The node has the closes to handle: let it finish before its resume window starts.
      await sleep(300);
      const c1 = cpuUs();
      const node1 = await node.cpuUs();
      const t1 = performance.now();
      await px.ask({ cmd: "release" }, "released");
      await all;
      const t2 = performance.now();
      const c2 = cpuUs();
      const node2 = await node.cpuUs();
      if (established > 0) throw new Error(`round ${r + 1}: ${established} clients made a new handshake instead of resuming`);
      const round: Round = {
        clientUsPerResume: round1((c2 - c0) / o.clients),
        clientDropUsPerResume: round1((c1 - c0) / o.clients),
        nodeUsPerResume: round1((node2 - node1) / o.clients),
        nodeCloseUsPerConn: round1((node1 - node0) / o.clients),
        releaseToLastMs: Math.round(t2 - t1),
        cutToLastMs: Math.round(t2 - t0),
        loadAverage: loadavg().map(round1),
      };
      rounds.push(round);
      say(`round ${r + 1}: ${JSON.stringify(round)}`);
      await sleep(300);
    }

    if (session) {
      const { profile } = await session.post("Profiler.stop");
      session.disconnect();
      const clientFile = join(profDir, "resume-client.cpuprofile");
      const nodeFile = join(profDir, "resume-node.cpuprofile");
      writeFileSync(clientFile, JSON.stringify(profile));
      await node.ask({ cmd: "profile", on: false, path: nodeFile }, "profile");
      for (const [f, title] of [[clientFile, "client process"], [nodeFile, "node"]] as const) {
        console.error(`\n${formatSummary(summarise(JSON.parse(readFileSync(f, "utf8")), 30), `profile of the ${title} (${f})`)}`);
      }
    }

    const figures = {
      clients: o.clients,
      store: o.redis ? "redis" : "memory",
      rounds,
      median: {
        clientUsPerResume: median(rounds.map((x) => x.clientUsPerResume)),
        nodeUsPerResume: median(rounds.map((x) => x.nodeUsPerResume)),
        releaseToLastMs: median(rounds.map((x) => x.releaseToLastMs)),
      },
      loadAverage: loadavg().map(round1),
    };
    console.log(JSON.stringify(figures, null, 2));
    if (o.json) writeFileSync(o.json, JSON.stringify(figures, null, 2) + "\n");
  } finally {
    await Promise.race([Promise.allSettled(clients.map((c) => c.close())), sleep(5000)]);
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
    await redis?.stop();
  }
}

const i = process.argv.indexOf("--proxy");
if (i >= 0) {
  proxy(Number(process.argv[i + 1])).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e instanceof Error ? e.message : e);
      process.exit(1);
    },
  );
}
