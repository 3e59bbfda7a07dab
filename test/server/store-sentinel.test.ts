/**
 * The Redis store through Sentinel (a `redis+sentinel://` address): the
 * store contract runs unchanged against a master found through three
 * sentinels; then the replica wait — a push or revocation is acknowledged
 * only once a connected replica has it; a stalled replica makes the call
 * fail with `unavailable` within `wait_ms` (what landed on the master is
 * said, not hidden), and a master with no replica left does not wait.
 * Real redis-server processes (cli/cluster/sentinel.ts, deploy/sentinel.conf).
 */
import { randomBytes } from "node:crypto";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Redis } from "ioredis";
import { testSentinels } from "../helpers/sentinel.js";
import { ErrorCode } from "../../shared/errors.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { RedisRegistry } from "../../server/registry.js";
import { WIDE, identity, record, redisStoreUnderTest, storeContract } from "./store-contract.js";

const sentinelSet = testSentinels();
const sentinels = () => sentinelSet.start();
const prefix = () => `t${randomBytes(6).toString("base64url")}:`;

storeContract("redis through sentinel", async () => {
  const { url } = await sentinels();
  return redisStoreUnderTest(url);
});

const w = suite("redis through sentinel: the replica wait");
// The last suite of the file: its end stops the servers (their output pipes would keep this process alive).
w.after(() => sentinelSet.stopAll());

w("a push and a revocation are on the replica when they are acknowledged", async () => {
  const set = await sentinels();
  const p = prefix();
  const store = new RedisStore({ url: set.url, wrapKey: randomBytes(32), prefix: p });
  const replica = new Redis({ host: "127.0.0.1", port: set.replica.port });
  try {
    const who = identity();
    const rec = record(who);
    await store.activate(rec);
    // Acknowledged means on the replica: read there right after, no wait.
    const seq = await store.push(who, JSON.stringify({ n: 1 }), WIDE);
    assert.is(await replica.get(`${p}pseq:${who}`), String(seq));
    assert.equal(await store.retireIdentity(who, "revoked"), [rec.id]);
    assert.is(await replica.hget(`${p}ch:${rec.id}`, "retired"), "revoked");
  } finally {
    replica.disconnect();
    await store.close();
  }
});

w("a stalled replica: push, revoke and a registry removal fail with `unavailable` within wait_ms, saying so; they work again when it answers", async () => {
  const set = await sentinels();
  const p = prefix();
  const store = new RedisStore({ url: `${set.url}?wait_ms=300`, wrapKey: randomBytes(32), prefix: p });
  const who = identity();
  const rec = record(who);
  try {
    await store.activate(rec);
    set.replica.proc.kill("SIGSTOP");
    const started = Date.now();
    let e: unknown;
    try {
      await store.push(who, JSON.stringify({ n: 1 }), WIDE);
    } catch (x) {
      e = x;
    }
    assert.is((e as { code?: string }).code, ErrorCode.unavailable);
    assert.match((e as Error).message, /push: not confirmed by 1 replica\(s\) in 300 ms/);
    assert.ok(Date.now() - started < 1500, "the wait was not bounded by wait_ms");
    e = undefined;
    try {
      await store.retireIdentity(who, "revoked");
    } catch (x) {
      e = x;
    }
    assert.is((e as { code?: string }).code, ErrorCode.unavailable);
    assert.match((e as Error).message, /retireIdentity: not confirmed/);
    // The key registry too: a removed key is acknowledged only once a replica has the removal.
    const registry = new RedisRegistry(`${set.url}?wait_ms=300`, p);
    e = undefined;
    try {
      await registry.remove(identity());
    } catch (x) {
      e = x;
    }
    await registry.close();
    assert.is((e as { code?: string }).code, ErrorCode.unavailable);
    assert.match((e as Error).message, /key registry write not confirmed by 1 replica\(s\) in 300 ms/);
    // The master took both (the caller was told it may have): a retry of the revocation is harmless.
    assert.is(await store.lastPush(who), 1);
    assert.is((await store.getChannel(rec.id))?.retired, "revoked");
  } finally {
    set.replica.proc.kill("SIGCONT");
  }
  try {
    const other = identity();
    assert.is(await store.push(other, JSON.stringify({ n: 2 }), WIDE), 1);
  } finally {
    await store.close();
  }
});

w("a push not confirmed by the replica is never published: no subscriber delivers a number a failover could give again", async () => {
  const set = await sentinels();
  const p = prefix();
  const wrapKey = randomBytes(32);
  const store = new RedisStore({ url: `${set.url}?wait_ms=300`, wrapKey, prefix: p });
  // Another node's store, watching the identity as a node with its socket does.
  const watcher = new RedisStore({ url: set.url, wrapKey, prefix: p });
  const who = identity();
  const seen: number[] = [];
  watcher.onEvent((e) => {
    if (e.kind === "push") seen.push(e.seq);
  });
  try {
    watcher.watch(who);
    await watcher.ping();
    await new Promise((r) => setTimeout(r, 200)); // the SUBSCRIBE lands
    assert.is(await store.push(who, JSON.stringify({ n: 1 }), WIDE), 1);
    set.replica.proc.kill("SIGSTOP");
    let e: unknown;
    try {
      await store.push(who, JSON.stringify({ n: 2 }), WIDE);
    } catch (x) {
      e = x;
    }
    assert.is((e as { code?: string }).code, ErrorCode.unavailable);
    await new Promise((r) => setTimeout(r, 300));
    // Published at once (as before this fix), push 2 would reach clients; a failover
    // before the replica had it would then hand number 2 to the next push, which
    // every receiver drops as already delivered.
    assert.equal(seen, [1], "the unconfirmed push was published");
  } finally {
    set.replica.proc.kill("SIGCONT");
  }
  try {
    // Push 2 did land on the master (the caller was told it may have): the next one is 3,
    // published once confirmed; a receiver that sees 3 after 1 fetches 2 from the window.
    assert.is(await store.push(who, JSON.stringify({ n: 3 }), WIDE), 3);
    for (const until = Date.now() + 2000; seen.length < 2 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
    assert.equal(seen, [1, 3]);
    assert.equal(
      ((await store.pushesSince(who, 1)) as { seq: number }[]).map((k) => k.seq),
      [2, 3],
    );
  } finally {
    await watcher.close();
    await store.close();
  }
});

w("a master with no replica connected does not wait (after a failover, nothing could be promoted over it)", async () => {
  const set = await sentinels();
  // Last test of the file: the replica goes for good.
  await set.replica.kill("SIGKILL");
  const store = new RedisStore({ url: set.url, wrapKey: randomBytes(32), prefix: prefix() });
  const probe = new Redis({ host: "127.0.0.1", port: set.master.port });
  try {
    for (const until = Date.now() + 5000; ; ) {
      const role = (await probe.call("ROLE")) as [string, unknown, unknown[]];
      if (role[2].length === 0) break;
      if (Date.now() > until) assert.unreachable("the master still lists its killed replica");
      await new Promise((r) => setTimeout(r, 50));
    }
    const started = Date.now();
    assert.is(await store.push(identity(), JSON.stringify({ n: 1 }), WIDE), 1);
    assert.ok(Date.now() - started < 500, `a push waited ${Date.now() - started} ms for a replica that is gone`);
  } finally {
    probe.disconnect();
    await store.close();
  }
});

w.run();
