/**
 * Redis with Sentinel for tests (cli/cluster/sentinel.ts's set: a master, a
 * replica, three sentinels on free ports): a launcher that keeps each
 * process's output and kills every one on exit or on `stopAll`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findOnPath } from "../../cli/cluster/net.js";
import { type Launched, type SentinelSet, startSentinelSet } from "../../cli/cluster/sentinel.js";

export interface TestSentinels {
  /** Starts the set once; later calls share it. */
  start(): Promise<SentinelSet>;
  /** Starts another process, killed with the set (e.g. a restarted server). */
  launch(name: string, command: string, args: string[], env?: NodeJS.ProcessEnv): Launched;
  /** Every process launched so far (the set's and the others), for their output. */
  started(): Launched[];
  /** SIGKILL to every process, and waits for them to exit. */
  stopAll(): Promise<void>;
}

export function testSentinels(): TestSentinels {
  const dir = mkdtempSync(join(tmpdir(), "psimbols-sentinel-"));
  const children: ChildProcess[] = [];
  const launched: Launched[] = [];
  process.on("exit", () => {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const launch = (name: string, command: string, args: string[], env?: NodeJS.ProcessEnv): Launched => {
    const proc = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...(env ? { env } : {}) });
    children.push(proc);
    let out = "";
    proc.stdout!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-16_384)));
    proc.stderr!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-16_384)));
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    const l: Launched = {
      name,
      proc,
      output: () => out,
      alive: () => proc.exitCode === null && proc.signalCode === null,
      async kill(signal: NodeJS.Signals = "SIGTERM") {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        proc.kill(signal);
        await exited;
      },
    };
    launched.push(l);
    return l;
  };
  let shared: Promise<SentinelSet> | undefined;
  return {
    start() {
      const bin = findOnPath("redis-server");
      if (!bin) throw new Error("redis-server not found on PATH (bin/test_psimbols.sh installs it)");
      return (shared ??= startSentinelSet(bin, dir, launch, []));
    },
    launch,
    started: () => [...launched],
    async stopAll() {
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((r) => {
              if (c.exitCode !== null || c.signalCode !== null) return r();
              c.once("exit", () => r());
              c.kill("SIGKILL");
            }),
        ),
      );
    },
  };
}
