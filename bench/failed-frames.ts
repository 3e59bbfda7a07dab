/**
 * A keyless flood of failed frames from one address, and what it costs the
 * node (PROTOCOL.md §11 "failed frames", SECURITY.md): `connections` sockets
 * from 127.0.0.9 each resume a random channel id and then send forged
 * requests as fast as the socket takes them, reconnecting whenever the node
 * closes them, for `seconds`; meanwhile a bystander on 127.0.0.3 makes one
 * full handshake every 250 ms. Prints the node's CPU seconds during the flood
 * (and until it is idle again), the bystander's handshake times before and
 * during, and how the flood's sockets ended. (Hellos per address are raised so the
 * bystander's handshakes, four a second, never meet their own limit.)
 *
 *   node dist/bench/failed-frames.js [--connections 8] [--seconds 6]
 */
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { generateSigningKey, randomBytes } from "../shared/crypto.js";
import { b64u, fromUtf8 } from "../shared/encoding.js";
import { type Challenge, decodeServerFrame } from "../shared/frames.js";
import { answerChallenge, createHello } from "../shared/handshake.js";
import { useNodeCrypto } from "../node/engines.js";
import { cpuSeconds } from "./proc.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How a flood went: answers the node sent, how the flood's sockets ended (close code, or "429" for a refused upgrade, "flooder" for one the flooder closed when its time was up). */
export interface FloodResult {
  answers: number;
  sockets: number;
  closes: Record<string, number>;
}

/**
 * Floods `url` with failed frames from `localAddress` on `connections` sockets until `ms` pass:
 * each resumes a random channel id, then writes forged requests while its send buffer is small.
 */
export async function floodFailedFrames(url: string, localAddress: string, connections: number, ms: number): Promise<FloodResult> {
  const end = Date.now() + ms;
  const out: FloodResult = { answers: 0, sockets: 0, closes: {} };
  const one = async (): Promise<void> => {
    while (Date.now() < end) {
      out.sockets++;
      let mine = false;
      const code = await new Promise<number>((resolve) => {
        const ws = new WebSocket(url, { localAddress });
        const channel = b64u(randomBytes(16));
        let seq = 0;
        let timer: ReturnType<typeof setInterval> | undefined;
        ws.on("error", () => undefined);
        ws.on("close", (c) => (clearInterval(timer), resolve(c)));
        ws.on("unexpected-response", (req) => (req.destroy(), resolve(-429)));
        ws.on("open", () => ws.send(JSON.stringify({ type: "resume", channel, nonce: b64u(randomBytes(32)) })));
        ws.on("message", () => {
          out.answers++;
          if (timer) return;
          const garbage = () => {
            if (Date.now() >= end) return void ((mine = true), ws.close());
            // At most 64 a tick: the close from the node is read only between ticks.
            for (let i = 0; i < 64 && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 256 * 1024; i++) {
              ws.send(JSON.stringify({ type: "request", channel, seq: ++seq, request: b64u(randomBytes(48)) }));
            }
          };
          timer = setInterval(garbage, 1);
          garbage();
        });
      });
      const how = mine ? "flooder" : code === -429 ? "429" : String(code);
      out.closes[how] = (out.closes[how] ?? 0) + 1;
      if (code === -429) await sleep(20);
    }
  };
  await Promise.all(Array.from({ length: connections }, one));
  return out;
}

/** One full handshake (hello, challenge, proof, established) from `localAddress`: its time in ms. */
export async function handshakeMs(url: string, localAddress: string): Promise<number> {
  const key = await generateSigningKey();
  const started = performance.now();
  const ws = new WebSocket(url, { localAddress });
  const frames: unknown[] = [];
  let wake: (() => void) | undefined;
  ws.on("message", (d: Buffer) => (frames.push(JSON.parse(d.toString())), wake?.()));
  const next = async (): Promise<Record<string, unknown>> => {
    while (frames.length === 0) await new Promise<void>((r) => (wake = r));
    return frames.shift() as Record<string, unknown>;
  };
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const h = await createHello(key);
  ws.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await next())) as Challenge;
  const { proof } = await answerChallenge(h, c, () => {});
  ws.send(JSON.stringify(proof));
  const e = await next();
  if (e.type !== "established") throw new Error(`bystander handshake: ${JSON.stringify(e)}`);
  const ms = performance.now() - started;
  ws.close();
  return ms;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

async function main(): Promise<void> {
  await useNodeCrypto();
  const arg = (name: string, dflt: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : dflt;
  };
  const connections = arg("connections", 8);
  const seconds = arg("seconds", 6);
  const dataDir = mkdtempSync(join(tmpdir(), "psimbols-bench-"));
  const proc = spawn(process.execPath, [join(ROOT, "bin", "psimbols.js"), "serve", "--port", "0", "--data-dir", dataDir, "--no-console", "--hellos-per-address", "100000"], {
    env: { ...process.env, PSIMBOLS_HOME: dataDir, PSIMBOLS_LOG_LEVEL: "error" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let printed = "";
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
      printed += d;
      const m = /listening on ws:\/\/[^:]+:(\d+)\//.exec(printed);
      if (m) resolve(Number(m[1]));
    });
    proc.once("exit", (c) => reject(new Error(`the node exited with ${c}`)));
  });
  const url = `ws://127.0.0.1:${port}/`;
  try {
    const before: number[] = [];
    for (let i = 0; i < 8; i++) before.push(await handshakeMs(url, "127.0.0.3"));
    const cpu0 = cpuSeconds(proc.pid);
    const t0 = performance.now();
    let flooding = true;
    const during: number[] = [];
    const bystander = (async () => {
      while (flooding) {
        during.push(await handshakeMs(url, "127.0.0.3"));
        await sleep(250);
      }
    })();
    const result = await floodFailedFrames(url, "127.0.0.9", connections, seconds * 1000);
    flooding = false;
    await bystander;
    const cpuFlood = cpuSeconds(proc.pid) - cpu0;
    const wall = (performance.now() - t0) / 1000;
    // Until the node is idle again (what the flood left in its buffers).
    let last = cpuSeconds(proc.pid);
    for (let i = 0; i < 30; i++) {
      await sleep(500);
      const now = cpuSeconds(proc.pid);
      if (now - last < 0.02) break;
      last = now;
    }
    const cpuTotal = cpuSeconds(proc.pid) - cpu0;
    const after = await handshakeMs(url, "127.0.0.3");
    console.log(
      JSON.stringify(
        {
          connections,
          seconds,
          node_cpu_s_during_flood: +cpuFlood.toFixed(2),
          node_cpu_s_until_idle: +cpuTotal.toFixed(2),
          flood_wall_s: +wall.toFixed(2),
          answers_to_flood: result.answers,
          flood_sockets: result.sockets,
          flood_closes: result.closes,
          bystander_handshake_ms_before: { p50: +quantile(before, 0.5).toFixed(1), max: +Math.max(...before).toFixed(1) },
          bystander_handshake_ms_during: { n: during.length, p50: +quantile(during, 0.5).toFixed(1), max: +Math.max(...during).toFixed(1) },
          bystander_handshake_ms_after: +after.toFixed(1),
        },
        null,
        2,
      ),
    );
  } finally {
    proc.kill("SIGKILL");
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
