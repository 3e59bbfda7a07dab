/**
 * Lifecycle events (docs/BACKEND.md "Events"): brokers in
 * this process on a real redis-server, real sockets, a real HTTP receiver for
 * the webhook. Events land in the Redis Stream in order, readable with a
 * consumer group; the webhook gets each one signed (Standard Webhooks),
 * retried after failures under the same id; a stalled webhook never blocks
 * the message path and its overflow is counted in /metrics.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { generateSigningKey, type SigningKey } from "../../../shared/crypto.js";
import { b64u, fromB64u } from "../../../shared/encoding.js";
import { connect } from "../../../client/node.js";
import { Broker } from "../../../server/broker.js";
import { RedisStore } from "../../../server/store/redis-store.js";
import { parseWrapKey } from "../../../server/store/wrap.js";
import { createLogger } from "../../../server/log.js";
import { type BrokerEvent, EVENT_DEFAULTS, Events, backoffMs, parseEventsUrl } from "../../../server/app/events.js";
import { parseSecrets } from "../../../server/app/signature.js";
import { WebhookSecret, verifyWebhook } from "../../../server/app/signature.js";
import { startRedis, type TestRedis } from "../../helpers/redis.js";
import { Raw, handshake, call, rawChannel } from "../../helpers/raw.js";
import { runCli, startBroker } from "../../helpers/broker.js";

const t = suite("lifecycle events: Redis Stream and webhook");
const log = createLogger({ level: process.env.TEST_LOG ?? "error" });
const wrapKey = randomBytes(32).toString("base64url");
const secretText = WebhookSecret.generate();
const secrets = [WebhookSecret.parse(secretText)];
const STREAM = EVENT_DEFAULTS.streamKey;

let redis: TestRedis;
let reader: Redis;
let serverKey: SigningKey;
const started: { broker: Broker; events: Events }[] = [];

/** A webhook receiver: records every attempt; answers `failNext` attempts with 503, holds all answers while `hold`. */
interface Receiver {
  url: string;
  attempts: { headers: Record<string, string | undefined>; body: string; status: number }[];
  failNext: number;
  hold: boolean;
  held: ServerResponse[];
  server: Server;
}
async function receiver(): Promise<Receiver> {
  const r: Receiver = { url: "", attempts: [], failNext: 0, hold: false, held: [], server: undefined as unknown as Server };
  r.server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d: string) => (body += d));
    req.on("end", () => {
      if (r.hold) return void r.held.push(res);
      const status = r.failNext > 0 ? (r.failNext--, 503) : 204;
      r.attempts.push({ headers: req.headers as Record<string, string | undefined>, body, status });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((ok) => r.server.listen(0, "127.0.0.1", ok));
  const a = r.server.address();
  r.url = `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}/events`;
  return r;
}

let hook: Receiver;
let main: Broker;

async function startNode(name: string, events: Events, config: Record<string, unknown> = {}): Promise<Broker> {
  const store = new RedisStore({ url: redis.url, wrapKey: parseWrapKey(wrapKey), node: name });
  const broker = await Broker.start({
    config: { port: 0, node: name, limits: { hellosPerAddress: 1000 }, pushWindow: { count: 2, ageMs: 3600_000 }, ...config },
    serverKey,
    store,
    logger: log,
    events,
  });
  events.register(broker.metrics);
  started.push({ broker, events });
  return broker;
}

const url = (b: Broker) => `ws://127.0.0.1:${b.port}/`;
const client = (b: Broker, key: SigningKey, o: Record<string, unknown> = {}) =>
  connect(url(b), { key, serverKey: serverKey.public.fingerprint, reconnect: false, renew: false, ...o });

/** The stream's events about `identity`, in stream order. */
async function streamOf(identity: string): Promise<BrokerEvent[]> {
  const entries = await reader.xrange(STREAM, "-", "+");
  return entries.map(([, f]) => JSON.parse(f[f.indexOf("event") + 1]!) as BrokerEvent).filter((e) => e.identity === identity);
}

/** Polls until `f` holds (up to `ms`); returns its last value. */
async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  let v = await f();
  while (!ok(v) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 25));
    v = await f();
  }
  return v;
}

async function metric(b: Broker, name: string, labels: string): Promise<number> {
  const text = await b.metrics.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

t.before(async () => {
  redis = await startRedis();
  reader = new Redis(redis.url);
  serverKey = await generateSigningKey();
  hook = await receiver();
  main = await startNode("n1", new Events({ node: "n1", stream: { url: redis.url }, webhook: { url: hook.url, secrets }, retryBaseMs: 10, retryMaxMs: 40, logger: log }));
});
t.after(async () => {
  for (const { broker, events } of started) {
    await broker.close();
    await events.close(200);
  }
  for (const res of hook.held) res.end();
  hook.server.close();
  reader.disconnect();
  await redis.stop();
});

t("a channel's life lands in the stream in order: established, push.delivered, renewed, closed; each with a unique id, a time, the identity, the node, and no key", async () => {
  const key = await generateSigningKey();
  const id = key.public.fingerprint;
  const c = await client(main, key);
  const first = c.channel!.id;
  const got = new Promise((r) => c.on("push", (m, info) => r([m, info])));
  assert.is(await main.push({ identity: id }, { n: 1 }), 1);
  // The client's push handler names the push as push.delivered does: its seq and channel.
  assert.equal(await got, [{ n: 1 }, { seq: 1, channel: first }]);
  await c.renew();
  const second = c.channel!.id;
  assert.is.not(second, first);
  assert.equal(await c.request("channel.close"), { closed: true });
  await c.close();
  const evs = await until(() => streamOf(id), (e) => e.length >= 4);
  assert.equal(evs.map((e) => e.type), ["channel.established", "push.delivered", "channel.renewed", "channel.closed"]);
  assert.equal(evs[0]!.data, { channel: first, valid_until: evs[0]!.data.valid_until });
  assert.equal(evs[1]!.data, { channel: first, seq: 1 });
  assert.is(evs[2]!.data.channel, second);
  assert.is(evs[2]!.data.previous, first);
  assert.equal(evs[3]!.data, { channel: second });
  assert.is(new Set(evs.map((e) => e.id)).size, 4, "event ids repeat");
  for (const e of evs) {
    assert.match(e.id, /^evt_[A-Za-z0-9_-]{22}$/);
    assert.ok(Math.abs(Date.parse(e.time) - Date.now()) < 60_000, `bad time ${e.time}`);
    assert.is(e.node, "n1");
    assert.is(e.identity, id);
    assert.not.match(JSON.stringify(e), /"key"/);
  }
});

t("a backend reads the stream with a consumer group, acknowledges, and gets nothing twice", async () => {
  const key = await generateSigningKey();
  const c = await client(main, key);
  await c.close(); // closes its channel too
  await until(() => streamOf(key.public.fingerprint), (e) => e.length >= 2);
  await reader.xgroup("CREATE", STREAM, "backend", "0");
  const read = async () => (await reader.xreadgroup("GROUP", "backend", "worker-1", "COUNT", 10_000, "STREAMS", STREAM, ">")) as [string, [string, string[]][]][] | null;
  const batch = (await read())![0]![1];
  const all = await reader.xlen(STREAM);
  assert.is(batch.length, all, "the group did not get every entry");
  const mine = batch.filter(([, f]) => f[f.indexOf("identity") + 1] === key.public.fingerprint);
  assert.equal(mine.map(([, f]) => f[f.indexOf("type") + 1]), ["channel.established", "channel.closed"]);
  assert.is(await reader.xack(STREAM, "backend", ...batch.map(([id]) => id)), batch.length);
  assert.is(await read(), null, "delivered twice to the group");
  const pending = (await reader.xpending(STREAM, "backend")) as [number, ...unknown[]];
  assert.is(pending[0], 0);
});

t("replacement and revocation: established (with replaced), replaced, then revoked", async () => {
  const key = await generateSigningKey();
  const id = key.public.fingerprint;
  const a = await client(main, key);
  const first = a.channel!.id;
  const b = await client(main, key);
  const second = b.channel!.id;
  assert.equal(await main.revoke({ identity: id }), [second]);
  assert.equal(await main.revoke({ channel: second }), [], "revoked twice");
  await Promise.all([a.close(), b.close()]);
  const evs = await until(() => streamOf(id), (e) => e.length >= 4);
  assert.equal(evs.map((e) => e.type), ["channel.established", "channel.established", "channel.replaced", "channel.revoked"]);
  assert.is(evs[1]!.data.replaced, first);
  assert.equal(evs[2]!.data, { channel: first, by: second });
  assert.equal(evs[3]!.data, { channel: second, reason: "revoke" });
});

t("an identity move: the old identity's channel ends with channel.revoked, reason moved; the new identity's is established", async () => {
  const key = await generateSigningKey();
  const next = await generateSigningKey();
  const a = await client(main, key);
  const old = a.channel!.id;
  await a.moveIdentity(next);
  const moved = a.channel!.id;
  await a.close();
  const evs = await until(() => streamOf(key.public.fingerprint), (e) => e.some((x) => x.type === "channel.revoked"));
  assert.equal(evs.filter((e) => e.type === "channel.revoked").map((e) => e.data), [{ channel: old, reason: "moved" }]);
  const after = await until(() => streamOf(next.public.fingerprint), (e) => e.length >= 1);
  assert.equal([after[0]!.type, after[0]!.data.channel], ["channel.established", moved]);
});

t("pushes that fell out of the window before a resume: push.dropped names the seqs lost; then resumed", async () => {
  const key = await generateSigningKey();
  const id = key.public.fingerprint;
  const raw = await Raw.open(url(main));
  const ch = await handshake(raw, key);
  raw.close();
  for (let i = 1; i <= 5; i++) await main.push({ identity: id }, i); // the window keeps 2: 1..3 fall out
  const again = await Raw.open(url(main));
  const nonceC = new Uint8Array(randomBytes(32));
  again.send({ type: "resume", channel: ch.grant.channel, nonce: b64u(nonceC), last_push: 0 });
  const f = await again.next();
  assert.is(f.type, "resumed");
  Object.assign(ch, await rawChannel(ch.grant, ch.channelKey, nonceC, fromB64u(f.nonce, "nonce")));
  assert.equal((await call(again, ch, "echo", 1)).data, 1);
  const evs = await until(() => streamOf(id), (e) => e.some((x) => x.type === "push.dropped"));
  again.close();
  assert.equal(evs.map((e) => e.type), ["channel.established", "channel.resumed", "push.dropped"]);
  assert.equal(evs[1]!.data, { channel: ch.grant.channel, node: "n1" });
  assert.equal(evs[2]!.data, { channel: ch.grant.channel, after: 0, newest: 5 });
});

t("the webhook gets every event signed (Standard Webhooks 1.0), retried after 503 under the same id, in order", async () => {
  // Earlier tests' events first: the three refusals below must meet this test's events.
  await until(async () => started[0]!.events.webhook!.queued, (n) => n === 0);
  hook.failNext = 3;
  const key = await generateSigningKey();
  const id = key.public.fingerprint;
  const c = await client(main, key);
  const got = new Promise((r) => c.on("push", r));
  await main.push({ identity: id }, "hello");
  assert.is(await got, "hello");
  await c.request("channel.close");
  await c.close();
  const mine = () => hook.attempts.filter((a) => (JSON.parse(a.body) as BrokerEvent).identity === id);
  const attempts = await until(async () => mine(), (a) => a.filter((x) => x.status === 204).length >= 3);
  const delivered = attempts.filter((a) => a.status === 204);
  assert.equal(delivered.map((a) => (JSON.parse(a.body) as BrokerEvent).type), ["channel.established", "push.delivered", "channel.closed"]);
  assert.ok(attempts.length > delivered.length, "no attempt was refused: the 503s went elsewhere");
  for (const a of attempts) {
    assert.ok(verifyWebhook(secrets, a.headers, a.body), "signature does not verify");
    assert.is(a.headers["webhook-id"], (JSON.parse(a.body) as BrokerEvent).id);
    assert.is(a.headers["content-type"], "application/json");
  }
  // A failed attempt is retried under its id: the refused ids are among the delivered ones.
  const ok = new Set(delivered.map((a) => a.headers["webhook-id"]));
  for (const a of attempts.filter((x) => x.status !== 204)) assert.ok(ok.has(a.headers["webhook-id"]), "a refused event was never delivered");
  // Another secret does not verify them.
  assert.not.ok(verifyWebhook([WebhookSecret.parse(WebhookSecret.generate())], delivered[0]!.headers, delivered[0]!.body));
  // The same events, in the same order, as in the stream.
  assert.equal(delivered.map((a) => (JSON.parse(a.body) as BrokerEvent).id), (await streamOf(id)).map((e) => e.id));
});

t("a stalled events URL never blocks the message path: pushes and requests go on, overflow is counted in /metrics", async () => {
  const stalled = await receiver();
  stalled.hold = true;
  const node = await startNode("n2", new Events({ node: "n2", webhook: { url: stalled.url, secrets, timeoutMs: 60_000 }, queue: 3, logger: log }));
  const key = await generateSigningKey();
  const c = await client(node, key);
  const got: unknown[] = [];
  c.on("push", (m) => got.push(m));
  for (let i = 1; i <= 10; i++) await node.push({ identity: key.public.fingerprint }, i);
  for (let i = 0; i < 20; i++) assert.is(await c.request("echo", i), i);
  await until(async () => got.length, (n) => n === 10);
  assert.equal(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  // 11 events (established + 10 deliveries); 3 fit the queue (the first in flight), 8 overflow.
  await until(() => metric(node, "psimbols_events_total", 'destination="webhook",outcome="dropped"'), (n) => n === 8);
  assert.is(await metric(node, "psimbols_events_total", 'destination="webhook",outcome="dropped"'), 8);
  assert.is(await metric(node, "psimbols_events_queued", 'destination="webhook"'), 3);
  assert.is(await metric(node, "psimbols_events_total", 'destination="webhook",outcome="sent"'), 0);
  await c.close();
  for (const res of stalled.held) res.end();
  stalled.server.closeAllConnections();
  stalled.server.close();
});

t("expired: the node holding the channel's socket emits channel.expired at its deadline", async () => {
  const node = await startNode("n3", new Events({ node: "n3", stream: { url: redis.url }, logger: log }), { channelTtl: 2, expiringBefore: 0 });
  const key = await generateSigningKey();
  const c = await client(node, key);
  const ch = c.channel!.id;
  const expired = new Promise((r) => c.on("notice", (n) => n.kind === "expired" && r(n)));
  await expired;
  await c.close();
  const evs = await until(() => streamOf(key.public.fingerprint), (e) => e.length >= 2);
  assert.equal(evs.map((e) => [e.type, e.data.channel, e.node]), [["channel.established", ch, "n3"], ["channel.expired", ch, "n3"]]);
});

t("a stalled Redis: events wait in order and are all appended, none lost, once it answers again (at least once)", async () => {
  const own = await startRedis();
  const events = new Events({ node: "n5", stream: { url: own.url, key: "test:stall" }, retryBaseMs: 50, retryMaxMs: 200, logger: log });
  const r = new Redis(own.url);
  try {
    events.emit("channel.established", "SHA256:s", { channel: "c0" });
    await until(async () => events.stream!.counts.sent, (n) => n === 1);
    own.pause(); // SIGSTOP: the connection stays open, nothing answers (the appends time out after 2 s)
    for (let i = 1; i <= 5; i++) events.emit("push.delivered", "SHA256:s", { channel: "c0", seq: i });
    await until(async () => events.stream!.counts.failed, (n) => n >= 1, 6000);
    assert.is(events.stream!.counts.sent, 1);
    own.resume();
    await until(async () => events.stream!.counts.sent, (n) => n >= 6, 10_000);
    const seqs = (await r.xrange("test:stall", "-", "+")).map(([, f]) => (JSON.parse(f[f.indexOf("event") + 1]!) as BrokerEvent).data.seq ?? 0);
    // A timed-out append may have landed and been sent again: duplicates allowed, loss and reordering of first appearances not.
    assert.equal([...new Set(seqs)], [0, 1, 2, 3, 4, 5]);
    assert.is(events.stream!.counts.dropped, 0);
  } finally {
    own.resume();
    r.disconnect();
    await events.close(100);
    await own.stop();
  }
});

t("closing with a webhook that keeps failing: the retries during the close keep their backoff (a few attempts in 2 s, not one every 20 ms), then what is left is dropped and counted", async () => {
  let attempts = 0;
  const refusing = createServer((req, res) => {
    attempts++;
    req.resume();
    req.on("end", () => res.writeHead(401).end());
  });
  await new Promise<void>((r) => refusing.listen(0, "127.0.0.1", r));
  const port = (refusing.address() as { port: number }).port;
  const events = new Events({ node: "n6", webhook: { url: `http://127.0.0.1:${port}/e`, secrets }, retryBaseMs: 200, retryMaxMs: 30_000, logger: log });
  try {
    events.emit("channel.established", "SHA256:c", { channel: "c0" });
    await until(async () => attempts, (n) => n >= 1);
    const before = attempts;
    await events.close(2000);
    // Backoff doubles from 200 ms: within 2 s at most about 5 more attempts (one at once, then 0.2, 0.4, 0.8, 1.6 s caps).
    assert.ok(attempts - before <= 6, `${attempts - before} attempts during a 2 s close`);
    assert.is(events.webhook!.counts.dropped, 1);
  } finally {
    await new Promise((r) => refusing.close(r));
  }
});

t("the stream is bounded: XADD MAXLEN ~ trims it", async () => {
  const events = new Events({ node: "n4", stream: { url: redis.url, key: "test:bounded", maxLen: 10 }, logger: log });
  for (let i = 0; i < 500; i++) events.emit("push.delivered", "SHA256:x", { seq: i });
  await until(async () => events.stream!.counts.sent, (n) => n === 500);
  const len = await reader.xlen("test:bounded");
  assert.ok(len >= 10 && len < 500, `stream length ${len} is not trimmed to about 10`);
  await events.close(100);
});

t("settings: backoff is full jitter under the cap; secrets and the events URL fail fast without echoing them", () => {
  assert.is(backoffMs(0, 200, 30_000, () => 0.999), 199);
  assert.is(backoffMs(3, 200, 30_000, () => 0.5), 800);
  assert.is(backoffMs(40, 200, 30_000, () => 0.999), 29_970);
  assert.is(backoffMs(5, 200, 30_000, () => 0), 0);
  assert.is(parseSecrets(undefined, "PSIMBOLS_UPSTREAM_SECRET").length, 0);
  assert.is(parseSecrets(`${secretText} ${WebhookSecret.generate()}`, "PSIMBOLS_UPSTREAM_SECRET").length, 2);
  assert.throws(() => parseSecrets("whsec_c2hvcnQ=", "PSIMBOLS_UPSTREAM_SECRET"), (e: Error) => e instanceof TypeError && e.message.includes("PSIMBOLS_UPSTREAM_SECRET") && !e.message.includes("c2hvcnQ"));
  assert.throws(() => parseSecrets(`${secretText} ${secretText} ${secretText}`, "PSIMBOLS_UPSTREAM_SECRET"), /one secret, or two/);
  assert.throws(() => parseEventsUrl("ftp://x/"), /events-url/);
  assert.throws(() => parseEventsUrl("http://user:hunter2@[::1"), (e: Error) => e.message.includes("events-url") && !e.message.includes("hunter2"));
  assert.throws(() => new Events({ node: "x", webhook: { url: "http://127.0.0.1:1/", secrets: [] } }), /PSIMBOLS_UPSTREAM_SECRET/);
  assert.throws(() => new Events({ node: "x", queue: 0 }), /events-queue/);
});

t("psimbols serve --events-url: refused at start without PSIMBOLS_UPSTREAM_SECRET; with it, the node POSTs signed events", async () => {
  const env = { PSIMBOLS_UPSTREAM_SECRET: "" };
  const refused = await runCli(["serve", "--port", "0", "--events-url", hook.url, "--data-dir", (await import("../../helpers/broker.js")).tempDir()], env);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /--events-url needs PSIMBOLS_EVENTS_SECRET \(or the shared PSIMBOLS_UPSTREAM_SECRET\)/);
  const bad = await runCli(["serve", "--port", "0", "--events-url", "ftp://x/", "--data-dir", (await import("../../helpers/broker.js")).tempDir()], { PSIMBOLS_UPSTREAM_SECRET: secretText });
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /setting events-url/);
  const node = await startBroker(["--events-url", hook.url, "--node", "proc"], { env: { PSIMBOLS_UPSTREAM_SECRET: secretText } });
  try {
    const key = await generateSigningKey();
    const c = await connect(node.url, { key, serverKey: node.fingerprint, reconnect: false, renew: false });
    await c.close();
    const mine = () => hook.attempts.filter((a) => a.status === 204 && (JSON.parse(a.body) as BrokerEvent).identity === key.public.fingerprint);
    const got = await until(async () => mine(), (a) => a.length >= 2);
    assert.equal(got.map((a) => [(JSON.parse(a.body) as BrokerEvent).type, (JSON.parse(a.body) as BrokerEvent).node]), [["channel.established", "proc"], ["channel.closed", "proc"]]);
    for (const a of got) assert.ok(verifyWebhook(secrets, a.headers, a.body));
  } finally {
    await node.stop();
  }
});

t.run();
