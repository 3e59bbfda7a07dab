/**
 * Both stores through the one contract suite, then what only the Redis store
 * promises: nothing secret at rest, tamper-evident wrapped keys, expiry in
 * Redis itself, fault recovery without help. Runs a real redis-server.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import winston from "winston";
import { MemoryStore } from "../../server/store/memory-store.js";
import { RedisStore, retryDelayMs } from "../../server/store/redis-store.js";
import { KeyUnwrapError, KeyWrapper, MAX_WRAPPED_BYTES, parseWrapKey } from "../../server/store/wrap.js";
import type { StoreEvent } from "../../server/store/store.js";
import { b64, b64u } from "../../shared/encoding.js";
import { randomBytes } from "../../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { HOLDER, WIDE, channelId, drain, identity, record, redisStoreUnderTest, sleep, storeContract, until } from "./store-contract.js";

let shared: Promise<TestRedis> | undefined;
/** One redis-server for the contract and most Redis tests; each store gets its own prefix. */
function redis(): Promise<TestRedis> {
  return (shared ??= startRedis());
}
function prefix(): string {
  return `t${b64u(randomBytes(6))}:`;
}

storeContract("memory", async () => {
  const store = new MemoryStore();
  // One process is one node: its peer is itself.
  return { store, peer: async () => store, cleanup: () => store.close(), pushEventsInSeqOrder: true };
});

storeContract("redis", async () => {
  const { url } = await redis();
  return redisStoreUnderTest(url);
});

// ---------------------------------------------------------------------------

const wrap = suite("key wrapping");

wrap("round-trips under the same channel id", async () => {
  const w = await KeyWrapper.create(randomBytes(32));
  const key = randomBytes(32);
  const wrapped = await w.wrap(key, "chan-1");
  assert.equal([...(await w.unwrap(wrapped, "chan-1"))], [...key]);
  assert.is.not(await w.wrap(key, "chan-1"), wrapped, "a fresh IV each time");
  assert.is(wrapped.length, b64u(new Uint8Array(12 + 32 + 16)).length);
});

wrap("the wrapped form is WebCrypto's AES-256-GCM both ways: records an older node wrote still open, and its peers open ours", async () => {
  // The stored bytes (iv || ciphertext || tag, the channel id as additional data) outlive the engine
  // that made them: a store holds values wrapped before KeyWrapper ran on node:crypto.
  const raw = randomBytes(32);
  const w = await KeyWrapper.create(raw);
  const web = await crypto.subtle.importKey("raw", raw as BufferSource, "AES-GCM", false, ["encrypt", "decrypt"]);
  const key = randomBytes(32);
  const iv = randomBytes(12);
  const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: iv as BufferSource, additionalData: Buffer.from("chan-1") }, web, key as BufferSource));
  const byWebCrypto = b64u(Uint8Array.from([...iv, ...sealed]));
  assert.equal([...(await w.unwrap(byWebCrypto, "chan-1"))], [...key]);
  const ours = Buffer.from(await w.wrap(key, "chan-2"), "base64url");
  const opened = await crypto.subtle.decrypt({ name: "AES-GCM", iv: ours.subarray(0, 12), additionalData: Buffer.from("chan-2") }, web, ours.subarray(12));
  assert.equal([...new Uint8Array(opened)], [...key]);
  raw.fill(0);
  assert.equal([...(await w.unwrap(byWebCrypto, "chan-1"))], [...key], "the wrapper keeps its own copy of the key");
});

wrap("a wrapped key with any byte flipped does not unwrap", async () => {
  const w = await KeyWrapper.create(randomBytes(32));
  const bytes = Uint8Array.from(Buffer.from(await w.wrap(randomBytes(32), "chan-1"), "base64url"));
  for (let i = 0; i < bytes.length; i++) {
    const t = bytes.slice();
    t[i]! ^= 0x01;
    try {
      await w.unwrap(b64u(t), "chan-1");
      assert.unreachable(`byte ${i} flipped still unwrapped`);
    } catch (e) {
      assert.instance(e, KeyUnwrapError);
    }
  }
});

wrap("does not unwrap under another channel id, another key, or truncated", async () => {
  const w = await KeyWrapper.create(randomBytes(32));
  const wrapped = await w.wrap(randomBytes(32), "chan-1");
  const bad: [KeyWrapper, string, string][] = [
    [w, wrapped, "chan-2"],
    [await KeyWrapper.create(randomBytes(32)), wrapped, "chan-1"],
    [w, wrapped.slice(0, 30), "chan-1"],
    [w, "", "chan-1"],
    [w, wrapped + "=", "chan-1"],
  ];
  for (const [k, text, aad] of bad) {
    try {
      await k.unwrap(text, aad);
      assert.unreachable("unwrapped");
    } catch (e) {
      assert.instance(e, KeyUnwrapError);
      assert.is((e as PsimbolsError).code, ErrorCode.unavailable);
      if (text.length >= 8) assert.not.ok((e as Error).message.includes(text.slice(0, 8)), "error does not echo the wrapped text");
    }
  }
});

wrap("parseWrapKey accepts 32 bytes of base64url and names the setting otherwise", () => {
  const raw = randomBytes(32);
  assert.equal([...parseWrapKey(b64u(raw))], [...raw]);
  const secretish = b64u(randomBytes(31));
  assert.throws(() => parseWrapKey(secretish, "store-wrap-key"), (e: Error) => e instanceof RangeError && /store-wrap-key/.test(e.message) && !e.message.includes(secretish));
  assert.throws(() => parseWrapKey("not base64url!", "k"), (e: Error) => e instanceof TypeError && /setting k/.test(e.message));
  assert.throws(() => parseWrapKey(b64(randomBytes(32)) + "==", "k"), TypeError);
  assert.throws(() => parseWrapKey(42), TypeError);
});

wrap("KeyWrapper.create rejects keys of the wrong size or type", async () => {
  for (const [bad, type] of [
    [randomBytes(16), RangeError],
    [randomBytes(33), RangeError],
    ["x".repeat(32), TypeError],
    [null, TypeError],
  ] as const) {
    try {
      await KeyWrapper.create(bad as unknown as Uint8Array);
      assert.unreachable("accepted");
    } catch (e) {
      assert.instance(e, type);
    }
  }
});

wrap.run();

// ---------------------------------------------------------------------------

const r = suite("redis store");

r.after(async () => {
  if (shared) await (await shared).stop();
});

/** Every key and value in the whole Redis, by type, as one buffer. */
async function dumpAll(url: string): Promise<Buffer> {
  const c = new Redis(url);
  try {
    const parts: Buffer[] = [];
    let cursor = "0";
    do {
      const [next, keys] = await c.scanBuffer(cursor, "COUNT", 500);
      cursor = next.toString();
      for (const k of keys) {
        parts.push(k);
        const type = await c.type(k);
        if (type === "string") parts.push((await c.getBuffer(k)) ?? Buffer.alloc(0));
        else if (type === "hash") for (const [f, v] of Object.entries(await c.hgetallBuffer(k))) parts.push(Buffer.from(f), v);
        else if (type === "list") parts.push(...(await c.lrangeBuffer(k, 0, -1)));
        else if (type === "set") parts.push(...(await c.smembersBuffer(k)));
        else if (type === "zset") parts.push(...(await c.zrangeBuffer(k, 0, -1)));
        else if (type === "stream") {
          for (const [id, fields] of await c.xrangeBuffer(k, "-", "+")) parts.push(id, ...fields);
        }
        else if (type === "none") continue; // expired between SCAN and TYPE (other tests' short-lived keys share this Redis)
        else assert.unreachable(`unexpected key type ${type}`);
      }
    } while (cursor !== "0");
    return Buffer.concat(parts);
  } finally {
    c.disconnect();
  }
}

r("a dump of Redis holds no channel key and no pushed data, in any encoding", async () => {
  const { url } = await redis();
  const wrapKey = randomBytes(32);
  const p = prefix();
  const store = new RedisStore({ url, wrapKey, prefix: p });
  try {
    const ident = identity();
    const recs = [record(ident), record(ident), record(identity()), record(identity())];
    for (const rec of recs) await store.activate(rec);
    await store.bind(recs[1]!.id, ident, "binding-1", HOLDER);
    await store.retire(recs[2]!.id, "revoked"); // a tombstone keeps its key, wrapped
    await store.hit("ip:127.0.0.1", 60_000);
    const secretText = "launch-code-" + b64u(randomBytes(12));
    const pushed = [JSON.stringify({ message: secretText }), secretText, JSON.stringify({ k: b64(randomBytes(24)) })];
    for (const d of pushed) await store.push(ident, d, WIDE);
    // The authorize hook's info is kept wrapped too (docs/BACKEND.md).
    await store.activate({ ...record(identity()), app: { publicKey: { type: "Ed25519", data: "AAAA" }, info: JSON.stringify({ note: secretText }) } });
    const dump = await dumpAll(url);
    const text = dump.toString("latin1");
    // The dump did cover the records and the window: their keys are there.
    for (const rec of recs.slice(1)) assert.ok(text.includes(p + "ch:" + rec.id), "record present in the dump");
    assert.ok(text.includes(p + "push:" + ident), "push window present in the dump");
    assert.equal(seqs(await store.pushesSince(ident, 0)), [1, 2, 3], "and it is readable through the store");
    for (const d of pushed) {
      const buf = Buffer.from(d, "utf8");
      assert.is(dump.indexOf(buf), -1, "pushed plaintext found in the dump");
      for (const enc of [buf.toString("base64"), buf.toString("base64url"), b64u(new Uint8Array(buf)), buf.toString("hex")]) {
        assert.not.ok(text.includes(enc), "encoded pushed data found in the dump");
      }
    }
    assert.is(dump.indexOf(Buffer.from(secretText)), -1, "the distinctive string itself");
    for (const secret of [...recs.map((x) => x.key), wrapKey]) {
      const buf = Buffer.from(secret);
      assert.is(dump.indexOf(buf), -1, "raw bytes");
      for (const enc of [b64u(secret), b64(secret), buf.toString("base64"), buf.toString("hex"), buf.toString("hex").toUpperCase()]) {
        assert.not.ok(text.includes(enc), "encoded key found in the dump");
      }
    }
  } finally {
    await store.close();
  }
});

r("a stored key tampered with in Redis makes getChannel reject, not return garbage", async () => {
  const { url } = await redis();
  const p = prefix();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  const c = new Redis(url);
  try {
    const rec = record(identity());
    await store.activate(rec);
    const wrapped = await c.hget(p + "ch:" + rec.id, "key");
    assert.ok(wrapped);
    const bytes = Buffer.from(wrapped, "base64url");
    bytes[bytes.length - 1]! ^= 0x80;
    await c.hset(p + "ch:" + rec.id, "key", b64u(bytes));
    try {
      await store.getChannel(rec.id);
      assert.unreachable("tampered record read");
    } catch (e) {
      assert.instance(e, KeyUnwrapError);
      assert.is((e as PsimbolsError).code, ErrorCode.unavailable);
    }
    // Moving a valid wrapped key onto another channel's record fails too (AAD = channel id).
    const other = record(identity());
    await store.activate(other);
    await c.hset(p + "ch:" + other.id, "key", wrapped);
    await assertRejects(store.getChannel(other.id), KeyUnwrapError);
    assert.equal(await store.listChannels(), [], "unreadable records are skipped in listings");
  } finally {
    c.disconnect();
    await store.close();
  }
});

r("a store with another key-wrapping key cannot read the records", async () => {
  const { url } = await redis();
  const p = prefix();
  const a = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  const b = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  try {
    const rec = record(identity());
    await a.activate(rec);
    await assertRejects(b.getChannel(rec.id), KeyUnwrapError);
  } finally {
    await a.close();
    await b.close();
  }
});

r("channel records, active pointers and counters carry a Redis expiry", async () => {
  const { url } = await redis();
  const p = prefix();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  const c = new Redis(url);
  try {
    const rec = record(identity(), 30_000);
    await store.activate(rec);
    await store.bind(rec.id, rec.identity, "b", HOLDER);
    for (const k of [p + "ch:" + rec.id, p + "active:" + rec.identity]) {
      const pttl = await c.pttl(k);
      assert.ok(pttl > 29_000 && pttl <= 30_000, `${k.slice(p.length, p.length + 7)} PTTL ${pttl}`);
    }
    assert.is(await c.hget(p + "ch:" + rec.id, "binding"), "b", "bind records the binding");
    const keys = await c.keys(p + "rl:*");
    assert.is(keys.length, 0);
    await store.hit("k", 5000);
    const [rl] = await c.keys(p + "rl:*");
    assert.ok(rl);
    const pttl = await c.pttl(rl);
    assert.ok(pttl > 0 && pttl <= 5000, `rl PTTL ${pttl}`);
    await store.push(rec.identity, "{}", WIDE);
    await store.retire(rec.id, "closed");
    // Every key this store wrote expires.
    for (const k of await c.keys(p + "*")) assert.ok((await c.pttl(k)) > 0, "key without expiry");
  } finally {
    c.disconnect();
    await store.close();
  }
});

r("bind on an unknown or foreign channel records nothing", async () => {
  const { url } = await redis();
  const p = prefix();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  const c = new Redis(url);
  try {
    const unknown = channelId();
    await store.bind(unknown, identity(), "b", HOLDER);
    assert.is(await c.exists(p + "ch:" + unknown), 0, "no record without expiry was created");
    const rec = record(identity());
    await store.activate(rec);
    await store.bind(rec.id, identity(), "intruder", HOLDER);
    assert.is(await c.hget(p + "ch:" + rec.id, "binding"), null);
  } finally {
    c.disconnect();
    await store.close();
  }
});

r("a tombstone keeps its Redis expiry, its key stays wrapped, and bind records nothing on it", async () => {
  const { url } = await redis();
  const p = prefix();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  const c = new Redis(url);
  try {
    const rec = record(identity(), 30_000);
    await store.activate(rec);
    await store.retire(rec.id, "revoked");
    const k = p + "ch:" + rec.id;
    const pttl = await c.pttl(k);
    assert.ok(pttl > 29_000 && pttl <= 30_000, `tombstone PTTL ${pttl}`);
    assert.is(await c.hget(k, "retired"), "revoked");
    assert.is(await c.exists(p + "active:" + rec.identity), 0, "the active pointer is gone");
    await store.bind(rec.id, rec.identity, "late", HOLDER);
    assert.is(await c.hget(k, "binding"), null);
    await c.hset(k, "retired", "bogus");
    await assertRejects(store.getChannel(rec.id), PsimbolsError); // a reason this code never writes
  } finally {
    c.disconnect();
    await store.close();
  }
});

r("push keys: the window is trimmed in Redis and expires when idle, the counter lives on", async () => {
  const { url } = await redis();
  const p = prefix();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p, pushSeqTtlMs: 3_600_000 });
  const c = new Redis(url);
  try {
    const id = identity();
    for (let i = 0; i < 7; i++) await store.push(id, `${i}`, { count: 3, ageMs: 300 });
    assert.is(await c.xlen(p + "push:" + id), 3, "trimmed to count, exactly");
    const streamTtl = await c.pttl(p + "push:" + id);
    assert.ok(streamTtl > 0 && streamTtl <= 300, `stream PTTL ${streamTtl}`);
    const seqTtl = await c.pttl(p + "pseq:" + id);
    assert.ok(seqTtl > 3_500_000 && seqTtl <= 3_600_000, `counter PTTL ${seqTtl}`);
    await sleep(400);
    assert.is(await c.exists(p + "push:" + id), 0, "an idle window leaves nothing behind");
    assert.is(await store.lastPush(id), 7);
    await store.push(id, "8", { count: 3, ageMs: 5000 });
    const entryId = (await c.xrange(p + "push:" + id, "-", "+"))[0]?.[0] ?? "";
    await store.push(id, "9", { count: 3, ageMs: 100 });
    // Trimming by age uses entry ids (Redis time): push 8 is young, so it stays.
    assert.is(await c.xlen(p + "push:" + id), 2);
    assert.match(entryId, /^\d+-\d+$/);
    // The default counter life outlasts any channel.
    const other = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
    try {
      await other.push(id + "-2", "x", WIDE);
      assert.ok((await c.pttl(p + "pseq:" + id + "-2")) > 366 * 86_400_000, "default counter life > 366 days");
    } finally {
      await other.close();
    }
  } finally {
    c.disconnect();
    await store.close();
  }
});

r("a wrapped push does not open under another identity or another seq", async () => {
  const { url } = await redis();
  const p = prefix();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  const c = new Redis(url);
  try {
    const a = identity();
    const b = identity();
    await store.push(a, '"for a"', WIDE);
    await store.push(a, '"for a, 2"', WIDE);
    await store.push(b, '"for b"', WIDE);
    const rowsA = (await c.xrange(p + "push:" + a, "-", "+")) as [string, string[]][];
    const fieldsOf = (row: [string, string[]]): Record<string, string> => Object.fromEntries(row[1].flatMap((v, i, arr) => (i % 2 ? [] : [[v, arr[i + 1]!]])));
    const a1 = fieldsOf(rowsA[0]!);
    const a2 = fieldsOf(rowsA[1]!);
    // Moved to b's stream with the same seq: AAD identity:seq differs.
    await c.del(p + "push:" + b);
    await c.xadd(p + "push:" + b, "*", "s", a1.s!, "e", a1.e!, "d", a1.d!);
    await assertRejects(store.pushesSince(b, 0), KeyUnwrapError);
    // Swapped within a's stream: each entry keeps its number, the data is the other's.
    await c.del(p + "push:" + a);
    await c.xadd(p + "push:" + a, "*", "s", "1", "e", a1.e!, "d", a2.d!);
    await c.xadd(p + "push:" + a, "*", "s", "2", "e", a2.e!, "d", a1.d!);
    await assertRejects(store.pushesSince(a, 0), KeyUnwrapError);
    assert.ok(a1.d!.length > 0 && !a1.d!.includes("for a"));
  } finally {
    c.disconnect();
    await store.close();
  }
});

r("a push event that does not unwrap is dropped; later events still arrive in order", async () => {
  const { url } = await redis();
  const p = prefix();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: p });
  const c = new Redis(url);
  try {
    const events: StoreEvent[] = [];
    store.onEvent((e) => events.push(e));
    const id = identity();
    store.watch(id);
    await drain(store, events);
    const forged = b64u(randomBytes(40));
    await c.publish(p + "ev:" + id, JSON.stringify({ kind: "push", identity: id, seq: 1, data: forged }));
    await c.publish(p + "ev:" + id, JSON.stringify({ kind: "push", identity: id, seq: 2, data: "x".repeat(MAX_WRAPPED_BYTES * 2) }));
    await store.push(id, '"real"', WIDE);
    await store.bind(channelId(), id, "after", HOLDER);
    await until(() => events.length === 2, 2000, "the real push and the rebound");
    assert.equal(
      events.map((e) => e.kind),
      ["push", "rebound"],
    );
    assert.equal(events[0], { kind: "push", identity: id, seq: 1, data: '"real"' });
  } finally {
    c.disconnect();
    await store.close();
  }
});

r("push rejects data over maxPushBytes before touching Redis", async () => {
  const { url } = await redis();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: prefix(), maxPushBytes: 1024 });
  try {
    const id = identity();
    await assertRejects(store.push(id, "é".repeat(513), WIDE), RangeError); // 1026 bytes of UTF-8
    assert.is(await store.push(id, "x".repeat(1024), WIDE), 1);
    assert.equal(seqs(await store.pushesSince(id, 0)), [1]);
  } finally {
    await store.close();
  }
});

r("listChannels takes the prefix literally, glob characters included", async () => {
  const { url } = await redis();
  const tag = b64u(randomBytes(4)).replace(/[-_]/g, "x");
  const star = new RedisStore({ url, wrapKey: randomBytes(32), prefix: `${tag}*:` });
  const plain = new RedisStore({ url, wrapKey: randomBytes(32), prefix: `${tag}q:` });
  try {
    const mine = record(identity());
    await star.activate(mine);
    await plain.activate(record(identity()));
    assert.equal((await star.listChannels()).map((x) => x.id), [mine.id]);
  } finally {
    await star.close();
    await plain.close();
  }
});

r("listChannels stops at listLimit", async () => {
  const { url } = await redis();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: prefix(), listLimit: 3 });
  try {
    for (let i = 0; i < 7; i++) await store.activate(record(identity()));
    assert.is((await store.listChannels()).length, 3);
  } finally {
    await store.close();
  }
});

r("events cross nodes: a replacement on one node reaches another that watches", async () => {
  const { url } = await redis();
  const p = prefix();
  const wrapKey = randomBytes(32);
  const a = new RedisStore({ url, wrapKey, prefix: p, node: "a" });
  const b = new RedisStore({ url, wrapKey, prefix: p, node: "b" });
  try {
    const events: StoreEvent[] = [];
    a.onEvent((e) => events.push(e));
    const id = identity();
    a.watch(id);
    await drain(a, events); // a's subscriptions are live in Redis
    const first = record(id);
    await b.activate(first);
    await a.bind(first.id, id, "on-a", HOLDER);
    await b.activate(record(id));
    await until(() => events.some((e) => e.kind === "retired"), 2000, "the replaced event on node a");
    assert.equal(events, [
      { kind: "rebound", identity: id, channel: first.id, binding: "on-a" },
      { kind: "retired", identity: id, channel: first.id, reason: "replaced" },
    ]);
    assert.equal([...(await a.getChannel((await a.activeChannel(id))!))!.key].length, 32, "node a reads what node b wrote");
  } finally {
    await a.close();
    await b.close();
  }
});

r("ping rejects within 2 s of Redis dying, and the store recovers by itself", async () => {
  const own = await startRedis();
  const p = prefix();
  const wrapKey = randomBytes(32);
  const resyncs: number[] = [];
  const store = new RedisStore({ url: own.url, wrapKey, prefix: p, retryMaxMs: 500 });
  store.onResync(() => resyncs.push(Date.now()));
  const events: StoreEvent[] = [];
  store.onEvent((e) => events.push(e));
  let other: RedisStore | undefined;
  try {
    const before = identity();
    store.watch(before);
    await store.ping();
    await drain(store, events);

    own.kill();
    let t0 = Date.now();
    await assertRejects(store.ping(), PsimbolsError);
    assert.ok(Date.now() - t0 < 2000, `ping took ${Date.now() - t0} ms to fail`);
    t0 = Date.now();
    const err = await assertRejects(store.activate(record(before)), PsimbolsError);
    assert.is(err.code, ErrorCode.unavailable);
    assert.ok(Date.now() - t0 < 2000, "writes fail fast while Redis is down");
    assert.is(resyncs.length, 0);

    const during = identity();
    store.watch(during); // watched while Redis is down: must be subscribed after the restart

    await own.restart();
    await until(() => resyncs.length === 1, 5000, "the resync signal");
    let up = false;
    const deadline = Date.now() + 5000;
    while (!up && Date.now() < deadline) {
      up = await store.ping().then(() => true, () => false);
      if (!up) await sleep(50); // a failing ping rejects at once: let the reconnect timer run
    }
    assert.ok(up, "ping resolves again");

    // Events written by another node, not only by this store, reach it again:
    // the subscriptions (including the one made during the outage) are live in Redis.
    other = new RedisStore({ url: own.url, wrapKey, prefix: p });
    for (const id of [before, during]) {
      const first = record(id);
      await other.activate(first);
      await other.activate(record(id));
      await until(() => events.some((e) => e.channel === first.id && e.kind === "retired"), 2000, "a replaced event after the restart");
    }
    // And the Lua scripts run again although the restarted Redis lost its script cache.
    assert.is(await store.retire((await store.activeChannel(before))!, "revoked"), true);
  } finally {
    await other?.close();
    await store.close();
    await own.stop();
  }
});

r("ping rejects within 2 s when Redis stalls, and a silent event connection is re-established", async () => {
  const own = await startRedis();
  const p = prefix();
  const wrapKey = randomBytes(32);
  const resyncs: number[] = [];
  const store = new RedisStore({ url: own.url, wrapKey, prefix: p, retryMaxMs: 200 });
  store.onResync(() => resyncs.push(Date.now()));
  const events: StoreEvent[] = [];
  store.onEvent((e) => events.push(e));
  let other: RedisStore | undefined;
  try {
    const id = identity();
    store.watch(id);
    await store.ping();
    await drain(store, events);

    own.pause(); // sockets stay open: nothing fails fast, only timeouts can tell
    const t0 = Date.now();
    await assertRejects(store.ping(), PsimbolsError);
    assert.ok(Date.now() - t0 < 2000, `ping took ${Date.now() - t0} ms to fail`);
    await sleep(200); // the stall outlasts the ping
    own.resume();

    await until(() => resyncs.length === 1, 5000, "the forced reconnect and resync");
    other = new RedisStore({ url: own.url, wrapKey, prefix: p });
    const first = record(id);
    await other.activate(first);
    await other.activate(record(id));
    await until(() => events.some((e) => e.channel === first.id), 2000, "a replaced event after the stall");
  } finally {
    own.resume();
    await other?.close();
    await store.close();
    await own.stop();
  }
});

r("errors and logs never carry the Redis password", async () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const logger = winston.createLogger({ level: "debug", transports: [new winston.transports.Stream({ stream: sink })] });
  const dead = await startRedis();
  const port = dead.port;
  await dead.stop(); // nothing listens there now
  const secret = "hunter2-" + b64u(randomBytes(8));
  const store = new RedisStore({ url: `redis://:${secret}@127.0.0.1:${port}`, wrapKey: randomBytes(32), logger, connectTimeoutMs: 300 });
  try {
    const t0 = Date.now();
    const err = await assertRejects(store.getChannel(channelId()), PsimbolsError);
    assert.ok(Date.now() - t0 < 1500, "the first call waits only connectTimeoutMs for a connection");
    assert.is(err.code, ErrorCode.unavailable);
    assert.not.ok(err.message.includes(secret));
    assert.not.ok(String(err.cause).includes(secret));
    await assertRejects(store.ping(), PsimbolsError);
    await sleep(100);
    assert.ok(lines.length > 0, "the outage was logged");
    assert.not.ok(lines.join("\n").includes(secret), "password in logs");
  } finally {
    await store.close();
  }
  assert.throws(() => new RedisStore({ url: `http://:${secret}@x`, wrapKey: randomBytes(32) }), (e: Error) => e instanceof TypeError && !e.message.includes(secret));
});

r("rejects malformed options and arguments with TypeError or RangeError", async () => {
  const url = "redis://127.0.0.1:1";
  assert.throws(() => new RedisStore({ url, wrapKey: randomBytes(31) }), RangeError);
  assert.throws(() => new RedisStore({ url, wrapKey: "k" as unknown as Uint8Array }), TypeError);
  assert.throws(() => new RedisStore({ url, wrapKey: randomBytes(32), pingTimeoutMs: 0 }), RangeError);
  const { url: live } = await redis();
  const store = new RedisStore({ url: live, wrapKey: randomBytes(32), prefix: prefix() });
  try {
    await assertRejects(store.hit("k", 0), RangeError);
    await assertRejects(store.retire(channelId(), "bogus" as "revoked"), RangeError);
    await assertRejects(store.getChannel(42 as unknown as string), TypeError);
    await assertRejects(store.activate({ ...record(identity()), type: "AES-128-GCM" as "AES-256-GCM" }), RangeError);
  } finally {
    await store.close();
  }
});

r("a closed store rejects calls", async () => {
  const { url } = await redis();
  const store = new RedisStore({ url, wrapKey: randomBytes(32), prefix: prefix() });
  await store.ping();
  await store.close();
  await assertRejects(store.ping(), PsimbolsError);
  await assertRejects(store.getChannel(channelId()), PsimbolsError);
  await store.close(); // idempotent
});

r("reconnect backoff grows, is capped, and is jittered", () => {
  assert.is(retryDelayMs(1, 50, 2000, () => 0), 25);
  assert.is(retryDelayMs(1, 50, 2000, () => 1), 50);
  assert.is(retryDelayMs(4, 50, 2000, () => 1), 400);
  assert.is(retryDelayMs(100, 50, 2000, () => 1), 2000);
  assert.is(retryDelayMs(100, 50, 2000, () => 0), 1000);
});

r.run();

function seqs(r: { seq: number }[] | "gap"): number[] | "gap" {
  return r === "gap" ? r : r.map((x) => x.seq);
}

async function assertRejects<E extends Error>(p: Promise<unknown>, type: abstract new (...a: never[]) => E): Promise<E> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, type);
    return e as E;
  }
  return assert.unreachable("expected a rejection") as never;
}
