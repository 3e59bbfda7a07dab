/**
 * Admission by capacity (PROTOCOL.md §11.4), on real broker processes over
 * real sockets: an overloaded node refuses new handshakes early, with a retry
 * hint, instead of letting them time out; an idle node admits a burst above
 * the old fixed budget (200 hellos a second); a flood of unproven hellos from
 * many addresses cannot starve the resumes of proven channels. Source
 * addresses are 127.0.x.y (all of 127/8 is loopback on Linux), each socket
 * bound to its own. The Admission class on a fake clock is at the end.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import WebSocket from "ws";
import { generateSigningKey } from "../../shared/crypto.js";
import { fromUtf8 } from "../../shared/encoding.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type ClientHello, answerChallenge, createHello } from "../../shared/handshake.js";
import { type Challenge, type ErrorFrame, decodeServerFrame } from "../../shared/frames.js";
import { type Client, connect } from "../../client/node.js";
import { Admission, Work } from "../../server/admission.js";
import { resolveConfig } from "../../server/config.js";
import { startBroker } from "../helpers/broker.js";
import { startProxy } from "../helpers/proxy.js";
import { startBusyRelay } from "../helpers/busy-relay.js";
import { useNodeCrypto } from "../../node/engines.js";

// The test's own side of the handshakes on node:crypto, in this thread (WebCrypto's thread pool would take the broker's CPU).
await useNodeCrypto();

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How one raw handshake ended. */
type Outcome = { kind: "established" } | { kind: "refused"; code: string; retryAfterMs: number | undefined } | { kind: "closed"; code: number } | { kind: "silent" };

/** Opens a socket from `localAddress`; resolves once it is open. */
function open(url: string, localAddress: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { localAddress });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

/**
 * Runs one handshake on `ws` with the prepared hello `h`: sends it at once, answers the challenge,
 * and reports how it ended (within `ms`).
 */
function run(ws: WebSocket, h: ClientHello, ms: number): Promise<Outcome> {
  return new Promise((resolve) => {
    let done = false;
    const end = (o: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ws.terminate();
      resolve(o);
    };
    const timer = setTimeout(() => end({ kind: "silent" }), ms);
    ws.on("message", (d: Buffer) => {
      const f = JSON.parse(d.toString()) as { type: string; error?: { code: string }; retry_after_ms?: number };
      if (f.type === "challenge") {
        answerChallenge(h, f as unknown as Challenge, () => {}).then(
          ({ proof }) => ws.send(JSON.stringify(proof)),
          () => end({ kind: "closed", code: -1 }),
        );
      } else if (f.type === "established") end({ kind: "established" });
      else if (f.type === "error") end({ kind: "refused", code: f.error!.code, retryAfterMs: f.retry_after_ms });
    });
    ws.once("close", (code) => end({ kind: "closed", code }));
    ws.send(fromUtf8(h.bytes));
  });
}

function tally(outcomes: Outcome[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const o of outcomes) {
    const k = o.kind === "refused" ? `refused ${o.code}${o.retryAfterMs === undefined ? "" : " +hint"}` : o.kind === "closed" ? `closed ${o.code}` : o.kind;
    t[k] = (t[k] ?? 0) + 1;
  }
  return t;
}

/** `n` hellos of `n` fresh keys, made before any socket opens (the test's own signing is not part of the load). */
async function hellos(n: number): Promise<ClientHello[]> {
  return Promise.all(Array.from({ length: n }, async () => createHello(await generateSigningKey())));
}

/** `connect`, tried again after the node's hint while it answers `too_many` (a first connect's failure is final). */
async function connectRetrying(url: string, key: Awaited<ReturnType<typeof generateSigningKey>>, serverKey: string): Promise<Client> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connect(url, { key, serverKey, reconnect: { baseMs: 100, maxMs: 1000 } });
    } catch (e) {
      if (!(e instanceof PsimbolsError) || e.code !== ErrorCode.tooMany || e.retryAfterMs === undefined || attempt >= 50) throw e;
      await sleep(e.retryAfterMs + Math.random() * 100);
    }
  }
}

// ------------------------------------------------------------------ the flood, in a process of its own

interface FloodMsg {
  url: string;
  addresses: string[];
  /** Sockets open at once. */
  concurrency: number;
  ms: number;
}

/**
 * Hellos that never prove: each socket sends a prepared hello (the node does its half of the
 * handshake for it) and is dropped at the first answer, a fresh one taking its place.
 */
async function flood(m: FloodMsg): Promise<void> {
  const prepared = await hellos(20);
  const until = Date.now() + m.ms;
  let sent = 0;
  let i = 0;
  await Promise.all(
    Array.from({ length: m.concurrency }, async () => {
      while (Date.now() < until) {
        const n = i++;
        try {
          const ws = await open(m.url, m.addresses[n % m.addresses.length]!);
          await new Promise<void>((r) => {
            ws.once("message", () => r());
            ws.once("close", () => r());
            ws.send(fromUtf8(prepared[n % prepared.length]!.bytes));
            sent++;
          });
          ws.terminate();
        } catch {
          await sleep(20);
        }
      }
    }),
  );
  process.send!({ sent });
}

if (process.env.PSIMBOLS_ADMISSION_FLOOD) {
  process.once("message", (m) =>
    void flood(m as FloodMsg).then(
      () => process.exit(0),
      (e: unknown) => (console.error(e), process.exit(1)),
    ),
  );
} else {
  const t = suite("admission by capacity (PROTOCOL.md §11.4)");

  t("an overloaded node refuses new handshakes with a retry hint instead of timing them out", async () => {
    // 1,200 hellos at once, from 40 addresses (under their per-address limits, raised here: the node's
    // capacity is what is tested), against a handshake time of 4 s: more work than the node can finish in it.
    const broker = await startBroker(["--hellos-per-address", "100000", "--handshake-timeout", "4000"]);
    try {
      const n = 1200;
      const hs = await hellos(n);
      const sockets = await Promise.all(hs.map((_, i) => open(broker.url, `127.0.9.${(i % 40) + 1}`)));
      // The 1,200 upgrades were work too: let the node's lag settle first, so that the burst of hellos is
      // what it meets (once, on a slow host beside other tests, that lag refused every hello of the burst).
      for (const until = Date.now() + 2000; Date.now() < until; await sleep(100)) {
        const lag = Number(/^psimbols_event_loop_lag_ms (\S+)/m.exec(await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text())?.[1]);
        if (lag < 20) break;
      }
      const outcomes = await Promise.all(sockets.map((ws, i) => run(ws, hs[i]!, 8000)));
      const t = tally(outcomes);
      const timedOut = outcomes.filter((o) => (o.kind === "closed" && o.code === 4001) || o.kind === "silent").length;
      assert.is(timedOut, 0, `no handshake timed out: ${JSON.stringify(t)}`);
      const refused = outcomes.filter((o) => o.kind === "refused");
      assert.ok(refused.length > 0, `the burst was more than the node could take at once: ${JSON.stringify(t)}`);
      for (const o of refused) {
        assert.is(o.kind === "refused" && o.code, "too_many", JSON.stringify(t));
        assert.ok(o.kind === "refused" && o.retryAfterMs !== undefined && o.retryAfterMs >= 200 && o.retryAfterMs <= 5000, `each refusal says how long to wait: ${JSON.stringify(t)}`);
      }
      assert.ok(t.established! > 0, `the node admitted what it could finish: ${JSON.stringify(t)}`);
      const metrics = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
      assert.match(metrics, /psimbols_admission_refused_total\{work="hello"\} [1-9]/);
    } finally {
      await broker.stop();
    }
  });

  t("a node with room admits a burst above the old fixed budget: 300 handshakes in 0.8 s, none refused", async () => {
    // The old node budget was 200 hellos a second: a burst of 300 within one second got 100 refused, whatever
    // the node's load. No number binds now, only the lag: a target of 1 s (of the node's own work) is one this
    // host meets even when other processes keep it busy (the default's behaviour under load is the test above).
    const broker = await startBroker(["--hello-lag", "1000", "--resume-lag", "1000"]);
    try {
      const n = 300;
      const hs = await hellos(n);
      // 30 addresses, 10 hellos each: within the per-address window (20 per 10 s).
      const sockets = await Promise.all(hs.map((_, i) => open(broker.url, `127.0.10.${(i % 30) + 1}`)));
      // Start just after a one-second window begins, so that the old budget's window holds the whole burst.
      await sleep(1000 - (Date.now() % 1000) + 20);
      const t0 = Date.now();
      const outcomes = await Promise.all(sockets.map(async (ws, i) => (await sleep((i * 800) / n), run(ws, hs[i]!, 8000))));
      const t = tally(outcomes);
      assert.is(t.established, n, `all ${n} established (in ${Date.now() - t0} ms): ${JSON.stringify(t)}`);
    } finally {
      await broker.stop();
    }
  });

  t("a flood of unproven hellos from 60 addresses cannot starve the resumes of 100 proven channels", async () => {
    // The flood's addresses have their per-address limits raised (as many addresses would give it), and the
    // hello target is 5 ms, so that a flood one process can send is more than the node takes, on any host;
    // resumes keep the default target (300 ms). With the two targets equal, resumes are refused (and retried).
    const broker = await startBroker(["--hellos-per-address", "100000", "--max-connections-per-address", "1000", "--hello-lag", "5", "--resume-lag", process.env.PSIMBOLS_TEST_RESUME_LAG ?? "300"]);
    const proxy = await startProxy(broker.port);
    const clients: Client[] = [];
    const children = [0].map(() => fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, PSIMBOLS_ADMISSION_FLOOD: "1" }, stdio: ["ignore", "inherit", "inherit", "ipc"] }));
    try {
      const keys = await Promise.all(Array.from({ length: 100 }, () => generateSigningKey()));
      for (let i = 0; i < keys.length; i += 20) {
        clients.push(...(await Promise.all(keys.slice(i, i + 20).map((key) => connectRetrying(proxy.url, key, broker.fingerprint)))));
      }
      const resumed = new Set<Client>();
      let handshakes = 0;
      const refusals: string[] = [];
      for (const c of clients) {
        c.on("resumed", () => resumed.add(c));
        c.on("established", () => handshakes++);
        c.on("error", (e) => e.code !== "connection_lost" && refusals.push(e.code));
      }
      const flooded = Promise.all(children.map((c) => new Promise<{ sent: number }>((r) => c.once("message", (m) => r(m as { sent: number })))));
      children.forEach((c, k) => c.send({ url: broker.url, addresses: Array.from({ length: 60 }, (_, i) => `127.0.${11 + k}.${i + 1}`), concurrency: 200, ms: 12_000 } satisfies FloodMsg));
      await sleep(3000); // the flood at full strength
      const t0 = Date.now();
      proxy.cut();
      while (resumed.size < clients.length && Date.now() - t0 < 8000) await sleep(50);
      const took = Date.now() - t0;
      const metrics = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
      const refusedHellos = Number(/psimbols_admission_refused_total\{work="hello"\} (\d+)/.exec(metrics)?.[1] ?? 0);
      const sent = (await flooded).reduce((a, f) => a + f.sent, 0);
      assert.ok(refusedHellos > 0, `the flood was more than the node could take (${sent} hellos sent, none refused)`);
      assert.is(resumed.size, clients.length, `all resumed within 8 s (${resumed.size}/${clients.length}, refusals ${JSON.stringify(refusals)}, flood ${sent} hellos, ${refusedHellos} refused)`);
      assert.equal(refusals, [], "no resume refused");
      assert.is(handshakes, 0, "no client needed a new handshake");
      console.log(`  ${clients.length} resumed in ${took} ms under a flood of ${sent} hellos (${refusedHellos} refused by capacity); client refusals: ${JSON.stringify(refusals)}`);
    } finally {
      for (const c of children) c.kill("SIGKILL");
      await Promise.allSettled(clients.map((c) => c.close()));
      proxy.close();
      await broker.stop();
    }
  });

  t("a renewal refused by capacity keeps its socket: the channel serves on, and what is in flight on it is answered", async () => {
    // The flood of the test above, from other addresses, keeps the node at its hello target (5 ms); a client
    // bound before it renews again and again until one renewal is refused. Closing its socket (as the node
    // once did) cost a resume, and failed what was in flight in a client that does not send it again.
    const broker = await startBroker(["--hellos-per-address", "100000", "--max-connections-per-address", "1000", "--hello-lag", "5"]);
    const child = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, PSIMBOLS_ADMISSION_FLOOD: "1" }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const c = await connectRetrying(broker.url, await generateSigningKey(), broker.fingerprint);
    try {
      let closes = 0;
      c.on("resumed", () => closes++);
      c.on("established", (info) => {
        if (!info.renewed) closes++;
      });
      child.send({ url: broker.url, addresses: Array.from({ length: 60 }, (_, i) => `127.0.21.${i + 1}`), concurrency: 200, ms: 12_000 } satisfies FloodMsg);
      await sleep(2000);
      let refused: PsimbolsError | undefined;
      let renewed = 0;
      for (const until = Date.now() + 9000; !refused && Date.now() < until; ) {
        const inFlight = Promise.all([1, 2, 3].map((n) => c.request("echo", n, { timeoutMs: 9000 })));
        const r = await c.renew().then(() => undefined, (e: unknown) => e);
        if (r instanceof PsimbolsError && r.code === ErrorCode.tooMany && r.retryAfterMs !== undefined) refused = r;
        else if (r === undefined) renewed++;
        assert.equal(await inFlight, [1, 2, 3], "what was in flight at the renewal is answered");
      }
      assert.ok(refused, `a renewal was refused by capacity under the flood (${renewed} renewed)`);
      assert.is(await c.request("echo", "after"), "after", "the channel serves on");
      assert.is(c.stats.resumes, 0, "the socket stayed: no resume");
      assert.is(closes, 0, "no resume, no new handshake");
    } finally {
      child.kill("SIGKILL");
      await c.close();
      await broker.stop();
    }
  });

  t("the client waits the node's retry_after_ms before it tries again, then resumes", async () => {
    // A relay in front of a real broker answers the client's first frame on its second connection as a busy
    // node would (§11.4); every other connection passes through. Without the hint the client's backoff
    // (20–100 ms here) would bring it back at once.
    const broker = await startBroker([]);
    const relay = await startBusyRelay(broker.url, (n) => (n === 2 ? { ms: 1500 } : undefined));
    const c = await connect(relay.url, { key: await generateSigningKey(), serverKey: broker.fingerprint, reconnect: { baseMs: 20, maxMs: 100 } });
    const opened = relay.opened;
    try {
      const errors: PsimbolsError[] = [];
      c.on("error", (e) => errors.push(e));
      const resumed = new Promise<number>((r) => c.on("resumed", () => r(Date.now())));
      relay.cut(); // the first connection drops: the client reconnects and resumes
      const at = await Promise.race([resumed, sleep(8000).then(() => NaN)]);
      assert.ok(opened.length >= 3, `connections: ${opened.length}`);
      const busy = errors.find((e) => e.code === ErrorCode.tooMany);
      assert.is(busy?.retryAfterMs, 1500, "the refusal reached the application with its hint");
      assert.ok(opened[2]! - relay.refusedAt >= 1500, `the next try came ${opened[2]! - relay.refusedAt} ms after the refusal`);
      assert.ok(at - relay.refusedAt < 3000, "and the channel resumed");
    } finally {
      await c.close();
      relay.close();
      await broker.stop();
    }
  });

  t("a renewal refused by a busy node while the channel serves is tried again no sooner than the hint", async () => {
    // The relay refuses the renewal's hello and keeps the socket (the channel still serves). The first
    // renewal retry of the client's own is 1 to 2 s later; the hint here is 2.5 s.
    const broker = await startBroker([]);
    const hellos: number[] = [];
    let busy = false;
    const relay = await startBusyRelay(broker.url, (_n, type) => {
      if (type !== "hello") return undefined;
      hellos.push(Date.now());
      if (!busy) return undefined;
      busy = false;
      return { ms: 2500, keepOpen: true };
    });
    const c = await connect(relay.url, { key: await generateSigningKey(), serverKey: broker.fingerprint });
    try {
      const first = c.channel!.id;
      busy = true;
      const e = await c.renew().then(() => undefined, (x: unknown) => x);
      assert.ok(e instanceof PsimbolsError && e.code === ErrorCode.tooMany && e.retryAfterMs === 2500, String(e));
      assert.is(await c.request("echo", 1), 1, "the channel still serves");
      for (const deadline = Date.now() + 6000; hellos.length < 3 && Date.now() < deadline; ) await sleep(20);
      assert.ok(hellos.length >= 3, "the renewal was tried again");
      assert.ok(hellos[2]! - hellos[1]! >= 2500, `renewed again ${hellos[2]! - hellos[1]!} ms after a 2500 ms hint`);
      for (const deadline = Date.now() + 5000; c.channel!.id === first && Date.now() < deadline; ) await sleep(20);
      assert.is.not(c.channel!.id, first, "and the renewal went through");
    } finally {
      await c.close();
      relay.close();
      await broker.stop();
    }
  });

  t("error frames: retry_after_ms is an integer 0..60000 and is kept; anything else is refused (bad_request)", () => {
    const frame = (v: unknown) => JSON.stringify({ type: "error", error: { code: "too_many", message: "this node is busy; try again in 1500 ms" }, retry_after_ms: v });
    assert.is((decodeServerFrame(frame(1500)) as ErrorFrame).retry_after_ms, 1500);
    assert.is((decodeServerFrame(frame(0)) as ErrorFrame).retry_after_ms, 0);
    assert.is((decodeServerFrame(JSON.stringify({ type: "error", error: { code: "too_many", message: "m" } })) as ErrorFrame).retry_after_ms, undefined);
    for (const bad of [60_001, -1, 1.5, "1500", null]) {
      assert.throws(() => decodeServerFrame(frame(bad)), (e: unknown) => e instanceof PsimbolsError && e.code === ErrorCode.badRequest, String(bad));
    }
  });

  t("settings: resume-lag below hello-lag, or either above half the handshake timeout, is refused naming the settings; the node-wide caps are off at 0 and never negative", () => {
    assert.throws(() => resolveConfig({ limits: { helloLagMs: 200, resumeLagMs: 100 } }), /settings hello-lag and resume-lag: resume-lag \(100 ms\) must be at least hello-lag \(200 ms\)/);
    assert.throws(() => resolveConfig({ limits: { helloLagMs: 0 } }), /setting hello-lag \(ms\): expected an integer in 1\.\./);
    assert.throws(() => resolveConfig({ limits: { hellosPerSecond: -1 } }), /setting hellos-per-second: expected an integer in 0\.\./);
    // A target near the handshake time would let admitted handshakes time out in the queue.
    assert.throws(() => resolveConfig({ limits: { helloLagMs: 60_000, resumeLagMs: 60_000 } }), /each at most half the handshake timeout \(5000 ms\)/);
    assert.throws(() => resolveConfig({ limits: { resumeLagMs: 3000, handshakeTimeoutMs: 4000 } }), /each at most half the handshake timeout \(2000 ms\)/);
    assert.is(resolveConfig({ limits: { helloLagMs: 5000, resumeLagMs: 5000 } }).limits.resumeLagMs, 5000);
    const c = resolveConfig();
    assert.equal([c.limits.helloLagMs, c.limits.resumeLagMs, c.limits.hellosPerSecond, c.limits.resumesPerSecond], [100, 300, 0, 0]);
  });

  t("Admission: admits while the lag is under the target; resumes to a larger one; a late tick counts before it runs; only the node's own work counts", () => {
    let now = 0;
    // The node's CPU time: here it works all the time the clock runs (its own work makes it late), unless `idle` (its host is busy).
    let idleMs = 0;
    const a = new Admission({ helloLagMs: 50, resumeLagMs: 150 }, () => now, () => now - idleMs);
    now = 10;
    a.sample(); // on time
    a.sample(); // on time
    assert.ok(a.admit(Work.hello));
    now = 50; // the next tick (due at 20) is 30 ms late and has not run: a batch of work in one turn of the loop
    assert.ok(a.admit(Work.hello));
    now = 80; // 60 ms late
    assert.not.ok(a.admit(Work.hello), "past the hello target");
    assert.ok(a.admit(Work.resume), "resumes: under their own target");
    assert.is(a.retryAfterMs(), 240, "four times the lag");
    now = 200; // 170 ms late
    assert.not.ok(a.admit(Work.resume));
    a.sample(); // the late tick runs: the smoothed lag is 170 and falls by a quarter of the difference per tick
    for (let i = 0; i < 3; i++) {
      now += 10;
      a.sample();
    }
    assert.ok(a.lagMs() > 50 && a.lagMs() < 170, String(a.lagMs()));
    for (let i = 0; i < 20; i++) {
      now += 10;
      a.sample();
    }
    assert.ok(a.admit(Work.hello), "back under the target once the loop keeps up");
    assert.equal(a.refused, { hello: 1, resume: 1 });
    // Late by 200 ms, but the process used 5 ms of CPU meanwhile: other processes kept the host busy, not its own work.
    idleMs += 195;
    now += 210;
    assert.ok(a.admit(Work.hello), "a late tick without work of the node's own does not count");
    a.sample();
    assert.ok(a.lagMs() < 50, String(a.lagMs()));
    assert.is(a.retryAfterMs(), 200, "at least 200 ms");
  });

  t.run();
}
