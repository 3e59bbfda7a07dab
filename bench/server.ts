/**
 * Server child of the benchmark: one server of one kind, on 127.0.0.1, port
 * chosen by the kernel, driven by the orchestrator (bench/run.ts) over IPC.
 *
 * Kinds:
 *   ws        plain WebSocket echo: the message goes back as received (the ceiling);
 *             with `json`, the same JSON parse, `op` dispatch and JSON answer as wss,
 *             without TLS (psimbols' cost over the same application without cryptography)
 *   wss       WebSocket over TLS 1.3; parses the JSON request, runs an `echo`
 *             handler looked up by `op`, sends a JSON response (the app a user would write)
 *   mtls      TLS 1.3 server requiring a client certificate; writes one byte
 *             once the handshake (client certificate verified) is done
 *   psimbols  the real Broker (server/broker.ts) with the memory or the Redis store
 *
 * Config comes as JSON in the environment variable BENCH_SERVER. IPC:
 *   {cmd:"usage"}                → {usage:{user, system, rss, heapUsed}} (µs, bytes)
 *   {cmd:"mem"}                  → {mem:{rss, heapUsed, external}} after full GCs (needs --expose-gc)
 *   {cmd:"profile", on:true}     → starts the V8 CPU profiler; {on:false, path} stops and writes the .cpuprofile
 *   {cmd:"heapsnapshot", path}   → writes a heap snapshot (memory investigations)
 *   {cmd:"exit"}                 → closes and exits
 */
import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createTlsServer } from "node:tls";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Session } from "node:inspector/promises";
import { getHeapSpaceStatistics, writeHeapSnapshot } from "node:v8";
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";
import { Broker, createLogger, loadOrCreateServerKey } from "../server/index.js";
import type { Store } from "../server/store/store.js";
import { RedisStore } from "../server/store/redis-store.js";
import { parseWrapKey } from "../server/store/wrap.js";
import { createAppCalls } from "../server/app/setup.js";
import { WebhookSecret } from "../server/app/signature.js";

/** What the orchestrator asks this child to run. */
export interface ServerConfig {
  kind: "ws" | "wss" | "mtls" | "psimbols";
  store?: "memory" | "redis";
  /** ws: answer as the wss application does (JSON parse, dispatch, JSON response). */
  json?: boolean;
  redisUrl?: string;
  /** PEMs for wss/mtls. */
  tls?: { key: string; cert: string; ca: string };
  /** psimbols: forward the ops no built-in takes to this upstream URL (docs/BACKEND.md), signed with a fresh secret. */
  upstream?: string;
  /** psimbols: the upstream takes batches (`--upstream-batch *`, docs/BACKEND.md "Batches"). */
  batch?: boolean;
}

/** Limits raised for the bench: one load generator opens thousands of sockets and handshakes from few addresses. */
const BENCH_LIMITS = {
  connectionsPerAddress: 1_000_000,
  hellosPerAddress: 1 << 30,
  hellosPerSecond: 1 << 30,
  resumesPerAddress: 1 << 30,
  resumesPerSecond: 1 << 30,
  // The bench measures the node's ceiling: admission by capacity (PROTOCOL.md §11.4) would refuse past it.
  // Its targets' largest values: half the handshake timeout (10 s).
  helloLagMs: 5000,
  resumeLagMs: 5000,
  handshakesPerIdentityPerMinute: 1 << 30,
  queuedFramesPerConnection: 4096,
};

function send(m: unknown): void {
  process.send?.(m);
}

async function startWs(cfg: ServerConfig): Promise<{ port: number; info: Record<string, unknown>; close(): Promise<void> }> {
  const tls = cfg.kind === "wss" ? cfg.tls : undefined;
  const http = tls ? createHttpsServer({ key: tls.key, cert: tls.cert, minVersion: "TLSv1.3" }) : createHttpServer();
  const wss = new WebSocketServer({ server: http, perMessageDeflate: false, maxPayload: 64 * 1024 });
  if (cfg.kind === "ws" && !cfg.json) {
    wss.on("connection", (ws) => {
      ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    });
  } else {
    // What an application without psimbols would do over wss: parse, dispatch by op, answer in JSON.
    const handlers = new Map<string, (data: unknown) => unknown>([["echo", (d) => d]]);
    wss.on("connection", (ws) => {
      ws.on("message", (raw) => {
        let id: unknown;
        try {
          const req = JSON.parse((raw as Buffer).toString("utf8")) as { id?: unknown; op?: unknown; data?: unknown };
          id = req.id;
          const h = typeof req.op === "string" ? handlers.get(req.op) : undefined;
          if (!h) throw new Error("no handler");
          ws.send(JSON.stringify({ id, data: h(req.data) ?? null }));
        } catch {
          ws.send(JSON.stringify({ id, error: { code: "bad_request", message: "bad request" } }));
        }
      });
    });
  }
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  return {
    port: (http.address() as AddressInfo).port,
    info: {},
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}

async function startMtls(cfg: ServerConfig): Promise<{ port: number; info: Record<string, unknown>; close(): Promise<void> }> {
  const tls = cfg.tls!;
  const server = createTlsServer({
    key: tls.key,
    cert: tls.cert,
    ca: tls.ca,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
  });
  server.on("secureConnection", (s) => {
    s.on("error", () => {});
    s.on("end", () => s.end());
    s.write("k"); // the client counts the handshake once this arrives
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as AddressInfo).port, info: {}, close: () => new Promise<void>((r) => server.close(() => r())) };
}

async function startPsimbols(cfg: ServerConfig): Promise<{ port: number; info: Record<string, unknown>; close(): Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), "psimbols-bench-server-"));
  const log = createLogger({ level: process.env.PSIMBOLS_LOG_LEVEL ?? "warn" });
  // As `psimbols serve` does (and with whatever the Node entry points install, e.g. crypto engines).
  const serverKey = await loadOrCreateServerKey(dataDir, log);
  let store: Store | undefined;
  if (cfg.store === "redis") {
    const wrapKey = parseWrapKey(process.env.PSIMBOLS_WRAP_KEY, "PSIMBOLS_WRAP_KEY");
    store = new RedisStore({ url: cfg.redisUrl!, wrapKey, node: "bench", logger: log });
    wrapKey.fill(0);
    await store.ping().catch(async () => {
      await new Promise((r) => setTimeout(r, 500));
      await store!.ping();
    });
  }
  // As `psimbols serve --upstream URL` builds it; the in-flight cap above the load's 100 × 8.
  const app = cfg.upstream ? createAppCalls({ upstreams: [cfg.upstream], ...(cfg.batch ? { upstreamBatch: ["*"] } : {}), env: { PSIMBOLS_UPSTREAM_SECRET: WebhookSecret.generate() }, upstreamMaxInFlight: 4096, upstreamMaxInFlightPerIdentity: 4096, log }) : undefined;
  const broker = await Broker.start({
    config: { port: 0, host: "127.0.0.1", dataDir, node: "bench", limits: BENCH_LIMITS },
    serverKey,
    logger: log,
    ...(store ? { store } : {}),
    ...(app?.upstream ? { upstream: app.upstream } : {}),
  });
  return {
    port: broker.port,
    info: { fingerprint: serverKey.public.fingerprint },
    close: async () => {
      await broker.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.env.BENCH_SERVER ?? "{}") as ServerConfig;
  const s = cfg.kind === "psimbols" ? await startPsimbols(cfg) : cfg.kind === "mtls" ? await startMtls(cfg) : await startWs(cfg);
  let session: Session | undefined;
  process.on("message", (m: { cmd: string; on?: boolean; path?: string }) => {
    void (async () => {
      switch (m.cmd) {
        case "usage": {
          const u = process.cpuUsage();
          const mem = process.memoryUsage();
          return send({ usage: { user: u.user, system: u.system, rss: mem.rss, heapUsed: mem.heapUsed } });
        }
        case "mem": {
          const gc = (globalThis as { gc?: () => void }).gc;
          for (let i = 0; i < 3 && gc; i++) {
            gc();
            await new Promise((r) => setTimeout(r, 50));
          }
          const mem = process.memoryUsage();
          const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]));
          return send({ mem: { rss: mem.rss, heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external, arrayBuffers: mem.arrayBuffers, spaces } });
        }
        case "profile":
          if (m.on) {
            session = new Session();
            session.connect();
            await session.post("Profiler.enable");
            await session.post("Profiler.setSamplingInterval", { interval: 200 });
            await session.post("Profiler.start");
            return send({ profile: "started" });
          }
          if (session) {
            const { profile } = await session.post("Profiler.stop");
            writeFileSync(m.path!, JSON.stringify(profile));
            session.disconnect();
            session = undefined;
          }
          return send({ profile: "stopped" });
        case "heapsnapshot":
          return send({ heapsnapshot: writeHeapSnapshot(m.path) });
        case "exit":
          await Promise.race([s.close(), new Promise((r) => setTimeout(r, 3000))]);
          process.exit(0);
      }
    })().catch((e: unknown) => send({ error: e instanceof Error ? e.stack : String(e) }));
  });
  process.on("disconnect", () => process.exit(0));
  send({ ready: { port: s.port, pid: process.pid, ...s.info } });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
