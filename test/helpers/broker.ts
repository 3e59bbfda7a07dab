/**
 * Starts real broker processes (`node bin/psimbols.js serve`) on free ports
 * for integration tests, and stops them. Each gets its own data directory.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const CLI = join(ROOT, "bin", "psimbols.js");

export interface RunningBroker {
  url: string;
  port: number;
  fingerprint: string;
  dataDir: string;
  proc: ChildProcess;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

/** Temporary directories to remove at exit: one "exit" listener for all of them (one each tripped MaxListenersExceededWarning). */
const tempDirs: string[] = [];
process.on("exit", () => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh temporary directory, removed at process exit. */
export function tempDir(prefix = "psimbols-test-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

/** Starts `psimbols serve --port 0 …args` (the repository's CLI, or `options.cli`) and waits for its listening line. */
export async function startBroker(args: string[] = [], options: { dataDir?: string; env?: Record<string, string>; cli?: string } = {}): Promise<RunningBroker> {
  const dataDir = options.dataDir ?? tempDir();
  const proc = spawn(process.execPath, [options.cli ?? CLI, "serve", "--port", "0", "--data-dir", dataDir, ...args], {
    env: { ...process.env, PSIMBOLS_HOME: dataDir, PSIMBOLS_LOG_LEVEL: process.env.PSIMBOLS_LOG_LEVEL ?? "warn", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(proc);
  let out = "";
  proc.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  proc.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => (running.delete(proc), r(code))));
  const line = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`broker did not start in 15 s:\n${out}`)), 15_000);
    const check = () => {
      const m = out.match(/listening on ws:\/\/([^/]+)\/ fingerprint (SHA256:\S+)/);
      if (m) {
        clearTimeout(t);
        resolve(m);
      }
    };
    proc.stdout!.on("data", check);
    void exited.then((code) => {
      clearTimeout(t);
      reject(new Error(`broker exited with ${code} before listening:\n${out}`));
    });
  });
  const port = Number(line[1]!.split(":").pop());
  return {
    url: `ws://127.0.0.1:${port}/`,
    port,
    fingerprint: line[2]!,
    dataDir,
    proc,
    output: () => out,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Runs the CLI to completion. */
/**
 * A new keys file registering a fresh operator key (`keygen`, then `keys add --role operator`, through
 * the CLI). @throws when either command fails, with its stderr.
 */
export async function operatorKeys(): Promise<{ keyFile: string; keysFile: string }> {
  const dir = tempDir();
  const keyFile = join(dir, "operator.pem");
  const keysFile = join(dir, "keys.json");
  for (const args of [["keygen", "-o", keyFile], ["keys", "add", keyFile, "--role", "operator", "--file", keysFile]]) {
    const r = await runCli(args);
    if (r.code !== 0) throw new Error(`psimbols ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  }
  return { keyFile, keysFile };
}

export async function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  proc.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  proc.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const code = await new Promise<number | null>((r) => proc.once("exit", r));
  return { code, stdout, stderr };
}
