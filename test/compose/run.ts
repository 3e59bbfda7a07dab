/**
 * `npm run compose:test`: docker-compose.yml and its overrides, run for real
 * under podman on locally built stand-ins of the base images (docs/COMPOSE.md).
 *
 * Steps, each measured and printed; any failure ends the run with exit 1:
 *  1. stand-in base images (deploy/standins/build.sh), then the project's
 *     Dockerfile built for real (`podman build --format docker`, so that its
 *     HEALTHCHECK is kept);
 *  2. `up` with 3 nodes: time until HAProxy answers /readyz and until all 3
 *     nodes serve; each node container's HEALTHCHECK run once;
 *  3. a client through HAProxy; its node's container killed (SIGKILL): the
 *     client resumes its channel on another node (no new handshake);
 *  4. scaled to 5 nodes: time until all 5 serve through HAProxy (DNS);
 *  5. the Sentinel override: the Redis master container killed; time until a
 *     fresh handshake succeeds again, and the old master, restarted, rejoins
 *     as a replica (deploy/redis-start.sh in the image's own shell);
 *  6. the TLS override: a wss:// call through HAProxy's TLS frontend;
 *  7. teardown: every container, network, volume and image the run made.
 *
 * Traffic goes only to loopback (HAProxy's published ports) and to the
 * containers on the run's own podman network. Bounded: every wait has a
 * deadline. Options: --keep-images (keep the stand-ins and the image for the
 * next run), PSIMBOLS_COMPOSE_TIMEOUT_S (whole run, default 900).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { generateSigningKey } from "../../shared/crypto.js";
import { type Client, connect } from "../../client/node.js";
import { selfSignedCertificate } from "../../cli/cluster/tls.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CONF = join(ROOT, "deploy", "standins", "containers.conf");
const PROJECT = `psct${process.pid}`;
const IMAGE = "psimbols:local";
const keepImages = process.argv.includes("--keep-images");
const started = Date.now();
const figures: Record<string, number | string> = {};

const log = (s: string): void => void process.stderr.write(`[compose ${((Date.now() - started) / 1000).toFixed(1)}s] ${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const baseEnv: NodeJS.ProcessEnv = {
  ...process.env,
  CONTAINERS_CONF: CONF,
  BUILDAH_FORMAT: "docker",
  PSIMBOLS_WRAP_KEY: randomBytes(32).toString("base64url"),
  PSIMBOLS_UPSTREAM_SECRET: `whsec_${randomBytes(32).toString("base64")}`,
};

/** Runs a command; its output when it succeeds, else throws with what it printed. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = baseEnv, timeoutMs = 600_000): string {
  const r = spawnSync(cmd, args, { cwd: ROOT, env, encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${(r.stdout ?? "").slice(-2000)}\n${(r.stderr ?? "").slice(-4000)}`);
  return r.stdout;
}

/** The Python that runs podman-compose (its script's `#!` line), for deploy/standins/podman-compose.py. */
function composePython(): string {
  const path = run("sh", ["-c", "command -v podman-compose"]).trim();
  const line = spawnSync("head", ["-n", "1", path], { encoding: "utf8" }).stdout;
  return /^#!\s*(\S+)/.exec(line)?.[1] ?? "/usr/bin/python3";
}

/** podman-compose with Compose's merge rule for `command` and `entrypoint` (deploy/standins/podman-compose.py). */
function composeArgs(files: string[], args: string[]): string[] {
  return [join(ROOT, "deploy", "standins", "podman-compose.py"), "-p", PROJECT, ...files.flatMap((f) => ["-f", f]), ...args];
}

function compose(files: string[], args: string[], env: NodeJS.ProcessEnv): string {
  return run(composePython(), composeArgs(files, args), env);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (a && typeof a === "object" ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

async function until<T>(what: string, deadlineMs: number, f: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + deadlineMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${deadlineMs / 1000} s${last ? ` (last: ${last instanceof Error ? last.message : String(last)})` : ""}`);
    await sleep(250);
  }
}

/** Containers of the run's project: name → 12-character id (a node's hostname, which it reports as `node`). */
function containers(): Map<string, string> {
  const out = run("podman", ["ps", "-a", "--filter", `label=io.podman.compose.project=${PROJECT}`, "--format", "{{.Names}} {{.ID}}"]);
  return new Map(out.trim().split("\n").filter(Boolean).map((l) => l.split(" ") as [string, string]));
}

async function readyz(port: number): Promise<boolean> {
  const r = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
  await r.arrayBuffer();
  return r.ok;
}

/** The server key's fingerprint, as the `keys` service printed it. */
function serverFingerprint(): string {
  const out = run("podman", ["logs", `${PROJECT}_keys_1`]);
  const m = /server fingerprint (SHA256:\S+)/.exec(out);
  if (!m?.[1]) throw new Error(`the keys service printed no fingerprint:\n${out}`);
  return m[1];
}

/** Nodes seen through the balancer by fresh one-shot connections, until `want` distinct ones answered. */
async function nodesInRotation(url: string, serverKey: string, want: number, deadlineMs: number): Promise<Set<string>> {
  const seen = new Set<string>();
  const key = await generateSigningKey("Ed25519");
  await until(`${want} nodes in rotation`, deadlineMs, async () => {
    const c = await connect(url, { key, serverKey, reconnect: false, handshakeTimeoutMs: 5000 });
    try {
      const r = (await c.request("whoami", null, { timeoutMs: 5000 })) as { node: string };
      seen.add(r.node);
    } finally {
      c.close();
    }
    return seen.size >= want ? true : undefined;
  });
  return seen;
}

async function main(): Promise<void> {
  for (const tool of ["podman", "podman-compose", "debootstrap"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) {
      throw new Error(`${tool} is missing\nhint: apt-get install podman podman-compose runc debootstrap`);
    }
  }
  const files = ["docker-compose.yml", "deploy/standins/compose.podman.yml"];
  const work = mkdtempSync(join(tmpdir(), "psimbols-compose-"));
  const port = await freePort();
  const tlsPort = await freePort();
  const url = `ws://127.0.0.1:${port}/`;
  const env = { ...baseEnv, PSIMBOLS_PORT: String(port), PSIMBOLS_TLS_PORT: String(tlsPort), PSIMBOLS_NODES: "3", HOME: work };

  let t = Date.now();
  log("building the stand-in base images ...");
  run("bash", ["deploy/standins/build.sh"], env, 1_200_000);
  figures.standins_s = (Date.now() - t) / 1000;
  t = Date.now();
  log("building the project's Dockerfile ...");
  run("podman", ["build", "--format", "docker", "-q", "-t", IMAGE, "."], env, 1_200_000);
  figures.image_build_s = (Date.now() - t) / 1000;

  const clients: Client[] = [];
  try {
    // 2. Up with three nodes.
    t = Date.now();
    compose(files, ["up", "-d"], env);
    await until("HAProxy /readyz", 120_000, async () => ((await readyz(port)) ? true : undefined));
    figures.ready_s = (Date.now() - t) / 1000;
    const fp = serverFingerprint();
    const three = await nodesInRotation(url, fp, 3, 60_000);
    figures.three_nodes_serving_s = (Date.now() - t) / 1000;
    log(`3 nodes serve: ${[...three].join(", ")}`);
    for (const name of containers().keys()) {
      if (!/_node_\d+$/.test(name)) continue;
      const h = spawnSync("podman", ["healthcheck", "run", name], { env, encoding: "utf8" });
      if (h.status !== 0) throw new Error(`${name}: the image's HEALTHCHECK failed: ${h.stdout}${h.stderr}`);
    }

    // 3. Kill the client's node; the client resumes on another.
    const key = await generateSigningKey("Ed25519");
    let handshakes = 0;
    let resumes = 0;
    const client = await connect(url, { key, serverKey: fp, reconnect: true });
    clients.push(client);
    client.on("established", () => handshakes++);
    client.on("resumed", () => resumes++);
    const before = (await client.request("whoami", null)) as { node: string; channel: string };
    const host = before.node.split(":")[0];
    const victim = [...containers()].find(([, id]) => id === host)?.[0];
    if (!victim) throw new Error(`no container for node ${before.node}`);
    const h0 = handshakes;
    t = Date.now();
    run("podman", ["kill", "-s", "KILL", victim], env);
    const after = await until("the request after the kill", 30_000, async () => (await client.request("whoami", null, { timeoutMs: 3000 })) as { node: string; channel: string });
    figures.resume_after_kill_s = (Date.now() - t) / 1000;
    if (after.node === before.node) throw new Error(`still served by the killed node ${before.node}`);
    if (after.channel !== before.channel) throw new Error("the channel changed: a new handshake instead of a resume");
    if (handshakes !== h0 || resumes < 1) throw new Error(`expected a resume and no handshake (handshakes ${handshakes - h0}, resumes ${resumes})`);
    log(`resumed on ${after.node} ${figures.resume_after_kill_s} s after killing ${victim}`);

    // 4. Scale to five nodes (the killed one is restarted by `up`).
    t = Date.now();
    compose(files, ["up", "-d"], { ...env, PSIMBOLS_NODES: "5" });
    const five = await nodesInRotation(url, fp, 5, 90_000);
    figures.five_nodes_serving_s = (Date.now() - t) / 1000;
    log(`5 nodes serve: ${[...five].join(", ")}`);
    const still = (await client.request("whoami", null)) as { channel: string };
    if (still.channel !== before.channel) throw new Error("the client lost its channel while scaling");
    client.close();
    clients.length = 0;
    compose(files, ["down"], { ...env, PSIMBOLS_NODES: "5" });

    // 5. Sentinel: kill the master container.
    const sentinelFiles = [...files, "docker-compose.sentinel.yml"];
    const senv = { ...env, PSIMBOLS_NODES: "2" };
    t = Date.now();
    compose(sentinelFiles, ["up", "-d"], senv);
    await until("HAProxy /readyz (Sentinel)", 120_000, async () => ((await readyz(port)) ? true : undefined));
    figures.sentinel_ready_s = (Date.now() - t) / 1000;
    const k2 = await generateSigningKey("Ed25519");
    await until("a handshake (Sentinel)", 30_000, async () => {
      const c = await connect(url, { key: k2, serverKey: fp, reconnect: false });
      c.close();
      return true;
    });
    const master = `${PROJECT}_redis_1`;
    t = Date.now();
    run("podman", ["kill", "-s", "KILL", master], senv);
    await until("a handshake after the master's kill", 90_000, async () => {
      const c = await connect(url, { key: k2, serverKey: fp, reconnect: false, handshakeTimeoutMs: 4000 });
      try {
        await c.request("whoami", null, { timeoutMs: 3000 });
      } finally {
        c.close();
      }
      return true;
    });
    figures.failover_s = (Date.now() - t) / 1000;
    log(`handshakes succeed again ${figures.failover_s} s after killing the master`);
    run("podman", ["start", master], senv);
    const role = await until("the old master rejoins as a replica", 60_000, async () => {
      const r = run("podman", ["exec", master, "redis-cli", "role"], senv).split("\n")[0]?.trim();
      return r === "slave" ? r : undefined;
    });
    figures.old_master_role = role;
    compose(sentinelFiles, ["down"], senv);

    // 6. TLS at HAProxy.
    const certs = join(work, "certs");
    mkdirSync(certs);
    const cert = selfSignedCertificate(certs);
    copyFileSync(cert.pemFile, join(certs, "psimbols.pem"));
    const tenv = { ...env, PSIMBOLS_NODES: "2", PSIMBOLS_TLS_DIR: certs };
    const tlsFiles = [...files, "docker-compose.tls.yml"];
    compose(tlsFiles, ["up", "-d"], tenv);
    await until("HAProxy /readyz (TLS)", 120_000, async () => ((await readyz(port)) ? true : undefined));
    const keyFile = join(work, "me.pem");
    execFileSync("node", [join(ROOT, "bin", "psimbols.js"), "keygen", "-o", keyFile], { env: tenv, stdio: "ignore" });
    const out = await until("a wss:// call", 30_000, async () =>
      run("node", [join(ROOT, "bin", "psimbols.js"), "call", `wss://localhost:${tlsPort}/`, "whoami", "--key", keyFile, "--server-key", fp], { ...tenv, NODE_EXTRA_CA_CERTS: cert.certFile }),
    );
    if (!/"identity"/.test(out)) throw new Error(`unexpected wss:// answer: ${out}`);
    figures.tls = "ok";
    compose(tlsFiles, ["down"], tenv);
  } finally {
    for (const c of clients) c.close();
    log("tearing down ...");
    // Every container, volume and network labelled with the run's project, whatever step it stopped at.
    const label = `label=io.podman.compose.project=${PROJECT}`;
    const ids = (args: string[]): string[] => spawnSync("podman", args, { env, encoding: "utf8" }).stdout.split("\n").filter(Boolean);
    const cs = ids(["ps", "-aq", "--filter", label]);
    if (cs.length) spawnSync("podman", ["rm", "-f", "-t", "2", ...cs], { env, stdio: "ignore" });
    const vs = ids(["volume", "ls", "-q", "--filter", label]);
    if (vs.length) spawnSync("podman", ["volume", "rm", "-f", ...vs], { env, stdio: "ignore" });
    spawnSync("podman", ["network", "rm", "-f", `${PROJECT}_default`], { env, stdio: "ignore" });
    const left = ids(["ps", "-aq", "--filter", label]).length + ids(["volume", "ls", "-q", "--filter", label]).length;
    if (left > 0) log(`warning: ${left} containers or volumes of ${PROJECT} could not be removed`);
    if (!keepImages) {
      spawnSync("podman", ["rmi", "-f", IMAGE], { env, stdio: "ignore" });
      spawnSync("bash", ["deploy/standins/build.sh", "--remove"], { cwd: ROOT, env, stdio: "ignore" });
      spawnSync("podman", ["image", "prune", "-f"], { env, stdio: "ignore" });
    }
    rmSync(work, { recursive: true, force: true });
  }
}

const limit = Number(process.env.PSIMBOLS_COMPOSE_TIMEOUT_S ?? 900) * 1000;
const timer = setTimeout(() => {
  log(`the run took longer than ${limit / 1000} s`);
  process.exit(1);
}, limit);
main().then(
  () => {
    clearTimeout(timer);
    console.log(`COMPOSE ${JSON.stringify({ ...figures, total_s: (Date.now() - started) / 1000 })}`);
    console.log("compose: 1 passed, 0 failed");
  },
  (e: unknown) => {
    clearTimeout(timer);
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    console.log(`COMPOSE ${JSON.stringify(figures)}`);
    console.log("compose: 0 passed, 1 failed");
    process.exit(1);
  },
);
