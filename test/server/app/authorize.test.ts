/**
 * The authorize hook (docs/BACKEND.md): a real broker process on a real
 * Redis asking a real HTTP hook, on the first handshake and on renewal.
 * A refusal is the closed service's `forbidden`; no usable answer is
 * `unavailable` (fail closed); in both cases no channel is written.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { generateSigningKey, type SigningKey } from "../../../shared/crypto.js";
import { fromUtf8 } from "../../../shared/encoding.js";
import { CloseCode } from "../../../shared/errors.js";
import { type Challenge, decodeServerFrame } from "../../../shared/frames.js";
import { answerChallenge, createHello } from "../../../shared/handshake.js";
import { WebhookSecret, verifyWebhook } from "../../../server/app/signature.js";
import { join } from "node:path";
import { loadKey } from "../../../node/key-files.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../../helpers/broker.js";
import { type Frame, Raw, call, handshake, openPush, resume } from "../../helpers/raw.js";
import { type TestRedis, startRedis } from "../../helpers/redis.js";
import { AppServer, json } from "../../helpers/app-server.js";

const t = suite("authorize hook");
const SECRET = WebhookSecret.generate();
const env = { PSIMBOLS_UPSTREAM_SECRET: SECRET, PSIMBOLS_WRAP_KEY: randomBytes(32).toString("base64url") };
let app: AppServer;
let redis: TestRedis;
let db: Redis;
let broker: RunningBroker;
/** Fingerprint → the hook's answer; absent: allow with info. */
const decide = new Map<string, (res: import("node:http").ServerResponse) => void | Promise<void>>();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function channelKeys(): Promise<string[]> {
  return (await db.keys("psimbols:ch:*")).sort();
}

/** Hello, challenge, proof on `raw` as `key` (moving to `moveTo` if given); returns the frame answering the proof. */
async function prove(raw: Raw, key: SigningKey, moveTo?: SigningKey): Promise<Frame> {
  const h = await createHello(key, moveTo ? { moveTo } : {});
  raw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
  raw.send((await answerChallenge(h, c, () => {})).proof);
  return raw.next();
}

t.before(async () => {
  app = await AppServer.start();
  app.on("/auth", async (r, res) => {
    const d = decide.get(r.json.identity.fingerprint);
    if (d) return d(res);
    json(res, { allow: true, ttl: 120, info: { plan: "gold", user: "u-1" } });
  });
  app.on("/rpc", (r, res) => json(res, { data: { info: r.json.info } }));
  redis = await startRedis();
  db = new Redis(redis.url);
  broker = await startBroker(
    ["--redis", redis.url, "--authorize", app.url("/auth"), "--authorize-timeout", "400", "--upstream", app.url("/rpc"), "--hellos-per-address", "1000"],
    { env },
  );
});
t.after(async () => {
  await broker.stop();
  db.disconnect();
  await redis.stop();
  await app.close();
});

t("allow: the hook gets the identity, public key, address and renewal=false, signed; the channel gets its ttl and info", async () => {
  const me = await generateSigningKey();
  const n = app.to("/auth").length;
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, me);
  const q = app.to("/auth")[n]!;
  assert.is(q.json.type, "authorize");
  assert.is(q.json.identity.fingerprint, me.public.fingerprint);
  assert.is(q.json.identity.public_key.type, me.public.type);
  assert.is(q.json.address, "127.0.0.1");
  assert.is(q.json.renewal, false);
  assert.is(q.json.role, null, "a key the service does not know has no role");
  assert.is(q.json.move_to, null, "not a move");
  assert.is(q.json.ttl, 3600);
  assert.ok(verifyWebhook([WebhookSecret.parse(SECRET)], q.headers, q.body));
  assert.is(ch.grant.ttl, 120, "the shorter ttl of the answer");
  assert.equal(await call(raw, ch, "app.whoami"), { data: { info: { plan: "gold", user: "u-1" } } });
  raw.close();
});

t("info is wrapped at rest, and a resume on the channel still carries it", async () => {
  const me = await generateSigningKey();
  decide.set(me.public.fingerprint, (res) => json(res, { allow: true, info: { secret_plan: "platinum-7731" } }));
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, me);
  const h = await db.hgetall(`psimbols:ch:${ch.grant.channel}`);
  assert.type(h.app, "string");
  assert.not.match(JSON.stringify(h), "platinum-7731");
  raw.close();
  const r2 = await Raw.open(broker.url);
  assert.is((await resume(r2, ch)).type, "resumed");
  assert.equal(await call(r2, ch, "app.whoami"), { data: { info: { secret_plan: "platinum-7731" } } });
  r2.close();
});

t("deny on the first handshake: forbidden with the closed service's message, close 4008, nothing written", async () => {
  const me = await generateSigningKey();
  decide.set(me.public.fingerprint, (res) => json(res, { allow: false }));
  const before = await channelKeys();
  const raw = await Raw.open(broker.url);
  const f = await prove(raw, me);
  assert.equal(f.error, { code: "forbidden", message: "this key is not registered with the service" });
  assert.is((await raw.closed).code, CloseCode.forbidden.code);
  assert.equal(await channelKeys(), before);
  assert.is(await db.get(`psimbols:active:${me.public.fingerprint}`), null);
});

for (const [name, answer] of [
  ["slow", async (res: import("node:http").ServerResponse) => (await sleep(1000), json(res, { allow: true }))],
  ["5xx", (res: import("node:http").ServerResponse) => json(res, { allow: true }, 502)],
  ["garbage", (res: import("node:http").ServerResponse) => json(res, "allow")],
  ["allow not boolean", (res: import("node:http").ServerResponse) => json(res, { allow: "yes" })],
  ["ttl out of range", (res: import("node:http").ServerResponse) => json(res, { allow: true, ttl: 99_999 })],
  ["huge info", (res: import("node:http").ServerResponse) => json(res, { allow: true, info: "i".repeat(5000) })],
] as const) {
  t(`hook ${name}: unavailable (fail closed), the socket stays for a retry, nothing written`, async () => {
    const me = await generateSigningKey();
    decide.set(me.public.fingerprint, answer);
    const before = await channelKeys();
    const raw = await Raw.open(broker.url);
    const f = await prove(raw, me);
    assert.is(f.error?.code, "unavailable", JSON.stringify(f));
    assert.equal(await channelKeys(), before);
    // Fixed: the same socket may try again.
    decide.delete(me.public.fingerprint);
    await handshake(raw, me);
    raw.close();
  });
}

t("hook down: unavailable, nothing written", async () => {
  const down = await AppServer.start();
  const port = down.port;
  await down.close();
  const b = await startBroker(["--redis", redis.url, "--authorize", `http://127.0.0.1:${port}/auth`], { env });
  try {
    const before = await channelKeys();
    const raw = await Raw.open(b.url);
    assert.is((await prove(raw, await generateSigningKey())).error?.code, "unavailable");
    assert.equal(await channelKeys(), before);
    const text = await (await fetch(`http://127.0.0.1:${b.port}/metrics`)).text();
    assert.match(text, 'psimbols_authorize_total{outcome="refused"} 1');
    raw.close();
  } finally {
    await b.stop();
  }
});

t("renewal asks again with renewal=true; allowed, the new channel replaces the old", async () => {
  const me = await generateSigningKey();
  const raw = await Raw.open(broker.url);
  const first = await handshake(raw, me);
  const n = app.to("/auth").length;
  const second = await handshake(raw, me);
  assert.is(app.to("/auth")[n]!.json.renewal, true);
  assert.is.not(second.grant.channel, first.grant.channel);
  assert.is(await db.hget(`psimbols:ch:${first.grant.channel}`, "retired"), "replaced");
  raw.close();
});

t("renewal denied: the revoked notice with reason forbidden on the current channel, then forbidden, close 4008; the channel is revoked (a resume learns it)", async () => {
  const me = await generateSigningKey();
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, me);
  decide.set(me.public.fingerprint, (res) => json(res, { allow: false }));
  const notice = await prove(raw, me);
  assert.is(notice.type, "push", JSON.stringify(notice));
  assert.equal(await openPush(ch, notice), { notice: "revoked", reason: "forbidden" });
  const f = await raw.next();
  assert.equal(f.error?.code, "forbidden");
  assert.is((await raw.closed).code, CloseCode.forbidden.code);
  assert.is(await db.hget(`psimbols:ch:${ch.grant.channel}`, "retired"), "revoked");
  const r2 = await Raw.open(broker.url);
  assert.is((await resume(r2, ch)).type, "resumed");
  const answer = await call(r2, ch, "echo", 1);
  assert.is(answer.error?.code, "unauthorised");
  r2.close();
});

t("renewal denied: the backend gets channel.revoked with reason authorize for the current channel, and no other event after established", async () => {
  const me = await generateSigningKey();
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, me);
  decide.set(me.public.fingerprint, (res) => json(res, { allow: false }));
  await prove(raw, me);
  assert.is((await raw.closed).code, CloseCode.forbidden.code);
  const events = async () =>
    (await db.xrange("psimbols:events", "-", "+"))
      .map(([, fields]) => JSON.parse(fields[fields.indexOf("event") + 1]!) as { type: string; identity: string; data: Record<string, unknown> })
      .filter((e) => e.identity === me.public.fingerprint)
      .map((e) => [e.type, e.data]);
  let seen = await events();
  for (let i = 0; i < 30 && seen.length < 2; i++) (await sleep(100), (seen = await events()));
  await sleep(200);
  assert.equal((await events()).slice(1), [["channel.revoked", { channel: ch.grant.channel, reason: "authorize" }]], JSON.stringify(seen));
  assert.is(seen[0]![0], "channel.established");
});

t("renewal while the hook is down: unavailable, the current channel keeps serving", async () => {
  const me = await generateSigningKey();
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, me);
  decide.set(me.public.fingerprint, (res) => json(res, {}, 503));
  assert.is((await prove(raw, me)).error?.code, "unavailable");
  assert.equal(await call(raw, ch, "echo", "on"), { data: "on" });
  assert.is(await db.hget(`psimbols:ch:${ch.grant.channel}`, "retired"), null);
  raw.close();
});

t("renewal while the hook is slow: unavailable after the timeout, the current channel keeps serving", async () => {
  const me = await generateSigningKey();
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, me);
  decide.set(me.public.fingerprint, async (res) => (await sleep(1000), json(res, { allow: false })));
  const started = Date.now();
  assert.is((await prove(raw, me)).error?.code, "unavailable");
  assert.ok(Date.now() - started < 1000, "waited past the authorize timeout");
  assert.equal(await call(raw, ch, "echo", "on"), { data: "on" });
  assert.is(await db.hget(`psimbols:ch:${ch.grant.channel}`, "retired"), null);
  raw.close();
});

t("a hook slower than the handshake timeout: the socket closes with 4001 and the late allow writes no channel", async () => {
  const b = await startBroker(["--redis", redis.url, "--authorize", app.url("/auth"), "--authorize-timeout", "3000", "--handshake-timeout", "800"], { env });
  try {
    const me = await generateSigningKey();
    let answered = false;
    decide.set(me.public.fingerprint, async (res) => {
      await sleep(1500);
      json(res, { allow: true });
      answered = true;
    });
    const before = await channelKeys();
    const raw = await Raw.open(b.url);
    const h = await createHello(me);
    raw.send(fromUtf8(h.bytes));
    const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
    raw.send((await answerChallenge(h, c, () => {})).proof);
    assert.is((await raw.closed).code, CloseCode.handshakeTimeout.code);
    while (!answered) await sleep(50);
    await sleep(200);
    assert.equal(await channelKeys(), before);
    assert.is(await db.get(`psimbols:active:${me.public.fingerprint}`), null);
  } finally {
    await b.stop();
  }
});

/** A key file registered in the broker's Redis with `role`; returns the key. */
async function registeredInRedis(role: string): Promise<SigningKey> {
  const file = join(tempDir(), "key.pem");
  assert.is((await runCli(["keygen", "-o", file])).code, 0);
  const r = await runCli(["keys", "add", file, "--role", role, "--redis", redis.url]);
  assert.is(r.code, 0, r.stderr);
  return loadKey(file);
}

const registration = async (fp: string) => (await db.hget("psimbols:keys", fp)) ?? undefined;

t("a move by a key the hook denies: the hook is asked about the move (old key, its role, the new key beside it); forbidden 4008 and nothing moves", async () => {
  const denied = await registeredInRedis("operator");
  const fresh = await generateSigningKey();
  decide.set(denied.public.fingerprint, (res) => json(res, { allow: false }));
  // A plain handshake of the denied key is refused.
  let raw = await Raw.open(broker.url);
  assert.equal((await prove(raw, denied)).error?.code, "forbidden");
  const before = { registered: await registration(denied.public.fingerprint), channels: await channelKeys() };
  // The move to a fresh key (one the hook would allow on its own) is refused too.
  raw = await Raw.open(broker.url);
  const n = app.to("/auth").length;
  const f = await prove(raw, denied, fresh);
  assert.equal(f.error, { code: "forbidden", message: "this key is not registered with the service" });
  assert.is((await raw.closed).code, CloseCode.forbidden.code);
  const asked = app.to("/auth").slice(n);
  assert.is(asked.length, 1, "asked once");
  const q = asked[0]!.json;
  assert.is(q.identity.fingerprint, denied.public.fingerprint, "identity: the key that holds the registration");
  assert.is(q.role, "operator");
  assert.is(q.renewal, false);
  assert.is(q.move_to.fingerprint, fresh.public.fingerprint);
  assert.equal(q.move_to.public_key.type, fresh.public.type);
  assert.type(q.move_to.public_key.data, "string");
  // Nothing moved: the registration is still the old key's, the new key has none, no channel was written.
  assert.is(await registration(denied.public.fingerprint), before.registered);
  assert.is(await registration(fresh.public.fingerprint), undefined);
  assert.equal(await channelKeys(), before.channels);
  assert.is(await db.get(`psimbols:active:${fresh.public.fingerprint}`), null);
  // The fresh key on its own is allowed, with no role: admin.* stays closed to it.
  raw = await Raw.open(broker.url);
  const ch = await handshake(raw, fresh);
  assert.equal((await call(raw, ch, "admin.channels")).error?.code, "forbidden");
  raw.close();
});

t("a move the hook allows: asked about the old key (move_to the new), then the new key (move_from the old); the registration and the channel go to the new key", async () => {
  const mover = await registeredInRedis("client");
  const next = await generateSigningKey();
  const n = app.to("/auth").length;
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, mover, { moveTo: next });
  const asked = app.to("/auth").slice(n);
  assert.is(asked.length, 2);
  assert.is(asked[0]!.json.identity.fingerprint, mover.public.fingerprint);
  assert.is(asked[0]!.json.move_to.fingerprint, next.public.fingerprint);
  assert.is(asked[0]!.json.move_from, null);
  assert.is(asked[0]!.json.role, "client");
  assert.is(asked[1]!.json.identity.fingerprint, next.public.fingerprint);
  assert.is(asked[1]!.json.move_to, null);
  assert.is(asked[1]!.json.move_from.fingerprint, mover.public.fingerprint);
  assert.is(asked[1]!.json.role, "client", "the role that would move");
  assert.is(await registration(mover.public.fingerprint), undefined);
  assert.is(JSON.parse((await registration(next.public.fingerprint))!).role, "client");
  assert.equal((await call(raw, ch, "whoami")).data?.identity, next.public.fingerprint);
  raw.close();
});

t("a move to a key the hook denies (a hook that judges identity alone): forbidden 4008, nothing moves, the denied key gets no channel", async () => {
  const mover = await registeredInRedis("client");
  const denied = await generateSigningKey();
  decide.set(denied.public.fingerprint, (res) => json(res, { allow: false }));
  const before = { registered: await registration(mover.public.fingerprint), channels: await channelKeys() };
  const raw = await Raw.open(broker.url);
  const f = await prove(raw, mover, denied);
  assert.equal(f.error, { code: "forbidden", message: "this key is not registered with the service" });
  assert.is((await raw.closed).code, CloseCode.forbidden.code);
  assert.is(await registration(mover.public.fingerprint), before.registered);
  assert.is(await registration(denied.public.fingerprint), undefined);
  assert.equal(await channelKeys(), before.channels);
  assert.is(await db.get(`psimbols:active:${denied.public.fingerprint}`), null);
});

t("with --closed both must allow, for a handshake and for a move: an unregistered key is refused without asking the hook, a registered one the hook refuses is refused and moves nothing", async () => {
  const dir = tempDir();
  const keys = join(dir, "keys.json");
  assert.is((await runCli(["keygen", "-o", join(dir, "member.pem")])).code, 0);
  assert.is((await runCli(["keys", "add", join(dir, "member.pem"), "--file", keys])).code, 0);
  const member = await loadKey(join(dir, "member.pem"));
  const b = await startBroker(["--closed", "--keys", keys, "--authorize", app.url("/auth"), "--hellos-per-address", "1000"], { env });
  try {
    const stranger = await generateSigningKey();
    const asked = () => app.to("/auth").filter((r) => r.json.identity.fingerprint === stranger.public.fingerprint).length;
    let raw = await Raw.open(b.url);
    assert.is((await prove(raw, stranger)).error?.code, "forbidden");
    assert.is(asked(), 0, "the hook was asked about an unregistered key");
    raw = await Raw.open(b.url);
    const n = app.to("/auth").length;
    await handshake(raw, member); // registered, and the hook allows
    assert.is(app.to("/auth")[n]!.json.role, "client", "the registered role travels with the question");
    raw.close();
    decide.set(member.public.fingerprint, (res) => json(res, { allow: false }));
    raw = await Raw.open(b.url);
    const f = await prove(raw, member);
    assert.equal(f.error, { code: "forbidden", message: "this key is not registered with the service" });
    // Moves too: an unregistered key cannot move (the hook is not asked), a registered one the hook refuses moves nothing.
    const target = await generateSigningKey();
    raw = await Raw.open(b.url);
    assert.is((await prove(raw, stranger, target)).error?.code, "forbidden");
    assert.is(asked(), 0, "the hook was asked about a move of an unregistered key");
    raw = await Raw.open(b.url);
    assert.is((await prove(raw, member, target)).error?.code, "forbidden");
    const list = (await runCli(["keys", "list", "--json", "--file", keys])).stdout;
    assert.match(list, member.public.fingerprint);
    assert.not.match(list, target.public.fingerprint);
  } finally {
    await b.stop();
  }
});

t.run();
