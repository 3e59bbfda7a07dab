/**
 * The server API's limit on failed authentications (docs/BACKEND.md "Server
 * API", "Failed authentications"): a sliding window per address, not a clock
 * window, so a burst across a window's boundary gets no more than the limit;
 * a success neither counts nor resets; with Redis two nodes share one count,
 * and a node whose Redis is gone keeps counting on its own. Real HTTP calls
 * to ApiServer listeners, a real redis-server.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { generateSigningKey } from "../../../shared/crypto.js";
import { Broker } from "../../../server/broker.js";
import { createLogger } from "../../../server/log.js";
import { ApiServer, type ApiOptions } from "../../../server/api/server.js";
import { FileTokenStore, newToken } from "../../../server/api/tokens.js";
import { tempDir } from "../../helpers/broker.js";
import { type TestRedis, startRedis } from "../../helpers/redis.js";

const t = suite("API failure window");
const log = createLogger({ level: "error" });
let broker: Broker;
let tokensFile: string;
let token: string;
let redis: TestRedis;
const servers: ApiServer[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function start(o: Partial<ApiOptions>): Promise<ApiServer> {
  const s = await ApiServer.start({ broker, tokens: new FileTokenStore(tokensFile), host: "127.0.0.1", port: 0, logger: log, ...o });
  servers.push(s);
  return s;
}

/** GET /v1/stats with `tok`: the status and retry-after. */
async function stats(s: ApiServer, tok: string): Promise<{ status: number; retryAfter: string | null }> {
  const r = await fetch(new URL("v1/stats", s.url), { headers: { authorization: `Bearer ${tok}` } });
  await r.arrayBuffer();
  return { status: r.status, retryAfter: r.headers.get("retry-after") };
}

const WRONG = newToken().token; // well-formed, not stored

t.before(async () => {
  tokensFile = join(tempDir(), "api-tokens.json");
  const made = newToken("test");
  await new FileTokenStore(tokensFile).add(made.entry);
  token = made.token;
  broker = await Broker.start({ config: { port: 0, node: "f" }, serverKey: await generateSigningKey(), logger: log });
  redis = await startRedis();
});
t.after(async () => {
  for (const s of servers) await s.close();
  await broker.close();
  await redis.stop();
});

t("a burst across a window boundary gets no more failures than the limit: the window slides, it is not a clock window", async () => {
  const windowMs = 4000;
  const s = await start({ failuresPerAddress: 5, failureWindowMs: windowMs });
  // Four failures just before a multiple of the window (where a clock window would start afresh), one after it ...
  while (Date.now() % windowMs < 3000 || Date.now() % windowMs > 3200) await sleep(10);
  for (let i = 0; i < 4; i++) assert.is((await stats(s, WRONG)).status, 401, `before the boundary, ${i}`);
  const fourth = Date.now();
  assert.ok(fourth % windowMs >= 3000, "the first four took more than 800 ms");
  while (Date.now() % windowMs >= 3000 || Date.now() < fourth + 500) await sleep(20);
  assert.is((await stats(s, WRONG)).status, 401, "after the boundary");
  // ... and the limit is reached: blocked, the right token too, until the first four are 2 s old.
  const blocked = await stats(s, WRONG);
  assert.is(blocked.status, 429, "a burst across the boundary got more than the limit");
  assert.ok(Number(blocked.retryAfter) >= 3 && Number(blocked.retryAfter) <= 4, `retry-after ${blocked.retryAfter}`);
  assert.is((await stats(s, token)).status, 429);
  // 429s are not counted: once the first four leave the window, one failure is left in it, so four more are allowed.
  await sleep(fourth + windowMs + 100 - Date.now());
  assert.is((await stats(s, token)).status, 200, "not let in again");
  for (let i = 0; i < 4; i++) assert.is((await stats(s, WRONG)).status, 401, `after the window, ${i}`);
  assert.is((await stats(s, WRONG)).status, 429, "the failure left in the window was forgotten");
});

t("a success neither counts nor resets: four failures, a success, one failure, then 429", async () => {
  const s = await start({ failuresPerAddress: 5, failureWindowMs: 60_000 });
  for (let i = 0; i < 4; i++) assert.is((await stats(s, WRONG)).status, 401);
  for (let i = 0; i < 20; i++) assert.is((await stats(s, token)).status, 200);
  assert.is((await stats(s, WRONG)).status, 401);
  const r = await stats(s, token);
  assert.is(r.status, 429);
  assert.ok(Number(r.retryAfter) > 50 && Number(r.retryAfter) <= 60, `retry-after ${r.retryAfter}`);
});

t("with Redis two nodes share one count: failures on each add up, and both refuse", async () => {
  const a = await start({ failuresPerAddress: 4, failureWindowMs: 60_000, redis: redis.url });
  const b = await start({ failuresPerAddress: 4, failureWindowMs: 60_000, redis: redis.url });
  assert.is((await stats(a, WRONG)).status, 401);
  assert.is((await stats(b, WRONG)).status, 401);
  assert.is((await stats(a, WRONG)).status, 401);
  assert.is((await stats(b, token)).status, 200);
  assert.is((await stats(b, WRONG)).status, 401);
  for (const s of [a, b]) {
    const r = await stats(s, token);
    assert.is(r.status, 429, "the other node's failures were not counted");
    assert.ok(Number(r.retryAfter) > 50 && Number(r.retryAfter) <= 60, `retry-after ${r.retryAfter}`);
  }
});

t("with Redis gone a node keeps counting on its own, and still answers a right token", async () => {
  const r2 = await startRedis();
  try {
    const a = await start({ failuresPerAddress: 3, failureWindowMs: 60_000, redis: r2.url });
    assert.is((await stats(a, WRONG)).status, 401);
    r2.kill();
    assert.is((await stats(a, token)).status, 200);
    assert.is((await stats(a, WRONG)).status, 401);
    assert.is((await stats(a, WRONG)).status, 401);
    assert.is((await stats(a, WRONG)).status, 429, "the node stopped counting when Redis went");
  } finally {
    await r2.stop();
  }
});

t.run();
