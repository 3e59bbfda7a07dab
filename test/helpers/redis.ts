/**
 * A throwaway `redis-server` for tests: a free port on 127.0.0.1 (never the
 * machine's 6379), no persistence, killed when the test process exits.
 * `bin/test_psimbols.sh` installs redis-server through apt when it is missing.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { answersPing, findOnPath, freePort } from "../../cli/cluster/net.js";

/** A running test Redis. */
export interface TestRedis {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** SIGTERM, and waits for the process to exit. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL, at once: a crash, as the store sees it. */
  kill(): void;
  /** SIGSTOP: the server stalls with its sockets open (a half-open peer, as the store sees it). */
  pause(): void;
  /** SIGCONT after {@link TestRedis.pause}. */
  resume(): void;
  /** Starts a fresh, empty server on the same port and waits for PING. */
  restart(): Promise<void>;
}

const START_TIMEOUT_MS = 5000;

/**
 * Spawns `redis-server` on a free port and waits until it answers PING.
 * @throws Error when `redis-server` is not on PATH or does not start.
 */
export async function startRedis(): Promise<TestRedis> {
  const bin = findOnPath("redis-server");
  if (!bin) {
    throw new Error("redis-server not found on PATH: install it (apt-get install redis-server; bin/test_psimbols.sh does this)");
  }
  const port = await freePort();
  let child: ChildProcess | undefined;
  const onExit = (): void => {
    child?.kill("SIGKILL");
  };
  process.once("exit", onExit);
  // 'exit' does not run when a signal ends the process: kill the server, then
  // re-raise so the default action (or the next such handler) still happens.
  const onSignal = (signal: NodeJS.Signals): void => {
    onExit();
    process.kill(process.pid, signal);
  };
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.once(s, onSignal);
  const unregister = (): void => {
    process.removeListener("exit", onExit);
    for (const s of signals) process.removeListener(s, onSignal);
  };

  const launch = async (): Promise<void> => {
    const args = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port", String(port), "--protected-mode", "yes"];
    const c = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    let output = "";
    const keep = (b: Buffer): void => {
      output = (output + b.toString("utf8")).slice(-2000);
    };
    c.stdout?.on("data", keep);
    c.stderr?.on("data", keep);
    let exited: string | undefined;
    c.once("exit", (code, signal) => {
      exited = `exited (${signal ?? code})`;
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!(await answersPing(port))) {
      if (exited || Date.now() > deadline) {
        c.kill("SIGKILL");
        throw new Error(`redis-server on port ${port} did not start: ${exited ?? "no PING answer"}\n${output}`);
      }
      await sleep(25);
    }
  };

  const waitExit = (c: ChildProcess): Promise<void> =>
    c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((resolve) => c.once("exit", () => resolve()));

  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      const c = child;
      unregister();
      if (!c) return;
      child = undefined;
      c.kill("SIGTERM");
      c.kill("SIGCONT"); // a paused server would hold SIGTERM pending
      await waitExit(c);
    },
    kill() {
      child?.kill("SIGKILL");
    },
    pause() {
      child?.kill("SIGSTOP");
    },
    resume() {
      child?.kill("SIGCONT");
    },
    async restart() {
      const c = child;
      if (c) {
        c.kill("SIGKILL");
        await waitExit(c);
      }
      await launch();
    },
  };
}




function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
