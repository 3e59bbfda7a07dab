/**
 * The client library at a renewal the application's authorize hook refuses
 * or cannot answer (docs/BACKEND.md §3, PROTOCOL.md §7): a real broker
 * process on a real Redis asking a real HTTP hook. A refusal ends the client
 * with what the wire says (`forbidden`, close 4008) and the backend sees a
 * `channel.revoked` event with the reason; a hook that gives no answer is
 * retried with a backoff while the channel keeps serving.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import { Redis } from "ioredis";
import { generateSigningKey } from "../../shared/crypto.js";
import { ErrorCode } from "../../shared/errors.js";
import { type CloseEvent, connect } from "../../client/node.js";
import { WebhookSecret } from "../../server/app/signature.js";
import { type RunningBroker, startBroker } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";
import { AppServer, json } from "../helpers/app-server.js";

const t = suite("client at a refused renewal");
let app: AppServer;
let redis: TestRedis;
let db: Redis;
let broker: RunningBroker;
/** Fingerprint → the hook's answer; absent: allow. */
const decide = new Map<string, (res: ServerResponse) => void>();
/** Fingerprint → when each of its questions reached the hook. */
const arrivals = new Map<string, number[]>();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.before(async () => {
  app = await AppServer.start();
  app.on("/auth", (r, res) => {
    const fp = r.json.identity.fingerprint;
    arrivals.set(fp, [...(arrivals.get(fp) ?? []), Date.now()]);
    (decide.get(fp) ?? ((x) => json(x, { allow: true })))(res);
  });
  redis = await startRedis();
  db = new Redis(redis.url);
  broker = await startBroker(["--redis", redis.url, "--authorize", app.url("/auth"), "--authorize-timeout", "400", "--hellos-per-address", "1000"], {
    env: { PSIMBOLS_UPSTREAM_SECRET: WebhookSecret.generate(), PSIMBOLS_WRAP_KEY: randomBytes(32).toString("base64url") },
  });
});
t.after(async () => {
  await broker?.stop();
  db?.disconnect();
  await redis?.stop();
  await app?.close();
});

/** The events of the stream about `identity`, as [type, data]. */
async function events(identity: string): Promise<[string, Record<string, unknown>][]> {
  const entries = await db.xrange("psimbols:events", "-", "+");
  return entries
    .map(([, fields]) => JSON.parse(fields[fields.indexOf("event") + 1]!) as { type: string; identity: string; data: Record<string, unknown> })
    .filter((e) => e.identity === identity)
    .map((e) => [e.type, e.data]);
}

const asked = (fp: string) => app.to("/auth").filter((r) => r.json.identity.fingerprint === fp).length;

t("a renewal the hook refuses: the client closes with forbidden and 4008, as the wire says, and asks no more", async () => {
  const me = await generateSigningKey();
  const c = await connect(broker.url, { key: me, serverKey: broker.fingerprint, renew: false });
  const closed = new Promise<CloseEvent>((r) => c.on("close", r));
  const first = c.channel!.id;
  decide.set(me.public.fingerprint, (res) => json(res, { allow: false }));
  const n = asked(me.public.fingerprint);
  const e = await c.renew().then(() => undefined, (x: unknown) => x as { code?: string });
  assert.is(e?.code, ErrorCode.forbidden);
  const close = await closed;
  assert.is(close.code, 4008, JSON.stringify(close));
  assert.is(close.error?.code, ErrorCode.forbidden, JSON.stringify(close));
  await sleep(1000);
  assert.is(asked(me.public.fingerprint), n + 1, "the client asked again after a refusal");
  // The backend sees the end of the channel: a channel.revoked with the reason.
  let seen: [string, Record<string, unknown>][] = [];
  for (let i = 0; i < 20 && !seen.some(([type]) => type === "channel.revoked"); i++) (await sleep(100), (seen = await events(me.public.fingerprint)));
  assert.equal(
    seen.filter(([type]) => type === "channel.revoked"),
    [["channel.revoked", { channel: first, reason: "authorize" }]],
    JSON.stringify(seen),
  );
});

t("a renewal while the hook fails: the channel keeps serving and the client retries with a backoff (at most 2 tries within 2 s of the first), then renews", async () => {
  const me = await generateSigningKey();
  const c = await connect(broker.url, { key: me, serverKey: broker.fingerprint });
  try {
    const first = c.channel!.id;
    decide.set(me.public.fingerprint, (res) => json(res, {}, 503));
    const n = asked(me.public.fingerprint);
    const e = await c.renew().then(() => undefined, (x: unknown) => x as { code?: string });
    assert.is(e?.code, ErrorCode.unavailable);
    const failedAt = Date.now();
    while (Date.now() - failedAt < 2000) {
      assert.equal(await c.request("echo", "on"), "on");
      await sleep(100);
    }
    const times = arrivals.get(me.public.fingerprint)!.slice(n);
    const tries = times.filter((x) => x - times[0]! < 2000).length;
    assert.ok(tries <= 2, `${tries} renewal attempts within 2 s of the first: ${times.map((x) => x - times[0]!).join(", ")} ms`);
    // The hook is back: a later retry renews the channel.
    decide.delete(me.public.fingerprint);
    const deadline = Date.now() + 30_000;
    while (c.channel?.id === first && Date.now() < deadline) await sleep(100);
    assert.is.not(c.channel?.id, first, "the renewal was never retried");
  } finally {
    await c.close();
  }
});

t.run();
