/**
 * The docker-compose topology from local processes, for tests and demos
 * where no Docker engine runs: one `redis-server` of its own (a free port,
 * never 6379, nothing kept on disk), N `psimbols serve` nodes sharing one
 * server key and one key-wrapping key, and HAProxy (Debian's `haproxy`,
 * installed through apt when missing) running deploy/haproxy.cfg — the same
 * file docker-compose.yml mounts, copied with its server lines (between the
 * "BEGIN SERVERS" and "END SERVERS" markers) replaced by the local nodes.
 *
 *     npm run cluster -- --nodes 3 --port 9393
 *
 * prints the balancer URL and the server fingerprint, and stops everything
 * on SIGINT or SIGTERM. Tests use {@link startCluster}.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { KeyType } from "../../shared/crypto.js";
import { generateKeyFile, loadKey } from "../../node/key-files.js";
import { answersPing, findOnPath, freePort } from "./net.js";
import { type SentinelSet, startSentinelSet } from "./sentinel.js";
import { HAPROXY_TLS_CONFIG, selfSignedCertificate } from "./tls.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "bin", "psimbols.js");
/** The one HAProxy config, shared with docker-compose.yml. */
export const HAPROXY_CONFIG = join(ROOT, "deploy", "haproxy.cfg");
const BEGIN_SERVERS = /^[ \t]*# BEGIN SERVERS\b.*$/m;
const END_SERVERS = /^[ \t]*# END SERVERS\b.*$/m;

const NODE_START_MS = 20_000;
const BALANCER_START_MS = 15_000;
const STOP_GRACE_MS = 5_000;
const OUTPUT_KEEP = 64 * 1024;

/** Options of {@link startCluster}. */
export interface ClusterOptions {
  /** Broker nodes. Default 3. */
  nodes?: number;
  /** Balancer port. Default 0: a free port. */
  port?: number;
  /** Balancer address. Default 127.0.0.1 (nodes and Redis always listen on 127.0.0.1). */
  host?: string;
  /**
   * Holds server-key.pem, wrap-key, haproxy.cfg and the nodes' data
   * directories; a key found there is reused. Default: a temporary directory,
   * removed by stop().
   */
  dir?: string;
  /** Redis's port on 127.0.0.1. Default 0: a free port. */
  redisPort?: number;
  /** Extra `psimbols serve` arguments for every node. */
  nodeArgs?: string[];
  /** Extra environment for the nodes. */
  env?: Record<string, string>;
  /** The nodes' --log-level. Default `PSIMBOLS_LOG_LEVEL` or warn. */
  logLevel?: string;
  /** Copy every process's output to stderr, each line prefixed with its name. Default false (kept, shown on failure). */
  echo?: boolean;
  /**
   * On SIGINT, SIGTERM or SIGHUP of this process, SIGKILL every process of the
   * cluster and re-raise the signal. Default true; the CLI stops gracefully instead.
   */
  killOnSignal?: boolean;
  /** Progress messages. Default: none. */
  say?: (message: string) => void;
  /**
   * Redis through Sentinel: a master, a replica and three sentinels
   * (deploy/sentinel.conf) instead of one redis-server; nodes get a
   * `redis+sentinel://` address. Default false.
   */
  sentinel?: boolean;
  /**
   * TLS at HAProxy: a wss:// frontend (deploy/haproxy-tls.cfg) on this port
   * (0: a free one) with a self-signed certificate made by openssl. Default: none.
   */
  tlsPort?: number;
  /**
   * Also start the Python example backend (examples/backend-python/app.py) and
   * point every node's `--upstream` and `--authorize` at it, signed with a
   * fresh secret (docs/BACKEND.md §1). `allow`: the fingerprints its authorize hook
   * allows (default every key). Default: no backend.
   */
  app?: boolean | { allow?: string[] };
}

/** One process of the cluster. */
export interface ClusterProcess {
  readonly name: string;
  readonly proc: ChildProcess;
  /** What it printed lately (stdout and stderr, last 64 KiB). */
  output(): string;
  /** True until it exits. */
  alive(): boolean;
  /** Sends `signal` (default SIGTERM) and waits until it exits. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A broker node. */
export interface ClusterNode extends ClusterProcess {
  /** Its own port on 127.0.0.1 (WebSocket and HTTP: /metrics, /readyz). */
  readonly port: number;
  /** `ws://127.0.0.1:<port>/`: the node itself, bypassing the balancer. */
  readonly url: string;
}

/** A running local cluster. */
export interface Cluster {
  /** The balancer's URL: what clients connect to. */
  readonly url: string;
  /** The server key fingerprint shared by every node: what clients pin. */
  readonly fingerprint: string;
  readonly dir: string;
  readonly serverKeyFile: string;
  /** The key-wrapping key (base64url) every node got in PSIMBOLS_WRAP_KEY. */
  readonly wrapKey: string;
  readonly nodes: ClusterNode[];
  /**
   * The Redis master as started, with the address the nodes got (`url`: a
   * `redis+sentinel://` one with `sentinel`, where the master may move).
   */
  readonly redis: ClusterProcess & { readonly url: string; readonly port: number };
  /** With `sentinel`: the master, replica and sentinels. */
  readonly sentinel?: SentinelSet;
  /** With `tlsPort`: `wss://localhost:<port>/`, and the certificate clients must trust. */
  readonly tls?: { readonly url: string; readonly port: number; readonly certFile: string };
  readonly haproxy: ClusterProcess & { readonly port: number; readonly config: string };
  /** The example backend, when started (`app` option): its URL and the signing secret the nodes use. */
  readonly app: (ClusterProcess & { readonly url: string; readonly secret: string }) | undefined;
  /** Stops HAProxy, the nodes (SIGTERM, then SIGKILL after 5 s) and Redis. Idempotent. */
  stop(): Promise<void>;
}

// ------------------------------------------------------------------ processes

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function killAllNow(): void {
  for (const p of live) {
    try {
      p.kill("SIGKILL");
    } catch {
      // gone already
    }
  }
  live.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", killAllNow);
}

function launch(name: string, command: string, args: string[], options: { env?: NodeJS.ProcessEnv; echo: boolean; cwd?: string }): ClusterProcess {
  installExitHook();
  // Own process group: a Ctrl-C in the terminal reaches the launcher, which stops them in order.
  const proc = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
  live.add(proc);
  let out = "";
  let partial = "";
  const keep = (d: string): void => {
    out = (out + d).slice(-OUTPUT_KEEP);
    if (!options.echo) return;
    const lines = (partial + d).split("\n");
    partial = lines.pop() ?? "";
    for (const l of lines) process.stderr.write(`[${name}] ${l}\n`);
  };
  proc.stdout!.setEncoding("utf8").on("data", keep);
  proc.stderr!.setEncoding("utf8").on("data", keep);
  let exited = false;
  const exit = new Promise<void>((r) =>
    proc.once("exit", () => {
      exited = true;
      live.delete(proc);
      r();
    }),
  );
  proc.once("error", (e) => {
    out += `\n${name}: ${e.message}\n`;
    exited = true;
    live.delete(proc);
  });
  return {
    name,
    proc,
    output: () => out,
    alive: () => !exited && proc.exitCode === null && proc.signalCode === null,
    async kill(signal: NodeJS.Signals = "SIGTERM") {
      if (exited || proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      await exit;
    },
  };
}

/** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
async function stopProcess(p: ClusterProcess, graceMs = STOP_GRACE_MS): Promise<void> {
  if (!p.alive()) return;
  const timer = setTimeout(() => {
    if (p.alive()) p.proc.kill("SIGKILL");
  }, graceMs);
  await p.kill("SIGTERM");
  clearTimeout(timer);
}

function exitText(p: ClusterProcess): string {
  return p.proc.signalCode ?? String(p.proc.exitCode);
}

// ------------------------------------------------------------------ programs



/**
 * Finds `program`, installing Debian's `pkg` through apt when it is missing.
 * @throws Error saying what to install when it cannot be installed here.
 */
async function ensureProgram(program: string, pkg: string, say: (m: string) => void): Promise<string> {
  const found = findOnPath(program);
  if (found) return found;
  const hint = `hint: install Debian's ${pkg} package (apt-get install ${pkg}) and run again`;
  if (process.getuid?.() !== 0 || !findOnPath("apt-get")) {
    throw new Error(`${program} is not installed and cannot be installed here (that needs root and apt-get)\n${hint}`);
  }
  say(`${program} is missing: installing Debian's ${pkg} package through apt ...`);
  const install = `DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=120 ${pkg}`;
  // Without an update first when the package lists already know it (fast, and no lock on the lists).
  const p = launch("apt-get", "sh", ["-c", `${install} || (apt-get update -qq && ${install})`], { echo: false });
  await new Promise<void>((r) => p.proc.once("exit", () => r()));
  const bin = findOnPath(program);
  if (p.proc.exitCode !== 0 || !bin) {
    throw new Error(`apt-get could not install ${pkg} (exit ${exitText(p)}):\n${p.output().trim().split("\n").slice(-10).join("\n")}\n${hint}`);
  }
  return bin;
}

// ------------------------------------------------------------------ network


/** @throws Error when `host:port` cannot be listened on (in use, or not an address of this machine). */
async function checkBindable(host: string, port: number): Promise<void> {
  await new Promise<void>((res, rej) => {
    const s = createServer();
    s.once("error", (e: NodeJS.ErrnoException) =>
      rej(new Error(e.code === "EADDRINUSE" ? `port ${port} on ${host} is in use: pick another (--port)` : `cannot listen on ${host}:${port}: ${e.message}`)),
    );
    s.listen(port, host, () => s.close(() => res()));
  });
}


async function httpStatus(url: string): Promise<number | undefined> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ haproxy.cfg

/**
 * deploy/haproxy.cfg with the lines between its server markers replaced by
 * one `server <name> <address>` line each. The markers stay.
 * @throws Error when the markers are missing.
 */
export function haproxyConfigFor(servers: { name: string; address: string }[], source = readFileSync(HAPROXY_CONFIG, "utf8")): string {
  const begin = BEGIN_SERVERS.exec(source);
  const end = END_SERVERS.exec(source);
  if (!begin || !end || end.index < begin.index) {
    throw new Error(`${HAPROXY_CONFIG} has no "# BEGIN SERVERS" ... "# END SERVERS" block for the server lines`);
  }
  const indent = /^[ \t]*/.exec(begin[0])![0];
  const lines = servers.map((s) => `${indent}server ${s.name} ${s.address}\n`).join("");
  const afterBegin = begin.index + begin[0].length + 1;
  return source.slice(0, afterBegin) + lines + source.slice(end.index);
}

// ------------------------------------------------------------------ cluster

/**
 * Starts Redis, `nodes` broker nodes and HAProxy in front of them; resolves
 * once a request through the balancer reaches a ready node.
 * @throws Error with the failing process's output; everything started is stopped.
 */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const n = options.nodes ?? 3;
  if (!Number.isSafeInteger(n) || n < 1 || n > 64) throw new Error("nodes must be an integer from 1 to 64");
  const host = options.host ?? "127.0.0.1";
  const say = options.say ?? (() => {});
  const echo = options.echo === true;
  const logLevel = options.logLevel ?? process.env.PSIMBOLS_LOG_LEVEL ?? "warn";

  const [redisBin, haproxyBin] = [await ensureProgram("redis-server", "redis-server", say), await ensureProgram("haproxy", "haproxy", say)];
  if (!existsSync(CLI) || !existsSync(join(ROOT, "dist", "cli", "main.js"))) {
    throw new Error("psimbols is not built\nhint: run `npm run build` first");
  }
  const lbPort = options.port || (await freePort());
  await checkBindable(host, lbPort);
  const urlHost = host === "0.0.0.0" ? "127.0.0.1" : host.includes(":") ? `[${host === "::" ? "::1" : host}]` : host;
  const url = `ws://${urlHost}:${lbPort}/`;

  const ownDir = options.dir === undefined;
  const dir = ownDir ? mkdtempSync(join(tmpdir(), "psimbols-cluster-")) : resolve(options.dir!);
  mkdirSync(dir, { recursive: true, mode: 0o700 });

  const started: ClusterProcess[] = [];
  let onSignal: ((s: NodeJS.Signals) => void) | undefined;
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const unhook = (): void => {
    if (onSignal) for (const s of signals) process.removeListener(s, onSignal);
    onSignal = undefined;
  };
  if (options.killOnSignal !== false) {
    onSignal = (s) => {
      unhook();
      killAllNow();
      process.kill(process.pid, s);
    };
    for (const s of signals) process.once(s, onSignal);
  }
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      // Balancer first (no new connections), then the nodes, then their store.
      const of = (names: (name: string) => boolean) => Promise.all(started.filter((p) => names(p.name)).map((p) => stopProcess(p)));
      await of((name) => name === "haproxy");
      const store = (name: string) => name.startsWith("redis") || name.startsWith("sentinel");
      await of((name) => name !== "haproxy" && name !== "app" && !store(name));
      await of((name) => name.startsWith("sentinel") || name === "app");
      await of(store);
      unhook();
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    })());

  try {
    // The shared secrets: one server key for every node, one key-wrapping key.
    const serverKeyFile = join(dir, "server-key.pem");
    const serverKey = existsSync(serverKeyFile) ? await loadKey(serverKeyFile) : await generateKeyFile(KeyType.ed25519, serverKeyFile);
    const fingerprint = serverKey.public.fingerprint;
    const wrapKeyFile = join(dir, "wrap-key");
    let wrapKey = existsSync(wrapKeyFile) ? readFileSync(wrapKeyFile, "utf8").trim() : "";
    if (!wrapKey) {
      wrapKey = randomBytes(32).toString("base64url");
      writeFileSync(wrapKeyFile, `${wrapKey}\n`, { mode: 0o600 });
    }
    say(`keys in ${dir}: server key ${fingerprint}`);

    // Redis: through Sentinel (master, replica, three sentinels), or one server.
    let sentinel: SentinelSet | undefined;
    if (options.sentinel) {
      sentinel = await startSentinelSet(redisBin, dir, (name, command, args) => launch(name, command, args, { echo }), started);
      say(`redis master :${sentinel.master.port}, replica :${sentinel.replica.port}, sentinels ${sentinel.sentinels.map((x) => `:${x.port}`).join(" ")}`);
    }
    const redisPort = sentinel?.master.port ?? (options.redisPort || (await freePort()));
    const redis = sentinel?.master ?? launch(
      "redis",
      redisBin,
      ["--port", String(redisPort), "--bind", "127.0.0.1", "--loglevel", "warning", "--protected-mode", "yes", "--save", "", "--appendonly", "no", "--dir", dir],
      { echo },
    );
    if (!sentinel) started.push(redis);
    for (const deadline = Date.now() + 5000; !(await answersPing(redisPort)); await sleep(25)) {
      if (!redis.alive() || Date.now() > deadline) throw new Error(`redis-server on port ${redisPort} did not start (${exitText(redis)}):\n${redis.output()}`);
    }
    const redisUrl = sentinel?.url ?? `redis://127.0.0.1:${redisPort}`;
    say(`redis on ${redisUrl}`);

    // The example backend, when asked for: the nodes forward to it and ask it (docs/BACKEND.md).
    // The example backend speaks plain RESP to one address: under Sentinel, the first master (it does not follow a failover).
    const app = options.app ? await startApp(dir, options.app === true ? {} : options.app, sentinel ? `redis://127.0.0.1:${redisPort}` : redisUrl, echo, say) : undefined;
    if (app) started.push(app);
    const appArgs = app ? ["--upstream", `${app.url}/rpc`, "--authorize", `${app.url}/authorize`] : [];

    // The nodes, each on a port of its own.
    const env = { ...process.env, ...options.env, PSIMBOLS_WRAP_KEY: wrapKey, PSIMBOLS_LOG_LEVEL: logLevel, ...(app ? { PSIMBOLS_UPSTREAM_SECRET: app.secret } : {}) };
    const nodes = await Promise.all(
      Array.from({ length: n }, async (_, i): Promise<ClusterNode> => {
        const name = `node${i + 1}`;
        const dataDir = join(dir, name);
        const args = [
          CLI, "serve", "--port", "0", "--host", "127.0.0.1", "--node", name,
          "--redis", redisUrl, "--server-key-file", serverKeyFile, "--trust-proxy", "--source", url,
          "--data-dir", dataDir, "--log-level", logLevel, ...appArgs, ...(options.nodeArgs ?? []),
        ];
        const p = launch(name, process.execPath, args, { env: { ...env, PSIMBOLS_HOME: dataDir }, echo });
        started.push(p);
        const deadline = Date.now() + NODE_START_MS;
        let m: RegExpMatchArray | null = null;
        while (!(m = p.output().match(/listening on ws:\/\/[^/\s]*:(\d+)\/ fingerprint (SHA256:\S+)/))) {
          if (!p.alive()) throw new Error(`${name} exited with ${exitText(p)} before listening:\n${p.output()}`);
          if (Date.now() > deadline) throw new Error(`${name} did not start in ${NODE_START_MS / 1000} s:\n${p.output()}`);
          await sleep(25);
        }
        if (m[2] !== fingerprint) throw new Error(`${name} uses server key ${m[2]}, not the cluster's ${fingerprint}:\n${p.output()}`);
        const port = Number(m[1]);
        return Object.assign(p, { port, url: `ws://127.0.0.1:${port}/` });
      }),
    );
    say(`nodes: ${nodes.map((x) => `${x.name} ${x.url}`).join(", ")}`);
    // With `-- --api-listen 127.0.0.1:0`, each node prints its server API address (docs/BACKEND.md).
    const apis = nodes.flatMap((x) => /server API listening on (\S+)/.exec(x.output())?.[1]?.replace(/^/, `${x.name} `) ?? []);
    if (apis.length > 0) say(`server API: ${apis.join(", ")} (tokens: psimbols api-token create --redis ${redisUrl})`);

    // HAProxy, on the shared config with the server lines for these nodes.
    const config = join(dir, "haproxy.cfg");
    writeFileSync(config, haproxyConfigFor(nodes.map((x) => ({ name: x.name, address: `127.0.0.1:${x.port}` }))));
    const lbEnv: NodeJS.ProcessEnv = { ...process.env, PSIMBOLS_LB_BIND: `${host.includes(":") ? `[${host}]` : host}:${lbPort}` };
    const configs = ["-f", config];
    let tls: Cluster["tls"];
    if (options.tlsPort !== undefined) {
      // TLS at the balancer: the shipped wss:// frontend, a self-signed certificate made here.
      const cert = selfSignedCertificate(dir);
      const tlsPort = options.tlsPort || (await freePort());
      await checkBindable(host, tlsPort);
      lbEnv.PSIMBOLS_LB_TLS_BIND = `${host.includes(":") ? `[${host}]` : host}:${tlsPort}`;
      lbEnv.PSIMBOLS_TLS_CERT = cert.pemFile;
      configs.push("-f", HAPROXY_TLS_CONFIG);
      tls = { url: `wss://localhost:${tlsPort}/`, port: tlsPort, certFile: cert.certFile };
    }
    const check = spawnSync(haproxyBin, ["-c", "-q", ...configs], { env: lbEnv, encoding: "utf8" });
    if (check.status !== 0) throw new Error(`haproxy rejects ${config} (from ${HAPROXY_CONFIG}):\n${check.stdout}${check.stderr}`);
    const haproxy = launch("haproxy", haproxyBin, ["-db", ...configs], { env: lbEnv, echo, cwd: dir });
    started.push(haproxy);
    const readyz = `http://${urlHost}:${lbPort}/readyz`;
    for (const deadline = Date.now() + BALANCER_START_MS; (await httpStatus(readyz)) !== 200; await sleep(50)) {
      if (!haproxy.alive()) throw new Error(`haproxy exited with ${exitText(haproxy)}:\n${haproxy.output()}`);
      if (Date.now() > deadline) throw new Error(`no ready node answered through haproxy at ${readyz} in ${BALANCER_START_MS / 1000} s:\n${haproxy.output()}`);
    }
    say(`haproxy on ${url}`);

    return {
      url,
      fingerprint,
      dir,
      serverKeyFile,
      wrapKey,
      nodes,
      redis: Object.assign(redis, { url: redisUrl, port: redisPort }),
      ...(sentinel ? { sentinel } : {}),
      ...(tls ? { tls } : {}),
      haproxy: Object.assign(haproxy, { port: lbPort, config }),
      app,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

// ------------------------------------------------------------------ example backend

const APP_START_MS = 10_000;

/**
 * Starts examples/backend-python/app.py on a free port with a signing secret
 * kept in `dir`/app-secret (reused, like the server key), reading the
 * cluster's events stream from `redisUrl`.
 * @throws Error when python3 is missing or the example does not start.
 */
async function startApp(dir: string, o: { allow?: string[] }, redisUrl: string, echo: boolean, say: (m: string) => void): Promise<ClusterProcess & { url: string; secret: string }> {
  const python = findOnPath("python3");
  if (!python) throw new Error("--app runs examples/backend-python/app.py, and python3 is not on PATH\nhint: install python3 (apt-get install python3)");
  const secretFile = join(dir, "app-secret");
  let secret = existsSync(secretFile) ? readFileSync(secretFile, "utf8").trim() : "";
  if (!secret) {
    secret = `whsec_${randomBytes(32).toString("base64")}`;
    writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  }
  const port = await freePort();
  // APP_REDIS_URL: it also reads the nodes' lifecycle events from the cluster's Redis stream.
  const env = { ...process.env, PSIMBOLS_UPSTREAM_SECRET: secret, APP_HOST: "127.0.0.1", APP_PORT: String(port), APP_ALLOW: o.allow?.join(",") || "*", APP_REDIS_URL: redisUrl };
  const p = launch("app", python, [join(ROOT, "examples", "backend-python", "app.py")], { env, echo });
  for (const deadline = Date.now() + APP_START_MS; !p.output().includes("backend listening on"); await sleep(25)) {
    if (!p.alive()) throw new Error(`the example backend exited with ${exitText(p)}:\n${p.output()}`);
    if (Date.now() > deadline) throw new Error(`the example backend did not start in ${APP_START_MS / 1000} s:\n${p.output()}`);
  }
  const url = `http://127.0.0.1:${port}`;
  say(`example backend (python) on ${url}: upstream ${url}/rpc, authorize ${url}/authorize`);
  return Object.assign(p, { url, secret });
}

// ------------------------------------------------------------------ CLI

/** The balancer's port by default: not 9393, where `npm start` (`psimbols serve`) listens. */
export const DEFAULT_CLUSTER_PORT = 9500;

/** Where the CLI keeps the cluster's keys by default: `$PSIMBOLS_HOME/cluster`, else `~/.psimbols/cluster`. */
export function defaultClusterDir(): string {
  return join(process.env.PSIMBOLS_HOME ?? join(homedir(), ".psimbols"), "cluster");
}

const USAGE = `usage: npm run cluster -- [--nodes N] [--port P] [--host ADDR] [--redis-port R] [--dir DIR | --fresh] [--log-level LEVEL] [--sentinel] [--tls] [--tls-port P] [--app [--app-allow FPS]] [-- serve options...]

Starts the docker-compose topology from local processes: its own redis-server,
N psimbols nodes sharing one server key and one wrap key, and HAProxy (Debian's
haproxy package) with deploy/haproxy.cfg in front. Ctrl-C stops everything.

  --nodes N         broker nodes (default 3)
  --port P          balancer port (default 9500, so a broker of \`npm start\` on 9393
                    can keep running; 0 for any free port)
  --host ADDR       balancer address (default 127.0.0.1)
  --redis-port R    Redis's port on 127.0.0.1 (default: a free port)
  --dir DIR         keep server-key.pem, wrap-key and haproxy.cfg here, and reuse
                    them next time, so clients keep trusting the same server key
                    (default: $PSIMBOLS_HOME/cluster, else ~/.psimbols/cluster)
  --fresh           new keys in a temporary directory, removed on exit (clients
                    that learnt the kept key then refuse this one)
  --log-level L     nodes' log level (default info)
  --sentinel        Redis through Sentinel: a master, a replica and three sentinels
                    (deploy/sentinel.conf); nodes get redis+sentinel://...
  --tls             also wss:// at HAProxy (deploy/haproxy-tls.cfg), with a
                    self-signed certificate made by openssl
  --tls-port P      its port (default 9443; implies --tls)
  --app             also run examples/backend-python/app.py; every node forwards
                    ops to it (--upstream) and asks it (--authorize)
  --app-allow FPS   comma-separated fingerprints its authorize hook allows (default all)
  -- ...            further arguments are passed to every \`psimbols serve\``;

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      nodes: { type: "string", short: "n" },
      port: { type: "string", short: "p" },
      host: { type: "string" },
      "redis-port": { type: "string" },
      dir: { type: "string" },
      fresh: { type: "boolean" },
      "log-level": { type: "string" },
      sentinel: { type: "boolean" },
      tls: { type: "boolean" },
      "tls-port": { type: "string" },
      app: { type: "boolean" },
      "app-allow": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(USAGE);
  const int = (v: string | undefined, d: number, what: string): number => {
    const x = v === undefined ? d : Number(v);
    if (!Number.isSafeInteger(x) || x < 0) throw new Error(`${what} expects a non-negative integer, not ${v}`);
    return x;
  };
  const options: ClusterOptions = {
    nodes: int(values.nodes, 3, "--nodes"),
    port: int(values.port, DEFAULT_CLUSTER_PORT, "--port"),
    host: values.host ?? "127.0.0.1",
    logLevel: values["log-level"] ?? process.env.PSIMBOLS_LOG_LEVEL ?? "info",
    nodeArgs: positionals,
    echo: true,
    killOnSignal: false,
    say: (m) => console.error(`cluster: ${m}`),
  };
  if (values.fresh && values.dir !== undefined) throw new Error("--fresh and --dir exclude each other: --fresh makes new keys in a temporary directory");
  if (!values.fresh) options.dir = values.dir ?? defaultClusterDir();
  if (values.sentinel) options.sentinel = true;
  if (values.tls || values["tls-port"] !== undefined) options.tlsPort = int(values["tls-port"], 9443, "--tls-port");
  if (values["redis-port"] !== undefined) options.redisPort = int(values["redis-port"], 0, "--redis-port");
  if (values.app) options.app = values["app-allow"] ? { allow: values["app-allow"].split(",").map((x) => x.trim()) } : true;
  else if (values["app-allow"] !== undefined) throw new Error("--app-allow needs --app");

  let cluster: Cluster | undefined;
  let stopping = false;
  const stopAll = (code: number): void => {
    if (stopping) return;
    stopping = true;
    console.error("cluster: stopping ...");
    void (cluster?.stop() ?? Promise.resolve()).then(() => process.exit(code));
  };
  // Until the cluster is up, a signal kills what has started (startCluster has no stop to call yet).
  const early = (s: NodeJS.Signals): void => {
    killAllNow();
    process.exit(s === "SIGINT" ? 130 : 143);
  };
  process.on("SIGINT", early).on("SIGTERM", early);
  cluster = await startCluster(options);
  process.removeListener("SIGINT", early).removeListener("SIGTERM", early);
  process.on("SIGINT", () => stopAll(0)).on("SIGTERM", () => stopAll(0));

  // `npm run` does not pass a SIGTERM on to its script: stop when the parent goes away.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent && !stopping) {
      console.error("cluster: parent process gone");
      stopAll(0);
    }
  }, 1000).unref();

  for (const node of cluster.nodes) {
    node.proc.once("exit", (code, signal) => {
      if (!stopping) console.error(`cluster: ${node.name} exited (${signal ?? code}); the others go on`);
    });
  }
  // Under Sentinel the master may die: that is a failover, not the end of the cluster.
  for (const p of cluster.sentinel ? [cluster.haproxy] : [cluster.redis, cluster.haproxy]) {
    p.proc.once("exit", (code, signal) => {
      if (stopping) return;
      console.error(`cluster: ${p.name} exited (${signal ?? code}): stopping the cluster`);
      stopAll(1);
    });
  }
  console.log(
    [
      "",
      `psimbols cluster: ${cluster.nodes.length} node(s) behind HAProxy`,
      `  url          ${cluster.url}`,
      `  fingerprint  ${cluster.fingerprint}`,
      `  redis        ${cluster.redis.url}`,
      ...(cluster.sentinel ? [`  sentinel     master :${cluster.sentinel.master.port}, replica :${cluster.sentinel.replica.port}, sentinels ${cluster.sentinel.sentinels.map((x) => `:${x.port}`).join(" ")}`] : []),
      ...(cluster.tls ? [`  wss          ${cluster.tls.url} (self-signed: trust ${cluster.tls.certFile}, e.g. NODE_EXTRA_CA_CERTS)`] : []),
      ...cluster.nodes.map((x) => `  ${x.name.padEnd(12)} ${x.url} (pid ${x.proc.pid}; /metrics at http://127.0.0.1:${x.port}/metrics)`),
      `  keys         ${cluster.serverKeyFile}, wrap key in ${join(cluster.dir, "wrap-key")}`,
      `  haproxy.cfg  ${cluster.haproxy.config}`,
      ...(cluster.app ? [`  app          ${cluster.app.url} (examples/backend-python; secret in ${join(cluster.dir, "app-secret")})`] : []),
      "",
      "try (keygen once: it refuses to overwrite an existing me.pem):",
      "  npx psimbols keygen -o me.pem",
      `  npx psimbols call ${cluster.url} whoami --key me.pem --server-key ${cluster.fingerprint}`,
      ...(cluster.app ? [`  npx psimbols call ${cluster.url} kv.put '{"key":"colour","value":"teal"}' --key me.pem --server-key ${cluster.fingerprint}`] : []),
      "operate it from another shell (commands that write Redis need the wrap key):",
      `  export PSIMBOLS_WRAP_KEY=$(cat ${join(cluster.dir, "wrap-key")})`,
      `  npx psimbols channels list --redis ${cluster.redis.url}          # or: --wrap-key-file ${join(cluster.dir, "wrap-key")}`,
      "Ctrl-C stops everything.",
      "",
    ].join("\n"),
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    killAllNow();
    process.exit(1);
  });
}
