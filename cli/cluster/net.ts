/** Small network probes shared by the local cluster launcher and the test helpers. */
import { accessSync, constants, readFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { delimiter, join } from "node:path";

/**
 * The kernel's ephemeral range (`ip_local_port_range`): the ports it hands out for `listen(0)` and
 * for the local end of every outgoing connection. A port picked there and bound later by another
 * process (HAProxy, seconds after, once the nodes run) can be taken meanwhile by any connection
 * the machine opens; below it, only an explicit bind takes it.
 */
function ephemeralLow(): number | undefined {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > PICK_FROM + 1000 ? low : undefined;
  } catch {
    return undefined; // not Linux
  }
}
const PICK_FROM = 10_000;
const handedOut = new Set<number>();

/** Binds 127.0.0.1:`port` (0: any) and releases it; the port bound, or 0 when it was taken. */
function tryBind(port: number): Promise<number> {
  return new Promise<number>((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(0));
    s.listen(port, "127.0.0.1", () => {
      const a = s.address();
      const p = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(p));
    });
  });
}

/**
 * A port free on 127.0.0.1 now, for a process started later: picked at random below the kernel's
 * ephemeral range where there is one (see ephemeralLow), else given by the kernel (bind port 0).
 * Never 6379 (the machine's Redis), never one this process handed out already.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  for (let i = 0; i < 50; i++) {
    const want = low === undefined ? 0 : PICK_FROM + Math.floor(Math.random() * (low - PICK_FROM));
    if (want === 6379 || handedOut.has(want)) continue;
    const port = await tryBind(want);
    if (port === 0 || port === 6379 || handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error("no free port found");
}

/** True when something on 127.0.0.1:`port` answers `+PONG` to an inline Redis PING. */
export function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    let buf = "";
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once("error", () => done(false));
    s.once("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => {
      buf += d.toString("latin1");
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
  });
}

/** The full path of an executable on PATH (or in an sbin folder), or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/sbin"]) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}
