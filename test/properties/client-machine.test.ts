/**
 * The client's connection state machine (client/connection.ts, PROTOCOL.md
 * §6–§8.3) under a misbehaving server: an in-process fake server (through the
 * injectable WebSocket) speaks the protocol with the shared functions and, at
 * random points, duplicates responses, sends responses for other or unknown
 * seqs, replays and forges pushes, sends garbage and error frames, pushes
 * `expired`, and drops the socket.
 *
 * Whatever it does:
 *   - every request settles exactly once (resolved or rejected), and a
 *     resolved request has its own answer, never another request's;
 *   - every application push is delivered at most once, in order;
 *   - nothing throws out of the client (no uncaught exception or unhandled rejection);
 *   - the client keeps working: a last request succeeds once the server behaves.
 *     Injected, unauthenticated `error` frames (`forbidden`, `unsupported`,
 *     `protocol`, `too_many`) never stop it for good (SECURITY.md W9), unless
 *     the script injected at least MAX_HANDSHAKE_REFUSALS refusals.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { type SigningKey, generateSigningKey, randomBytes } from "../../shared/crypto.js";
import { b64u, fromB64u, utf8 } from "../../shared/encoding.js";
import { type BindingKeys, FrameKind, deriveBinding, openFrame, sealFrame } from "../../shared/channel.js";
import { type ChannelType, type Hello, type Proof, type RequestFrame, type Resume, decodeClientFrame, decodeInnerRequest } from "../../shared/frames.js";
import { type PendingHandshake, acceptHello, sealGrant, verifyProof } from "../../shared/handshake.js";
import { type Client, type WebSocketLike, connect } from "../../client/index.js";
import { params } from "./support.js";
import { useNodeCrypto } from "../../node/engines.js";

/** `PSIMBOLS_TEST_CHANNEL_TYPE`: the whole run on that channel type, with the Node engines (test/properties/channel-types.test.ts). */
const TYPE = process.env.PSIMBOLS_TEST_CHANNEL_TYPE as ChannelType | undefined;
if (TYPE !== undefined) await useNodeCrypto();

const SOURCE = "ws://fake/";

/** Server-side state of one fake socket. */
interface Session {
  pending?: PendingHandshake;
  keys?: BindingKeys;
  channel?: string;
  lastSeq: number;
  pushSeq: number;
  lastResponse?: string;
  lastPush?: string;
}

/** The fake server: channels by id, the live socket, and the misbehaviours. */
class FakeServer {
  readonly key: SigningKey;
  readonly channels = new Map<string, Uint8Array>();
  readonly types = new Map<string, ChannelType>();
  socket: FakeSocket | undefined;
  /** Requests the server answers with the next misbehaviour instead (set by the script). */
  swapNext = false;
  holdResponses = false;
  pushId = 0;
  constructor(key: SigningKey) {
    this.key = key;
  }

  async receive(s: FakeSocket, text: string): Promise<void> {
    const f = decodeClientFrame(text);
    const st = s.session;
    if (f.type === "hello") {
      const { challenge, pending } = await acceptHello(utf8(text), f as Hello, { key: this.key, source: SOURCE });
      st.pending = pending;
      s.deliver(JSON.stringify(challenge));
    } else if (f.type === "proof") {
      const p = st.pending!;
      st.pending = undefined;
      const sig = fromB64u((f as Proof).signature, "signature");
      if (!(await verifyProof(p, sig))) return s.deliver(JSON.stringify({ type: "error", error: { code: "unauthorised", message: "proof" } }));
      const key = randomBytes(32);
      const channel = b64u(randomBytes(16));
      this.channels.set(channel, key.slice());
      const est = await sealGrant(p, sig, { channel, key: { type: p.channelType, data: b64u(key) }, valid_until: new Date(Date.now() + 3_600_000).toISOString(), ttl: 3600 }, SOURCE);
      st.keys = await deriveBinding(key, channel, p.nonceC, p.nonceS, p.channelType);
      this.types.set(channel, p.channelType);
      st.channel = channel;
      st.lastSeq = 0;
      st.pushSeq = 0;
      s.deliver(JSON.stringify(est));
    } else if (f.type === "resume") {
      const r = f as Resume;
      const key = this.channels.get(r.channel);
      if (!key) return s.deliver(JSON.stringify({ type: "error", error: { code: "unauthorised", message: "unknown channel or bad ciphertext" }, channel: r.channel }));
      const nonceS = randomBytes(32);
      st.keys = await deriveBinding(key, r.channel, fromB64u(r.nonce, "nonce"), nonceS, this.types.get(r.channel)!);
      st.channel = r.channel;
      st.lastSeq = 0;
      st.pushSeq = 0;
      s.deliver(JSON.stringify({ type: "resumed", source: SOURCE, channel: r.channel, nonce: b64u(nonceS) }));
    } else if (f.type === "request") {
      const r = f as RequestFrame;
      if (!st.keys || r.channel !== st.channel || r.seq <= st.lastSeq) {
        return s.deliver(JSON.stringify({ type: "error", error: { code: "unauthorised", message: "unknown channel or bad ciphertext" }, seq: r.seq, channel: r.channel }));
      }
      const inner = decodeInnerRequest(await openFrame(st.keys.c2s, FrameKind.request, r.seq, r.channel, r.request));
      st.lastSeq = r.seq;
      const data = inner.op === "channel.close" ? { closed: true } : inner.op === "ping" ? { pong: true } : (inner.data ?? null);
      if (inner.op === "channel.close") this.channels.delete(r.channel);
      let seq = r.seq;
      if (this.swapNext) {
        // A response sealed for this seq, delivered under another: it cannot authenticate there.
        this.swapNext = false;
        seq = r.seq + 1;
        const response = await sealFrame(st.keys.s2c, FrameKind.response, r.seq, r.channel, JSON.stringify({ data }));
        return s.deliver(JSON.stringify({ type: "response", source: SOURCE, channel: r.channel, seq, response }));
      }
      const response = await sealFrame(st.keys.s2c, FrameKind.response, seq, r.channel, JSON.stringify({ data }));
      st.lastResponse = JSON.stringify({ type: "response", source: SOURCE, channel: r.channel, seq, response });
      s.deliver(st.lastResponse);
    }
  }

  /** A push on the live binding (sealed correctly), or undefined when none is bound. */
  async push(inner: unknown): Promise<string | undefined> {
    const st = this.socket?.session;
    if (!st?.keys || !st.channel) return undefined;
    const seq = ++st.pushSeq;
    const push = await sealFrame(st.keys.s2c, FrameKind.push, seq, st.channel, JSON.stringify(inner));
    st.lastPush = JSON.stringify({ type: "push", source: SOURCE, channel: st.channel, seq, push });
    return st.lastPush;
  }
}

/** The client's WebSocket, wired to the fake server; messages are delivered asynchronously, in order. */
class FakeSocket implements WebSocketLike {
  static server: FakeServer;
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: unknown) => void) | null = null;
  onclose: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly session: Session = { lastSeq: 0, pushSeq: 0 };
  #chain: Promise<void> = Promise.resolve();
  constructor(_url: string) {
    FakeSocket.server.socket = this;
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    }, 1);
  }
  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    // The server handles frames one at a time, in order, as a real one does.
    this.#chain = this.#chain.then(() => FakeSocket.server.receive(this, data)).catch(() => this.drop(4000));
  }
  close(code = 1000): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code }), 1);
  }
  /** Server → client. */
  deliver(text: string): void {
    if (this.readyState !== 1) return;
    setTimeout(() => this.readyState === 1 && this.onmessage?.({ data: text }), 0);
  }
  drop(code = 1006): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code }), 0);
  }
}

// ------------------------------------------------------------------ the script

type Step =
  | { kind: "request"; n: number }
  | { kind: "wait"; ms: number }
  | { kind: "dupResponse" | "dupPush" | "forgedPush" | "garbage" | "drop" | "expired" | "swapNext" | "strayResponse" }
  | { kind: "errorNoSeq"; code: string }
  | { kind: "push" }
  | { kind: "errorForSeq"; seq: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.nat(1000).map((n) => ({ kind: "request" as const, n })) },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 15 }).map((ms) => ({ kind: "wait" as const, ms })) },
  { weight: 3, arbitrary: fc.constant({ kind: "push" as const }) },
  {
    weight: 6,
    arbitrary: fc.constantFrom<Step>(
      { kind: "dupResponse" },
      { kind: "dupPush" },
      { kind: "forgedPush" },
      { kind: "garbage" },
      { kind: "drop" },
      { kind: "expired" },
      { kind: "swapNext" },
      { kind: "strayResponse" },
    ),
  },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 8 }).map((seq) => ({ kind: "errorForSeq" as const, seq })) },
  { weight: 2, arbitrary: fc.constantFrom("too_many", "forbidden", "unsupported", "protocol").map((code) => ({ kind: "errorNoSeq" as const, code })) },
);

/** The client's MAX_HANDSHAKE_REFUSALS (client/connection.ts). */
const MAX_HANDSHAKE_REFUSALS = 5;
/** Scenarios where injected (unauthenticated) refusals stopped the client for good, as designed. */
let stoppedByInjectedError = 0;
let serverKey: SigningKey;
let clientKey: SigningKey;
const uncaught: unknown[] = [];
process.on("uncaughtException", (e) => uncaught.push(e));
process.on("unhandledRejection", (e) => uncaught.push(e));

test.before(async () => {
  serverKey = await generateSigningKey();
  clientKey = await generateSigningKey();
});

test("whatever the server does, every request settles once with its own answer, pushes arrive at most once and in order, and the client recovers", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), async (steps) => {
      const server = new FakeServer(serverKey);
      FakeSocket.server = server;
      const client: Client = await connect("ws://fake/", {
        key: clientKey,
        serverKey: serverKey.public.fingerprint,
        WebSocket: FakeSocket,
        requestTimeoutMs: 400,
        handshakeTimeoutMs: 2000,
        reconnect: { baseMs: 5, maxMs: 20 },
        renew: false,
        ...(TYPE ? { channelTypes: [TYPE] } : {}),
      });
      assert.is(client.channel?.channelType, TYPE ?? "AES-256-GCM");
      try {
        await scenario(client, server, steps);
      } catch (e) {
        if (process.env.PSIMBOLS_FUZZ_STATS) console.error(steps, e);
        throw e;
      } finally {
        await client.close().catch(() => {});
      }
    }),
    params(60),
  );
});

async function scenario(client: Client, server: FakeServer, steps: Step[]): Promise<void> {
  {
    {
      const pushes: number[] = [];
      client.on("push", (m) => pushes.push((m as { n: number }).n));
      client.on("error", () => {});
      let closedFor: string | undefined;
      client.on("close", (e) => (closedFor = e.error?.code ?? String(e.code)));
      const settled = new Map<number, number>();
      const results: Promise<void>[] = [];
      let next = 0;
      const request = (n: number) => {
        const id = next++;
        settled.set(id, 0);
        results.push(
          client.request("echo", { id, n }).then(
            (d) => {
              settled.set(id, settled.get(id)! + 1);
              assert.equal(d, { id, n }, "a request resolved with another request's answer");
            },
            () => void settled.set(id, settled.get(id)! + 1),
          ),
        );
      };
      let pushN = 0;
      for (const s of steps) {
        const sock = server.socket;
        switch (s.kind) {
          case "request":
            request(s.n);
            break;
          case "wait":
            await new Promise((r) => setTimeout(r, s.ms));
            break;
          case "push": {
            const f = await server.push({ message: { n: ++pushN }, id: pushN });
            if (f) sock?.deliver(f);
            break;
          }
          case "dupResponse":
            if (sock?.session.lastResponse) sock.deliver(sock.session.lastResponse);
            break;
          case "dupPush":
            if (sock?.session.lastPush) sock.deliver(sock.session.lastPush);
            break;
          case "forgedPush":
            if (sock?.session.channel) sock.deliver(JSON.stringify({ type: "push", source: SOURCE, channel: sock.session.channel, seq: 1000, push: b64u(randomBytes(40)) }));
            break;
          case "strayResponse":
            if (sock?.session.keys && sock.session.channel) {
              const seq = 500 + Math.floor(Math.random() * 100);
              const response = await sealFrame(sock.session.keys.s2c, FrameKind.response, seq, sock.session.channel, JSON.stringify({ data: { id: -1 } }));
              sock.deliver(JSON.stringify({ type: "response", source: SOURCE, channel: sock.session.channel, seq, response }));
            }
            break;
          case "garbage":
            sock?.deliver('{"type":');
            break;
          case "errorNoSeq":
            sock?.deliver(JSON.stringify({ type: "error", error: { code: s.code, message: "x" } }));
            break;
          case "errorForSeq":
            if (sock?.session.channel) sock.deliver(JSON.stringify({ type: "error", error: { code: "unauthorised", message: "x" }, seq: s.seq, channel: sock.session.channel }));
            break;
          case "drop":
            sock?.drop();
            break;
          case "expired": {
            const f = await server.push({ notice: "expired" });
            if (f) sock?.deliver(f);
            break;
          }
          case "swapNext":
            server.swapNext = true;
            break;
        }
      }
      server.swapNext = false;
      // Everything settles within the request timeout (plus reconnect slack)...
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([Promise.all(results), new Promise((r) => (timer = setTimeout(r, 3000)))]);
      clearTimeout(timer);
      for (const [id, n] of settled) assert.is(n, 1, `request ${id} settled ${n} times`);
      // ...pushes came at most once, in order...
      assert.equal(pushes, [...pushes].sort((a, b) => a - b), `pushes out of order: ${pushes}`);
      assert.is(new Set(pushes).size, pushes.length, `a push was delivered twice: ${pushes}`);
      // ...and once the server behaves, the client is serviceable.
      // Frames the script injected may still be on their way: let them land first. A request that meets a
      // drop fails with connection_lost (it may or may not have been processed), and an injected outer error
      // for its seq fails it with unauthorised (outer errors are unauthenticated): either way, one retry.
      await new Promise((r) => setTimeout(r, 30));
      if (closedFor !== undefined) {
        // The client stopped for good. Only a run of injected refusals may do that (SECURITY.md W9): a client
        // that had a channel believes `forbidden`, `unsupported` and `protocol` MAX_HANDSHAKE_REFUSALS times
        // in a row; nothing authenticated, no drop, no replay, no forgery, no single injected frame may.
        const refusals = steps.filter((x) => x.kind === "errorNoSeq" && x.code !== "too_many").length;
        assert.ok(refusals >= MAX_HANDSHAKE_REFUSALS, `the client stopped for good (${closedFor}) after ${refusals} injected refusals`);
        stoppedByInjectedError++;
        if (process.env.PSIMBOLS_FUZZ_STATS) console.log(`stopped for good: ${closedFor} after ${JSON.stringify(steps.map((x) => x.kind))}`);
        return;
      }
      const last = () => client.request("echo", "last", { timeoutMs: 3000 });
      const retry = (e: { code?: string }) => (e.code === "connection_lost" || e.code === "unauthorised" ? last() : Promise.reject(e));
      assert.equal(await last().catch(retry), "last");
      assert.equal(uncaught, [], "something escaped the client");
    }
  }
}

test.after(() => {
  if (process.env.PSIMBOLS_FUZZ_STATS) console.log(`scenarios stopped for good by an injected error frame: ${stoppedByInjectedError}`);
});

test.run();

