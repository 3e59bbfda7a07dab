/**
 * Events and server API figures (docs/BACKEND.md): `npm run build && node dist/bench/events.js`.
 * Everything on 127.0.0.1, bounded (a few seconds per case):
 *
 * - emit: what one `Events.emit` costs the caller (the message path), in µs;
 * - stream: events appended to a local redis-server per second, and this
 *   process's CPU per event (emit + pipelined XADD);
 * - webhook: events POSTed (signed, keep-alive, one at a time) per second to a
 *   local receiver in another process;
 * - API push: `POST /v1/push` calls per second with 8 in flight (keep-alive),
 *   and their median and p99 latency, on a broker with the memory store
 *   (the load generator shares this process and its core).
 */
import { spawn } from "node:child_process";
import { Agent, request } from "node:http";
import { Broker } from "../server/broker.js";
import { createLogger } from "../server/log.js";
import { Events } from "../server/app/events.js";
import { WebhookSecret } from "../server/app/signature.js";
import { ApiServer } from "../server/api/server.js";
import { FileTokenStore, newToken } from "../server/api/tokens.js";
import { generateSigningKey } from "../shared/crypto.js";
import { startRedis } from "../test/helpers/redis.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const log = createLogger({ level: "error" });
const N = Number(process.env.EVENTS_N ?? 50_000);

async function until(f: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  if (!f()) throw new Error("timed out");
}

const cpuUs = (c: NodeJS.CpuUsage) => c.user + c.system;

async function streamCase(): Promise<Record<string, number>> {
  const redis = await startRedis();
  try {
    const events = new Events({ node: "bench", stream: { url: redis.url, maxLen: 100_000 }, queue: N + 1, logger: log });
    // warm the connection
    events.emit("push.delivered", "SHA256:warm", { seq: 0 });
    await until(() => events.stream!.counts.sent === 1, 5000);
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    let emitNs = 0n;
    for (let i = 0; i < N; i++) {
      const s = process.hrtime.bigint();
      events.emit("push.delivered", "SHA256:bench", { channel: "c", seq: i });
      emitNs += process.hrtime.bigint() - s;
      if (i % 1000 === 999) await new Promise((r) => setImmediate(r)); // let the writer run, as the event loop would
    }
    await until(() => events.stream!.counts.sent === N + 1, 60_000);
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = cpuUs(process.cpuUsage(cpu0));
    await events.close(100);
    return { emit_us: Number(emitNs / BigInt(N)) / 1000, stream_events_per_s: Math.round(N / wallS), stream_cpu_us_per_event: +(cpu / N).toFixed(2) };
  } finally {
    await redis.stop();
  }
}

async function webhookCase(): Promise<Record<string, number>> {
  // The receiver runs in a process of its own, so this process's CPU is the sender's.
  const child = spawn(process.execPath, ["-e", `require("http").createServer((q,s)=>{q.resume();q.on("end",()=>s.writeHead(204).end())}).listen(0,"127.0.0.1",function(){console.log(this.address().port)})`], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((r) => child.stdout!.once("data", (d: Buffer) => r(Number(d.toString().trim()))));
  try {
    const n = Math.min(N, 5000);
    const events = new Events({ node: "bench", webhook: { url: `http://127.0.0.1:${port}/`, secrets: [WebhookSecret.parse(WebhookSecret.generate())] }, queue: n + 1, logger: log });
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) events.emit("push.delivered", "SHA256:bench", { channel: "c", seq: i });
    await until(() => events.webhook!.counts.sent === n, 120_000);
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = cpuUs(process.cpuUsage(cpu0));
    await events.close(100);
    return { webhook_events_per_s: Math.round(n / wallS), webhook_cpu_us_per_event: +(cpu / n).toFixed(1) };
  } finally {
    child.kill("SIGTERM");
  }
}

async function apiCase(): Promise<Record<string, number>> {
  const dir = mkdtempSync(join(tmpdir(), "psimbols-bench-api-"));
  const broker = await Broker.start({ config: { port: 0, node: "bench" }, serverKey: await generateSigningKey(), logger: log });
  const tokens = new FileTokenStore(join(dir, "api-tokens.json"));
  const { token, entry } = newToken("bench");
  await tokens.add(entry);
  const api = await ApiServer.start({ broker, tokens, host: "127.0.0.1", port: 0, logger: log });
  try {
    const n = Math.min(N, 5000);
    const body = JSON.stringify({ identity: "SHA256:" + "A".repeat(43), message: { hello: "there" } });
    const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    const lat: number[] = [];
    // node:http with keep-alive as the load generator (fetch costs more CPU than the server here).
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    let next = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < n) {
          next++;
          const s = performance.now();
          const status = await new Promise<number>((resolve, reject) => {
            const req = request(`${api.url}v1/push`, { method: "POST", headers: { ...headers, "content-length": String(Buffer.byteLength(body)) }, agent }, (res) => {
              res.resume();
              res.on("end", () => resolve(res.statusCode ?? 0));
            });
            req.on("error", reject);
            req.end(body);
          });
          if (status !== 200) throw new Error(`push answered ${status}`);
          lat.push(performance.now() - s);
        }
      }),
    );
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    agent.destroy();
    lat.sort((a, b) => a - b);
    return { api_push_per_s: Math.round(n / wallS), api_push_p50_ms: +lat[Math.floor(lat.length / 2)]!.toFixed(2), api_push_p99_ms: +lat[Math.floor(lat.length * 0.99)]!.toFixed(2) };
  } finally {
    await api.close();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const out = { ...(await streamCase()), ...(await webhookCase()), ...(await apiCase()) };
console.log(JSON.stringify(out, null, 2));
