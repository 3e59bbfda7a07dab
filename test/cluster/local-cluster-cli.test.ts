/**
 * `npm run cluster` (cli/cluster/local-cluster.ts) as a newcomer runs it after
 * `npm start`: it keeps its server key between runs by default, so clients
 * that trusted it on first use keep working, and `--fresh` makes new keys in
 * a temporary directory; its balancer port is not 9393 (where `npm start`
 * listens); its banner asks for `keygen` on a line of its own, so a `call`
 * is never skipped because me.pem already exists.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, tempDir } from "../helpers/broker.js";
import { DEFAULT_CLUSTER_PORT } from "../../cli/cluster/local-cluster.js";

const t = suite("local cluster command");
const SCRIPT = join(ROOT, "dist", "cli", "cluster", "local-cluster.js");

/** Runs `npm run cluster -- --nodes 1 --port 0 …args` until its banner, then stops it with Ctrl-C; resolves with what it printed. */
function runCluster(home: string, args: string[]): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const p: ChildProcess = spawn(process.execPath, [SCRIPT, "--nodes", "1", "--port", "0", "--log-level", "warn", ...args], {
      env: { ...process.env, PSIMBOLS_HOME: home },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const timer = setTimeout(() => (p.kill("SIGKILL"), reject(new Error(`no banner within 60 s:\n${out}`))), 60_000);
    p.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("Ctrl-C stops everything.")) p.kill("SIGINT");
    });
    p.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
    p.once("exit", (code) => (clearTimeout(timer), resolve({ out, code })));
  });
}

const fingerprintOf = (out: string) => out.match(/fingerprint +(SHA256:\S+)/)?.[1];

t("the balancer's default port is not npm start's 9393", () => {
  assert.is(DEFAULT_CLUSTER_PORT, 9500);
});

t("two runs keep one server key in $PSIMBOLS_HOME/cluster; --fresh makes another and keeps nothing", async () => {
  const home = tempDir();
  const first = await runCluster(home, []);
  const fp = fingerprintOf(first.out);
  assert.ok(fp, first.out);
  assert.ok(existsSync(join(home, "cluster", "server-key.pem")), "the server key is not kept in $PSIMBOLS_HOME/cluster");
  const second = await runCluster(home, []);
  assert.is(fingerprintOf(second.out), fp, "a second run made a new server key: clients that learnt the first would refuse it");
  const fresh = await runCluster(home, ["--fresh"]);
  const other = fingerprintOf(fresh.out);
  assert.ok(other, fresh.out);
  assert.is.not(other, fp);
  const after = await runCluster(home, []);
  assert.is(fingerprintOf(after.out), fp, "--fresh replaced the kept key");
});

t("the banner asks for keygen on a line of its own, never `keygen … && call`", async () => {
  const { out } = await runCluster(tempDir(), ["--fresh"]);
  assert.match(out, /^ {2}npx psimbols keygen -o me\.pem$/m);
  assert.match(out, /^ {2}npx psimbols call ws:\/\/\S+ whoami --key me\.pem --server-key SHA256:\S+$/m);
  assert.not.match(out, /keygen[^\n]*&&/);
});

t("--fresh with --dir is refused, naming both", async () => {
  const { out, code } = await runCluster(tempDir(), ["--fresh", "--dir", tempDir()]);
  assert.is.not(code, 0);
  assert.match(out, "--fresh and --dir exclude each other");
});

t.run();
