/**
 * Load generator of the benchmark: a separate process (pinned to its own
 * core by bench/run.ts), driven over IPC. Config is JSON in BENCH_LOAD.
 *
 * Modes:
 *   msg   `conns` connections sending echo requests of `size` payload
 *         characters; records every round trip. Closed loop (rate 0): each
 *         keeps `inflight` requests outstanding, the next sent on each answer
 *         (the maximum rate). Fixed rate (`rate` > 0, {cmd:"rate"}): `rate`
 *         requests per second in all, spread over the connections on a 2 ms
 *         tick, at most `inflight` outstanding per connection (the same offered
 *         load for every case, for the server's CPU per request)
 *   hs    `conns` loops, each opening a new connection, completing one
 *         handshake (psimbols channel handshake, or TLS 1.3 with a client
 *         certificate), closing, and starting again
 *   idle  opens `n` connections (psimbols: each with a bound channel) and keeps them
 *
 * The psimbols side is a lean client over the project's own shared/ code, on
 * the Node engines (node/engines.ts useNodeCrypto, as the Node client selects them): createHello /
 * answerChallenge / openGrant (shared/handshake.ts), deriveBinding and
 * sealFrame / sealBinaryFrame / openFrame (shared/channel.ts), frames decoded
 * by shared/frames.ts. With `binary` it offers the `binary` feature, as the
 * project's clients do by default (PROTOCOL.md §4.11). As client/connection.ts does, it allocates,
 * seals and writes requests on one chain per socket (rising `seq` on the
 * wire) and processes inbound frames strictly in order on another.
 *
 * IPC: {cmd:"start"} → {started}, {cmd:"mark"} → {marked} (zeroes the
 * counters), {cmd:"rate", rate} → {rated}, {cmd:"report"} → {report},
 * {cmd:"stop"} → exits. Every psimbols handshake is bounded (HANDSHAKE_MS) and
 * fails naming the step it waited at, so a case cannot hang on one.
 */
import { connect as tlsConnect, createSecureContext, type SecureContext } from "node:tls";
import { randomBytes as nodeRandomBytes } from "node:crypto";
import { connect as netConnect } from "node:net";
import { WebSocket } from "ws";
import { KeyType, type SigningKey, generateSigningKey } from "../shared/crypto.js";
import { fromUtf8, wipe } from "../shared/encoding.js";
import { Feature, type KemType, type ServerFrame, decodeInnerResponse, decodeServerBinary, decodeServerFrame } from "../shared/frames.js";
import { answerChallenge, createHello, openGrant } from "../shared/handshake.js";
import { type BindingKeys, FrameKind, deriveBinding, openFrame, sealBinaryFrame, sealFrame } from "../shared/channel.js";
import { useNodeCrypto } from "../node/engines.js";

// The engines the project's Node client selects in connect().
await useNodeCrypto();

/** What the orchestrator asks this child to do. */
export interface LoadConfig {
  mode: "msg" | "hs" | "idle";
  kind: "ws" | "wss" | "psimbols" | "mtls";
  port: number;
  /** psimbols: the server key fingerprint to pin. */
  fingerprint?: string;
  /** wss: the CA; mtls: the CA plus the client certificate and key. */
  tls?: { ca: string; key?: string; cert?: string };
  conns: number;
  inflight: number;
  /** Payload characters per request (msg). */
  size: number;
  /** Connections to hold (idle). */
  n: number;
  /** Source addresses to spread sockets over (127.0.0.x). */
  addresses: string[];
  /** psimbols: offer the `binary` feature (binary channel frames). */
  binary: boolean;
  /** psimbols: the channel types offered (default: the Node engines' order, ChaCha20-Poly1305 first where libsodium loads). */
  channelTypes?: string[];
  /** msg: requests per second in all; 0 = closed loop. */
  rate?: number;
  /** psimbols msg: the op requested (default `echo`; the forwarded case asks an op the node sends to its upstream). */
  op?: string;
  /** psimbols handshakes: the ephemeral KEM (default X25519; `X-Wing` for the X-Wing rows). */
  kem?: KemType;
}

/** What `report` returns. */
export interface LoadReport {
  count: number;
  elapsedMs: number;
  /** The load generator's own CPU over the window, % of one core (near 100: it is the bottleneck). */
  loadCpuPct: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError?: string;
  /** Requests the fixed rate could not send because the connection had `inflight` outstanding (the server fell behind). */
  skipped: number;
  /** Longest event-loop stall of this process in the window, ms (a load generator that cannot keep up shows it). */
  maxLagMs: number;
  /** The channel type the psimbols connections agreed on. */
  channelType?: string;
}

const cfg = JSON.parse(process.env.BENCH_LOAD ?? "{}") as LoadConfig;
const send = (m: unknown): void => void process.send?.(m);

// ------------------------------------------------------------------ measurements

const MAX_SAMPLES = 1 << 22;
const samples = new Float64Array(MAX_SAMPLES);
let nSamples = 0;
let count = 0;
let errors = 0;
let firstError: string | undefined;
let markedAt = process.hrtime.bigint();
let markedCpu = process.cpuUsage();
let running = false;
let skipped = 0;
let maxLagMs = 0;
let agreedType: string | undefined;

// Event-loop lag: a 50 ms timer that fires late by the stall it waited behind.
let lagAt = performance.now();
setInterval(() => {
  const now = performance.now();
  maxLagMs = Math.max(maxLagMs, now - lagAt - 50);
  lagAt = now;
}, 50).unref();

function record(t0: bigint): void {
  count++;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (nSamples < MAX_SAMPLES) samples[nSamples++] = ms;
}
function fail(e: unknown): void {
  errors++;
  firstError ??= e instanceof Error ? e.message : String(e);
}
function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}
function report(): LoadReport {
  const elapsedMs = Number(process.hrtime.bigint() - markedAt) / 1e6;
  const s = samples.slice(0, nSamples).sort();
  const cpu = process.cpuUsage(markedCpu);
  return {
    count,
    elapsedMs,
    loadCpuPct: Math.round(((cpu.user + cpu.system) / 10 / elapsedMs) * 10) / 10,
    p50Ms: percentile(s, 0.5),
    p99Ms: percentile(s, 0.99),
    errors,
    ...(firstError ? { firstError } : {}),
    skipped,
    maxLagMs: Math.round(maxLagMs),
    ...(agreedType ? { channelType: agreedType } : {}),
  };
}
function mark(): void {
  count = 0;
  skipped = 0;
  maxLagMs = 0;
  nSamples = 0;
  errors = 0;
  firstError = undefined;
  markedAt = process.hrtime.bigint();
  markedCpu = process.cpuUsage();
}

// ------------------------------------------------------------------ sockets

let addrIndex = 0;
function nextAddress(): string {
  const a = cfg.addresses[addrIndex++ % cfg.addresses.length]!;
  return a;
}

const wsUrl = (): string => `${cfg.kind === "wss" ? "wss" : "ws"}://127.0.0.1:${cfg.port}/`;

function openWs(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(), {
      perMessageDeflate: false,
      localAddress: nextAddress(),
      ...(cfg.kind === "wss" ? { ca: cfg.tls!.ca } : {}),
    });
    const t = setTimeout(() => {
      ws.terminate();
      reject(new Error(`socket not open within ${HANDSHAKE_MS} ms`));
    }, HANDSHAKE_MS);
    ws.once("open", () => {
      clearTimeout(t);
      ws.removeListener("error", reject);
      ws.on("error", () => {});
      resolve(ws);
    });
    ws.once("error", (e) => (clearTimeout(t), reject(e)));
  });
}

function payload(n: number): string {
  // Printable, incompressible-looking content of exactly n characters.
  return nodeRandomBytes(Math.ceil((n * 3) / 4) + 3).toString("base64url").slice(0, n);
}

// ------------------------------------------------------------------ plain ws and wss

/** One connection's sender: `issue()` sends one request (false when `inflight` are already outstanding). */
interface Conn {
  issue(): boolean;
}
const conns: Conn[] = [];
/** Requests per second in all; 0 = closed loop (each answer sends the next). */
let rate = cfg.rate ?? 0;
const closedLoop = (): boolean => rate === 0;

function startJsonConn(ws: WebSocket, data: string): Conn {
  let nextId = 1;
  const pending = new Map<number, bigint>();
  const issue = (): boolean => {
    if (!running || pending.size >= cfg.inflight) return false;
    const id = nextId++;
    pending.set(id, process.hrtime.bigint());
    ws.send(JSON.stringify({ id, op: "echo", data }));
    return true;
  };
  ws.on("message", (raw) => {
    const m = JSON.parse((raw as Buffer).toString("utf8")) as { id: number; data?: unknown; error?: unknown };
    const t0 = pending.get(m.id);
    pending.delete(m.id);
    if (t0 === undefined || m.error !== undefined || (m.data as string).length !== data.length) fail(new Error("bad echo"));
    else record(t0);
    if (closedLoop()) issue();
  });
  return { issue };
}

/** Fixed rate: every 2 ms, the requests due since the last tick, round-robin over the connections. */
let paced = 0;
let pacedFrom = 0;
let cursor = 0;
function pace(): void {
  if (!running || closedLoop() || conns.length === 0) return;
  const due = Math.floor(((performance.now() - pacedFrom) * rate) / 1000) - paced;
  for (let i = 0; i < due; i++) {
    paced++;
    if (!conns[cursor++ % conns.length]!.issue()) skipped++;
  }
}
setInterval(pace, 2).unref();

/** Switches between closed loop (0) and a fixed rate; closed loop fills every connection's window at once. */
function setRate(r: number): void {
  rate = r;
  paced = 0;
  pacedFrom = performance.now();
  if (closedLoop()) for (const c of conns) while (c.issue());
}

// ------------------------------------------------------------------ psimbols lean client

interface Bound {
  ws: WebSocket;
  channel: string;
  keys: BindingKeys;
  /** The server agreed on binary channel frames. */
  binary: boolean;
}

/** A FIFO of a socket's text messages, for the four handshake frames. */
/** Longest wait for one handshake frame (and for a socket to open). */
const HANDSHAKE_MS = 10_000;

function inbox(ws: WebSocket): { next(step?: string): Promise<string>; detach(): void } {
  const queue: string[] = [];
  const waiters: { resolve: (s: string) => void; reject: (e: Error) => void }[] = [];
  const onMessage = (raw: Buffer): void => {
    const text = raw.toString("utf8");
    const w = waiters.shift();
    if (w) w.resolve(text);
    else queue.push(text);
  };
  const onClose = (code: number): void => {
    for (const w of waiters.splice(0)) w.reject(new Error(`socket closed (${code}) during the handshake`));
  };
  ws.on("message", onMessage);
  ws.on("close", onClose);
  return {
    next: (step = "frame") =>
      queue.length
        ? Promise.resolve(queue.shift()!)
        : new Promise<string>((resolve, reject) => {
            // Bounded: a server that never answers fails the handshake, naming the step.
            const w = {
              resolve: (s: string) => (clearTimeout(t), resolve(s)),
              reject: (e: Error) => (clearTimeout(t), reject(e)),
            };
            const t = setTimeout(() => {
              const i = waiters.indexOf(w);
              if (i >= 0) waiters.splice(i, 1);
              reject(new Error(`no ${step} within ${HANDSHAKE_MS} ms`));
            }, HANDSHAKE_MS);
            waiters.push(w);
          }),
    detach: () => {
      ws.removeListener("message", onMessage);
      ws.removeListener("close", onClose);
    },
  };
}

function expectFrame<T extends ServerFrame["type"]>(text: string, type: T): Extract<ServerFrame, { type: T }> {
  const f = decodeServerFrame(text);
  if (f.type === "error") throw new Error(`server error ${f.error.code}: ${f.error.message}`);
  if (f.type !== type) throw new Error(`expected ${type}, got ${f.type}`);
  return f as Extract<ServerFrame, { type: T }>;
}

/** The client side of the four-frame handshake on an open socket. */
async function psHandshake(ws: WebSocket, identity: SigningKey): Promise<Bound> {
  const box = inbox(ws);
  try {
    const h = await createHello(identity, { features: cfg.binary ? [Feature.binary] : [], ...(cfg.channelTypes ? { channelTypes: cfg.channelTypes } : {}), ...(cfg.kem ? { kem: cfg.kem } : {}) });
    ws.send(fromUtf8(h.bytes));
    const challenge = expectFrame(await box.next("challenge"), "challenge");
    const { proof, state } = await answerChallenge(h, challenge, (k) => {
      if (k.fingerprint !== cfg.fingerprint) throw new Error("server key mismatch");
    });
    ws.send(JSON.stringify(proof));
    const est = expectFrame(await box.next("established"), "established");
    const { grant, channelKey } = await openGrant(state, est);
    const keys = await deriveBinding(channelKey, grant.channel, h.nonceC, state.nonceS, grant.key.type);
    wipe(channelKey);
    agreedType = grant.key.type;
    return { ws, channel: grant.channel, keys, binary: state.features.includes(Feature.binary) };
  } finally {
    box.detach();
  }
}

function startPsimbolsConn(b: Bound, data: string): Conn {
  const inner = JSON.stringify({ op: cfg.op ?? "echo", data });
  let nextSeq = 1;
  let outstanding = 0;
  const pending = new Map<number, bigint>();
  let out: Promise<void> = Promise.resolve();
  let inb: Promise<void> = Promise.resolve();
  const issue = (): boolean => {
    if (!running || outstanding >= cfg.inflight) return false;
    outstanding++;
    const t0 = process.hrtime.bigint();
    out = out
      .then(async () => {
        const seq = nextSeq++;
        const frame = b.binary
          ? await sealBinaryFrame(b.keys, FrameKind.request, seq, inner)
          : JSON.stringify({ type: "request", channel: b.channel, seq, request: await sealFrame(b.keys.c2s, FrameKind.request, seq, b.channel, inner) });
        pending.set(seq, t0);
        b.ws.send(frame);
      })
      .catch(fail);
    return true;
  };
  const next = (): void => {
    outstanding--;
    if (closedLoop()) issue();
  };
  b.ws.on("message", (raw: Buffer, isBinary: boolean) => {
    inb = inb
      .then(async () => {
        const f = isBinary ? decodeServerBinary(raw) : decodeServerFrame(raw.toString("utf8"));
        if (f.type === "push") return; // notices: none expected within a run
        if (f.type !== "response") {
          if (f.type === "error" && f.seq !== undefined) pending.delete(f.seq);
          fail(new Error(`unexpected ${f.type}${f.type === "error" ? ` ${f.error.code}` : ""}`));
          return next();
        }
        const t0 = pending.get(f.seq);
        pending.delete(f.seq);
        const r = decodeInnerResponse(await openFrame(b.keys.s2c, FrameKind.response, f.seq, f.channel, f.response));
        if (t0 === undefined || !("data" in r) || (r.data as string).length !== data.length) fail(new Error("bad echo"));
        else record(t0);
        next();
      })
      .catch(fail);
  });
  return { issue };
}

// ------------------------------------------------------------------ handshake loops

async function identities(n: number): Promise<SigningKey[]> {
  const out: SigningKey[] = [];
  for (let i = 0; i < n; i++) out.push(await generateSigningKey(KeyType.ed25519));
  return out;
}

/**
 * One handshake loop. Loop `i` of `n` cycles through its own identities
 * (i, i + n, i + 2n, ...): no two loops ever run a handshake for the same key
 * at once, as distinct clients would not, and each key's earlier channel is
 * replaced as a reconnecting client's would be.
 */
async function psHandshakeLoop(ids: SigningKey[], i: number, n: number): Promise<void> {
  let k = i;
  while (running) {
    const t0 = process.hrtime.bigint();
    let ws: WebSocket | undefined;
    try {
      ws = await openWs();
      await psHandshake(ws, ids[k]!);
      k = (k + n) % ids.length;
      ws.close();
      record(t0);
    } catch (e) {
      ws?.terminate();
      fail(e);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

function mtlsHandshake(ctx: SecureContext): Promise<void> {
  return new Promise((resolve, reject) => {
    const tcp = netConnect({ host: "127.0.0.1", port: cfg.port, localAddress: nextAddress() });
    const s = tlsConnect({ socket: tcp, host: "127.0.0.1", secureContext: ctx, minVersion: "TLSv1.3" });
    s.once("data", () => {
      s.end();
      resolve();
    });
    s.once("error", reject);
    s.once("close", () => reject(new Error("closed before the server's byte")));
  });
}

async function mtlsLoop(ctx: SecureContext): Promise<void> {
  while (running) {
    const t0 = process.hrtime.bigint();
    try {
      await mtlsHandshake(ctx);
      record(t0);
    } catch (e) {
      fail(e);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

// ------------------------------------------------------------------ main

const held: WebSocket[] = [];

async function start(): Promise<Record<string, unknown>> {
  running = true;
  if (cfg.mode === "msg") {
    const data = payload(cfg.size);
    const socks = await Promise.all(Array.from({ length: cfg.conns }, () => openWs()));
    held.push(...socks);
    if (cfg.kind === "psimbols") {
      const ids = await identities(cfg.conns);
      const bound = await Promise.all(socks.map((ws, i) => psHandshake(ws, ids[i]!)));
      for (const b of bound) conns.push(startPsimbolsConn(b, data));
    } else {
      for (const ws of socks) conns.push(startJsonConn(ws, data));
    }
    setRate(rate);
    return { conns: socks.length };
  }
  if (cfg.mode === "hs") {
    if (cfg.kind === "mtls") {
      const t = cfg.tls!;
      const ctx = createSecureContext({ ca: t.ca, key: t.key!, cert: t.cert!, minVersion: "TLSv1.3" });
      for (let i = 0; i < cfg.conns; i++) void mtlsLoop(ctx);
    } else {
      const ids = await identities(cfg.conns * 4);
      for (let i = 0; i < cfg.conns; i++) void psHandshakeLoop(ids, i, cfg.conns);
    }
    return { loops: cfg.conns };
  }
  // idle: open n sockets, `conns` at a time; psimbols binds a channel on each, with its own identity.
  const ids = cfg.kind === "psimbols" ? await identities(cfg.n) : [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < cfg.n) {
      const i = next++;
      const ws = await openWs();
      if (cfg.kind === "psimbols") await psHandshake(ws, ids[i]!);
      held.push(ws);
    }
  };
  await Promise.all(Array.from({ length: cfg.conns }, worker));
  return { held: held.length };
}

process.on("message", (m: { cmd: string }) => {
  switch (m.cmd) {
    case "start":
      start().then(
        (info) => send({ started: info }),
        (e: unknown) => send({ failed: e instanceof Error ? e.stack : String(e) }),
      );
      break;
    case "mark":
      mark();
      send({ marked: true });
      break;
    case "report":
      send({ report: report() });
      break;
    case "rate":
      setRate((m as { rate?: number }).rate ?? 0);
      send({ rated: rate });
      break;
    case "stop":
      running = false;
      for (const ws of held) ws.terminate();
      setTimeout(() => process.exit(0), 100);
      break;
  }
});
process.on("disconnect", () => process.exit(0));
send({ ready: true });
