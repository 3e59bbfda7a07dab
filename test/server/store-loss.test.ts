/**
 * The store-loss bound (PROTOCOL.md §10 close 4009, SECURITY.md "Partitions"):
 * two in-process nodes on one real redis-server; node A reaches Redis through
 * a TCP relay that the test stalls (both directions held, new connections
 * too: a silent partition, as a cut link looks to TCP). Node B reaches Redis
 * directly and revokes a channel bound on A meanwhile. A serves what it holds
 * until the bound, then closes every socket with 4009 and refuses hellos and
 * resumes; once Redis answers again the client resumes and learns, authenticated,
 * that its channel was revoked. The same across network namespaces:
 * test/partition/partition.test.ts.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { Broker } from "../../server/broker.js";
import { resolveConfig } from "../../server/config.js";
import { StoreWatch } from "../../server/store-watch.js";
import type { Store } from "../../server/store/store.js";
import { createLogger } from "../../server/log.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { type SigningKey, generateSigningKey, randomBytes } from "../../shared/crypto.js";
import { b64u, fromUtf8 } from "../../shared/encoding.js";
import { CloseCode, ErrorCode } from "../../shared/errors.js";
import { createHello } from "../../shared/handshake.js";
import { type Client, connect } from "../../client/node.js";
import { Raw, handshake } from "../helpers/raw.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";

const BOUND_MS = 2000;
/** Ping interval of the watch at this bound (a third of it, at most 1 s) plus scheduling slack on a busy machine. */
const SLACK_MS = 1000;

/** A TCP relay that can stall: while stalled nothing passes either way, on old or new connections; heal() lets it all through. */
interface Stall {
  port: number;
  stall(): void;
  heal(): void;
  close(): void;
}

async function startStall(targetPort: number): Promise<Stall> {
  let stalled = false;
  const pairs = new Set<{ down: Socket; up: Socket | undefined }>();
  const join = (p: { down: Socket; up: Socket | undefined }) => {
    p.up ??= createConnection(targetPort, "127.0.0.1");
    const end = () => {
      pairs.delete(p);
      p.down.destroy();
      p.up?.destroy();
    };
    p.up.on("error", end).on("close", end);
    p.down.pipe(p.up);
    p.up.pipe(p.down);
  };
  const server: Server = createServer((down) => {
    const p = { down, up: undefined as Socket | undefined };
    pairs.add(p);
    down.on("error", () => p.up?.destroy()).on("close", () => (pairs.delete(p), p.up?.destroy()));
    if (stalled) down.pause();
    else join(p);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as { port: number }).port,
    stall() {
      stalled = true;
      for (const p of pairs) {
        p.down.unpipe();
        p.up?.unpipe();
        p.down.pause();
        p.up?.pause();
      }
    },
    heal() {
      stalled = false;
      for (const p of pairs) {
        if (p.up) {
          p.down.pipe(p.up);
          p.up.pipe(p.down);
        } else join(p);
      }
    },
    close() {
      for (const p of pairs) (p.down.destroy(), p.up?.destroy());
      server.close();
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const t = suite("store-loss bound: a node cut off from Redis");
let redis: TestRedis;
let relay: Stall;
let serverKey: SigningKey;
let a: Broker;
let b: Broker;
let urlA: string;
const wrapKey = randomBytes(32);
const log = createLogger({ level: "error", json: true });

t.before(async () => {
  redis = await startRedis();
  relay = await startStall(redis.port);
  serverKey = await generateSigningKey();
  const limits = { hellosPerAddress: 10_000, storeLossBoundMs: BOUND_MS };
  const store = (port: number, node: string) => new RedisStore({ url: `redis://127.0.0.1:${port}`, wrapKey, node, logger: log });
  a = await Broker.start({ config: { port: 0, dataDir: "/nonexistent", node: "A", limits }, serverKey, store: store(relay.port, "A"), logger: log });
  b = await Broker.start({ config: { port: 0, dataDir: "/nonexistent", node: "B", limits }, serverKey, store: store(redis.port, "B"), logger: log });
  urlA = `ws://127.0.0.1:${a.port}/`;
});
/** Clients of the test, closed after it whatever happened (a failed assertion must not leave them reconnecting). */
const clients: Client[] = [];
t.after(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  relay?.heal();
  await Promise.allSettled([a?.close(), b?.close()]);
  relay?.close();
  await redis?.stop();
});

async function ready(url: string): Promise<number> {
  const r = await fetch(url.replace(/^ws/, "http") + "readyz", { signal: AbortSignal.timeout(3000) }).catch(() => undefined);
  return r?.status ?? 0;
}

t("serves until the bound, then closes with 4009; a revoked channel is served no longer than the bound; after the store is back /readyz says 200 only once a resume is taken, and the client learns of the revocation", async () => {
  const fast = { baseMs: 100, maxMs: 400 };
  const revokedClient: Client = await connect(urlA, { key: await generateSigningKey(), serverKey: serverKey.public.fingerprint, reconnect: fast });
  const keptClient: Client = await connect(urlA, { key: await generateSigningKey(), serverKey: serverKey.public.fingerprint, reconnect: fast });
  clients.push(revokedClient, keptClient);
  const notices: string[] = [];
  revokedClient.on("notice", (n) => notices.push(n.kind));
  const raw = await Raw.open(urlA);
  await handshake(raw, await generateSigningKey());
  const channel = ((await revokedClient.request("whoami", null)) as { channel: string }).channel;
  const kept = keptClient.channel!.id;
  assert.is(await ready(urlA), 200);

  relay.stall();
  const cutAt = Date.now();
  await sleep(100);
  assert.equal(await b.revoke({ channel }), [channel], "B reaches Redis and revokes the channel bound on A");
  const revokedAt = Date.now();

  // Requests on A go on being answered (A cannot hear the revocation) until the bound.
  let lastOk = 0;
  let served = 0;
  const closed = raw.closed;
  let closeCode: number | undefined;
  void closed.then((c) => (closeCode = c.code));
  while (Date.now() - cutAt < BOUND_MS + SLACK_MS + 1500) {
    try {
      await revokedClient.request("echo", 1, { timeoutMs: 300 });
      lastOk = Date.now();
      served++;
    } catch {
      /* refused or cut: what is measured is the last answer */
    }
    await sleep(50);
  }
  assert.ok(served > 3, `A kept serving during a short outage (${served} answers)`);
  assert.ok(lastOk - cutAt >= BOUND_MS / 2, `served at least half the bound (${lastOk - cutAt} ms)`);
  assert.ok(lastOk - revokedAt <= BOUND_MS + SLACK_MS, `the revoked channel was served ${lastOk - revokedAt} ms after its revocation (bound ${BOUND_MS} ms + ${SLACK_MS} ms)`);
  assert.is(closeCode, CloseCode.storeLost.code, "every socket on A is closed with 4009 (reconnect)");
  assert.is(await ready(urlA), 503, "A is out of the balancer's rotation");
  const metrics = async () => (await (await fetch(urlA.replace(/^ws/, "http") + "metrics")).text()).match(/^psimbols_store_lost (\d)/m)?.[1];
  assert.is(await metrics(), "1", "the loss is visible at /metrics");

  // While lost, A takes no channel: a hello and a resume get `unavailable` and 4009, before any work.
  const started = a.stats.handshakes.started;
  const h = await Raw.open(urlA);
  h.send(fromUtf8((await createHello(await generateSigningKey())).bytes));
  assert.is((await h.next()).error?.code, ErrorCode.unavailable);
  assert.is((await h.closed).code, CloseCode.storeLost.code);
  const r = await Raw.open(urlA);
  r.send({ type: "resume", channel: kept, nonce: b64u(randomBytes(32)) });
  assert.is((await r.next()).error?.code, ErrorCode.unavailable);
  assert.is((await r.closed).code, CloseCode.storeLost.code);
  assert.is(a.stats.handshakes.started, started, "no handshake work was started");
  assert.is(a.channels().length, 0, "nothing is bound on A");

  // Redis answers again: the kept client resumes its channel; the revoked one learns of the revocation.
  const resumed = new Promise<void>((res) => keptClient.on("resumed", () => res()));
  relay.heal();
  const healedAt = Date.now();
  // Ready means the node serves: from the first 200 of /readyz on, a resume is taken, not refused with 4009.
  let status = 0;
  while ((status = await ready(urlA)) !== 200 && Date.now() - healedAt < 10_000) await sleep(5);
  assert.is(status, 200, "A is ready again within 10 s of Redis coming back");
  const probe = await Raw.open(urlA);
  probe.send({ type: "resume", channel: b64u(randomBytes(16)), nonce: b64u(randomBytes(32)) });
  const answer = await probe.next();
  assert.is(answer.type, "resumed", `a resume right after /readyz said 200 got ${JSON.stringify(answer.error?.code ?? answer.type)}`);
  probe.close();
  await Promise.race([resumed, sleep(10_000).then(() => assert.unreachable("the kept client did not resume within 10 s"))]);
  const back = Date.now() - healedAt;
  assert.is(keptClient.channel!.id, kept, "the same channel, no new handshake");
  assert.equal(await keptClient.request("echo", 2), 2);
  assert.is(await metrics(), "0");
  const deadline = Date.now() + 10_000;
  while (!notices.includes("revoked") && Date.now() < deadline) await sleep(50);
  assert.ok(notices.includes("revoked"), `the revoked client got the revoked notice (notices: ${notices.join(",")})`);
  console.log(`    store-loss bound ${BOUND_MS} ms: revoked channel served ${lastOk - revokedAt} ms after revocation; served again ${back} ms after Redis came back`);
  await Promise.allSettled([revokedClient.close(), keptClient.close()]);
});

t.run();

// ------------------------------------------------------------------ the watch alone, on a fake clock

const w = suite("StoreWatch: when the store counts as lost");

/** A store whose ping the test settles by hand (only ping is used by the watch). */
function manualStore(): { store: Store; pings: { resolve(): void; reject(): void }[] } {
  const pings: { resolve(): void; reject(): void }[] = [];
  const store = { ping: () => new Promise<void>((resolve, reject) => pings.push({ resolve, reject: () => reject(new Error("down")) })) } as unknown as Store;
  return { store, pings };
}

w("counts the silence from when the last answered ping was sent, fires onLost once past the bound, onBack once after", async () => {
  let now = 0;
  const lost: number[] = [];
  const back: number[] = [];
  const { store, pings } = manualStore();
  const watch = new StoreWatch(store, { boundMs: 3000, intervalMs: 1_000_000, now: () => now, onLost: (ms) => lost.push(ms), onBack: (ms) => back.push(ms) });
  watch.start();
  let round = watch.check(); // ping sent at 0
  now = 400;
  pings.shift()!.resolve();
  await round;
  assert.is(watch.lastOk, 0, "the send time counts, not the answer's");
  now = 1000;
  round = watch.check(); // sent at 1000, never answered
  now = 2000;
  await watch.check(); // one still out: no second ping
  assert.is(pings.length, 1, "one ping at a time");
  now = 3000;
  await watch.check();
  assert.is(watch.lost, false, "3000 ms of silence is within the bound");
  now = 3001;
  await watch.check();
  assert.ok(watch.lost);
  assert.equal(lost, [3001]);
  now = 5000;
  await watch.check();
  assert.equal(lost, [3001], "told once per loss");
  pings.shift()!.reject();
  await round;
  now = 6000;
  round = watch.check();
  now = 6100;
  pings.shift()!.resolve();
  await round;
  assert.is(watch.lost, false);
  assert.equal(back, [6100 - 3001]);
  watch.stop();
});

w("a stopped watch never calls onLost", async () => {
  let now = 0;
  let lost = 0;
  const { store } = manualStore();
  const watch = new StoreWatch(store, { boundMs: 1000, now: () => now, onLost: () => lost++, onBack: () => {} });
  now = 10_000;
  await Promise.race([watch.check(), sleep(20)]);
  assert.is(lost, 0);
});

w("the bound is a setting that fails fast: below 1 s it names store-loss-bound", () => {
  assert.throws(() => resolveConfig({ limits: { storeLossBoundMs: 999 } }), /store-loss-bound/);
  assert.is(resolveConfig({}).limits.storeLossBoundMs, 15_000, "default 15 s");
  assert.throws(() => new StoreWatch(manualStore().store, { boundMs: 0, onLost: () => {}, onBack: () => {} }), (e: unknown) => e instanceof RangeError);
});

w.run();
