/**
 * The one contract every {@link Store} passes (STYLE.md convention 9). A
 * store under test comes fresh for each test from `makeStore`; events are
 * collected from `onEvent` and "nothing else arrived" is established by a
 * probe event published after the action (events from one store reach a
 * node in order), never by sleeping.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { b64, b64u } from "../../shared/encoding.js";
import { randomBytes } from "../../shared/crypto.js";
import type { ChannelRecord, Holder, PushWindow, Store, StoreEvent } from "../../server/store/store.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { parseRedisAddress } from "../../server/store/redis-address.js";

/** A fresh store and how to dispose of it. */
export interface StoreUnderTest {
  store: Store;
  /**
   * Another node on the same state (for Redis, a second store object with the
   * same prefix and key-wrapping key; for an embedded store, itself). Closed by `cleanup`.
   */
  peer(): Promise<Store>;
  cleanup(): Promise<void>;
  /**
   * Events of pushes from two nodes to one identity arrive in seq order
   * (true), or only each node's own in order (false: Redis through Sentinel,
   * where a push is published once a replica has it; see Store.push).
   */
  pushEventsInSeqOrder: boolean;
}

interface Ctx {
  sut: StoreUnderTest;
  store: Store;
  events: StoreEvent[];
}

/** A 22-character base64url channel id (16 random bytes), as the server makes them. */
export function channelId(): string {
  return b64u(randomBytes(16));
}

/** An identity fingerprint in the OpenSSH style the server uses. */
export function identity(): string {
  return "SHA256:" + b64(randomBytes(32));
}

/** A channel record valid for `lifeMs` from now (negative: already expired). */
export function record(ident: string, lifeMs = 60_000, id = channelId()): ChannelRecord {
  return {
    id,
    identity: ident,
    key: randomBytes(32),
    type: "AES-256-GCM",
    validUntil: Date.now() + lifeMs,
    ttl: Math.max(1, Math.round(lifeMs / 1000)),
    node: "node-a",
  };
}

/** A holder for binds whose holder a test does not look at. */
export const HOLDER: Holder = { node: "node-b", instance: "instance-b", conn: "conn-b" };

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `cond()` holds, polling; fails the test after `ms`. */
export async function until(cond: () => boolean, ms = 2000, what = "condition"): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.unreachable(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * Publishes a probe event through the store and waits for it, so every event
 * caused before this call has been delivered; then removes the probe events.
 */
export async function drain(store: Store, events: StoreEvent[]): Promise<void> {
  const probe = identity();
  store.watch(probe);
  await store.bind(channelId(), probe, "probe", HOLDER);
  await until(() => events.some((e) => e.identity === probe), 2000, "the probe event");
  store.unwatch(probe);
  for (let i = events.length - 1; i >= 0; i--) if (events[i]!.identity === probe) events.splice(i, 1);
}

/** A window that trims nothing in a test. */
export const WIDE: PushWindow = { count: 1000, ageMs: 60_000 };

/** The seqs of a pushesSince answer (or "gap"). */
function seqs(r: { seq: number }[] | "gap"): number[] | "gap" {
  return r === "gap" ? r : r.map((p) => p.seq);
}

/** Waits until `ms` into a fresh window of `windowMs`, so a few quick hits stay in one window. */
async function windowStart(windowMs: number, ms = 10): Promise<void> {
  await sleep(windowMs - (Date.now() % windowMs) + ms);
}

/**
 * A RedisStore at `url` under a fresh key prefix, with peers (other nodes'
 * stores) on the same prefix and wrap key: the Redis subjects of the contract.
 */
export function redisStoreUnderTest(url: string): StoreUnderTest {
  const wrapKey = randomBytes(32);
  const prefix = `t${b64u(randomBytes(6))}:`;
  const store = new RedisStore({ url, wrapKey, prefix, node: "test" });
  const peers: RedisStore[] = [];
  const address = parseRedisAddress(url);
  return {
    store,
    pushEventsInSeqOrder: address.kind !== "sentinel" || address.waitReplicas === 0,
    async peer() {
      const other = new RedisStore({ url, wrapKey, prefix, node: `peer-${peers.length}` });
      peers.push(other);
      return other;
    },
    cleanup: async () => {
      await Promise.all([store, ...peers].map((s) => s.close()));
    },
  };
}

/**
 * Registers and runs the contract suite for one implementation.
 * @param name shown in the test report.
 * @param makeStore returns a fresh, empty store (and its cleanup) per test.
 */
export function storeContract(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  const t = suite<Ctx>(`store contract: ${name}`, {} as Ctx);

  t.before.each(async (ctx) => {
    ctx.sut = await makeStore();
    ctx.store = ctx.sut.store;
    ctx.events = [];
    ctx.store.onEvent((e) => ctx.events.push(e));
  });
  t.after.each(async (ctx) => {
    await ctx.sut.cleanup();
  });

  t("activate stores the record and makes it the identity's active channel", async ({ store }) => {
    const id = identity();
    const rec = record(id);
    assert.is(await store.activate(rec), undefined);
    const got = await store.getChannel(rec.id);
    assert.ok(got, "record readable");
    assert.equal({ ...got, key: [...got.key] }, { ...rec, key: [...rec.key] });
    assert.ok(got.key instanceof Uint8Array);
    assert.is(await store.activeChannel(id), rec.id);
  });

  t("a channel keeps its type: a ChaCha20-Poly1305 record reads back as one, an AES-256-GCM record as one (PROTOCOL.md §6.3)", async ({ store }) => {
    const cc = { ...record(identity()), type: "ChaCha20-Poly1305" as const };
    const aes = record(identity());
    await store.activate(cc);
    await store.activate(aes);
    assert.is((await store.getChannel(cc.id))?.type, "ChaCha20-Poly1305");
    assert.is((await store.getChannel(aes.id))?.type, "AES-256-GCM");
    assert.ok((await store.listChannels()).some((c) => c.id === cc.id && c.type === "ChaCha20-Poly1305"), "listed with its type");
  });

  t("the app fields (public key, authorize info; docs/BACKEND.md) round-trip with the record, and a record without them reads without them", async ({ store, sut }) => {
    const rec = { ...record(identity()), app: { publicKey: { type: "Ed25519", data: b64u(randomBytes(44)) }, info: '{"plan":"gold","n":[1,2]}' } };
    await store.activate(rec);
    const peer = await sut.peer();
    for (const s of [store, peer]) assert.equal((await s.getChannel(rec.id))?.app, rec.app);
    const plain = record(identity());
    await store.activate(plain);
    assert.not.ok("app" in (await store.getChannel(plain.id))!);
    const bare = { ...record(identity()), app: { publicKey: { type: "ECDSA-P256", data: "AAAA" } } };
    await store.activate(bare);
    assert.equal((await store.getChannel(bare.id))?.app, { publicKey: { type: "ECDSA-P256", data: "AAAA" } });
  });

  t("pushFrom (the push id a channel started from) round-trips on every node, and a record without it reads without it", async ({ store, sut }) => {
    const rec = { ...record(identity()), pushFrom: 41 };
    await store.activate(rec);
    const peer = await sut.peer();
    for (const s of [store, peer]) assert.is((await s.getChannel(rec.id))?.pushFrom, 41);
    const zero = { ...record(identity()), pushFrom: 0 };
    await store.activate(zero);
    assert.is((await store.getChannel(zero.id))?.pushFrom, 0);
    const plain = record(identity());
    await store.activate(plain);
    assert.not.ok("pushFrom" in (await store.getChannel(plain.id))!);
  });

  t("the store keeps its own copy of the key: wiping the caller's bytes changes nothing", async ({ store }) => {
    const rec = record(identity());
    const original = [...rec.key];
    await store.activate(rec);
    rec.key.fill(0); // the server wipes secrets after use (STYLE.md)
    const got = await store.getChannel(rec.id);
    assert.equal([...got!.key], original, "wiping the activated record");
    got!.key.fill(0);
    assert.equal([...(await store.getChannel(rec.id))!.key], original, "wiping a record that was read");
  });

  t("unknown channels and identities read as undefined", async ({ store }) => {
    assert.is(await store.getChannel(channelId()), undefined);
    assert.is(await store.activeChannel(identity()), undefined);
  });

  t("activate returns the replaced id and keeps the replaced channel as a tombstone", async ({ store }) => {
    const id = identity();
    const first = record(id);
    const second = record(id);
    await store.activate(first);
    assert.is(await store.activate(second), first.id);
    const tomb = await store.getChannel(first.id);
    assert.equal({ ...tomb, key: [...tomb!.key] }, { ...first, key: [...first.key], retired: "replaced" }, "whole record, marked replaced");
    assert.is((await store.getChannel(second.id))?.retired, undefined, "the new channel is live");
    assert.equal((await store.listChannels()).map((c) => c.id), [second.id], "tombstones are not listed");
    assert.is(await store.activeChannel(id), second.id);
    assert.is(await store.retire(first.id, "revoked"), false, "the replaced channel cannot be retired again");
  });

  t("activating the same record twice replaces nothing", async ({ store }) => {
    const id = identity();
    const rec = record(id);
    await store.activate(rec);
    assert.is(await store.activate(rec), undefined);
    assert.ok(await store.getChannel(rec.id));
    assert.is(await store.activeChannel(id), rec.id);
  });

  t("concurrent activations for one identity leave exactly one live channel", async ({ store }) => {
    const id = identity();
    await store.activate(record(id));
    const recs = [record(id), record(id), record(id)];
    const replaced = await Promise.all(recs.map((r) => store.activate(r)));
    const live = (await store.listChannels()).filter((c) => c.identity === id).map((c) => c.id);
    const active = await store.activeChannel(id);
    assert.equal(live, [active], "every channel but the active one was replaced");
    assert.is(replaced.filter((x) => x !== undefined).length, 3, "each activation replaced exactly one channel");
  });

  t("identities are independent", async ({ store }) => {
    const a = record(identity());
    const b = record(identity());
    await store.activate(a);
    assert.is(await store.activate(b), undefined);
    assert.ok(await store.getChannel(a.id));
    assert.is(await store.activeChannel(a.identity), a.id);
    assert.is(await store.activeChannel(b.identity), b.id);
  });

  t("a replaced event reaches handlers only for a watched identity", async ({ store, events }) => {
    const watched = identity();
    const other = identity();
    store.watch(watched);
    const w1 = record(watched);
    const o1 = record(other);
    await store.activate(w1);
    await store.activate(o1);
    await store.activate(record(watched));
    await store.activate(record(other));
    await drain(store, events);
    assert.equal(events, [{ kind: "retired", identity: watched, channel: w1.id, reason: "replaced" }]);
  });

  t("every handler receives each event", async ({ store, events }) => {
    const seen: StoreEvent[] = [];
    store.onEvent((e) => seen.push(e));
    const id = identity();
    store.watch(id);
    const rec = record(id);
    await store.activate(rec);
    await store.retire(rec.id, "closed");
    await until(() => seen.length === 1 && events.length === 1, 2000, "both handlers");
    assert.equal(seen, events);
  });

  t("retire keeps a tombstone, clears the active pointer and emits retired once", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    const rec = record(id);
    await store.activate(rec);
    assert.is(await store.retire(rec.id, "revoked"), true);
    const tomb = await store.getChannel(rec.id);
    assert.is(tomb?.retired, "revoked", "getChannel returns the tombstone with its reason");
    assert.equal([...tomb!.key], [...rec.key], "the tombstone keeps the key (to seal the notice)");
    assert.is(tomb!.validUntil, rec.validUntil);
    assert.is(await store.activeChannel(id), undefined);
    assert.equal(await store.listChannels(), [], "tombstones are not listed");
    assert.is(await store.retire(rec.id, "closed"), false, "a tombstone cannot be retired again");
    assert.is((await store.getChannel(rec.id))?.retired, "revoked", "and keeps its first reason");
    assert.equal(await store.retireIdentity(id, "revoked"), [], "nor through its identity");
    await drain(store, events);
    assert.equal(events, [{ kind: "retired", identity: id, channel: rec.id, reason: "revoked" }]);
  });

  t("a tombstone lasts until validUntil, then is gone", async ({ store }) => {
    const rec = record(identity(), 300);
    await store.activate(rec);
    assert.is(await store.retire(rec.id, "closed"), true);
    assert.is((await store.getChannel(rec.id))?.retired, "closed");
    await sleep(400);
    assert.is(await store.getChannel(rec.id), undefined);
    assert.is(await store.retire(rec.id, "closed"), false);
  });

  t("bind on a tombstone does nothing and emits nothing", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    const rec = record(id);
    await store.activate(rec);
    await store.retire(rec.id, "revoked");
    await drain(store, events);
    events.length = 0;
    await store.bind(rec.id, id, "late-resume", HOLDER);
    await drain(store, events);
    assert.equal(events, []);
    assert.is((await store.getChannel(rec.id))?.retired, "revoked", "still a tombstone");
  });

  t("after a retire, the next activation replaces nothing", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    const first = record(id);
    await store.activate(first);
    await store.retire(first.id, "closed");
    const second = record(id);
    assert.is(await store.activate(second), undefined);
    assert.is(await store.activeChannel(id), second.id);
    assert.is((await store.getChannel(first.id))?.retired, "closed", "the tombstone keeps its reason");
    await drain(store, events);
    assert.equal(events, [{ kind: "retired", identity: id, channel: first.id, reason: "closed" }]);
  });

  t("retire of an unknown id returns false and emits nothing", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    await store.activate(record(id));
    assert.is(await store.retire(channelId(), "revoked"), false);
    await drain(store, events);
    assert.equal(events, []);
    assert.ok(await store.activeChannel(id), "the identity's channel is untouched");
  });

  t("retireIdentity retires the active channel and returns its id", async ({ store, events }) => {
    const id = identity();
    const bystander = record(identity());
    store.watch(id);
    await store.activate(record(id));
    const rec = record(id);
    await store.activate(rec);
    await store.activate(bystander);
    await drain(store, events);
    events.length = 0;
    assert.equal(await store.retireIdentity(id, "revoked"), [rec.id]);
    assert.is((await store.getChannel(rec.id))?.retired, "revoked", "a tombstone");
    assert.is(await store.activeChannel(id), undefined);
    assert.ok(await store.getChannel(bystander.id), "another identity is untouched");
    await drain(store, events);
    assert.equal(events, [{ kind: "retired", identity: id, channel: rec.id, reason: "revoked" }]);
    assert.equal(await store.retireIdentity(id, "revoked"), [], "nothing left to retire");
    assert.equal(await store.retireIdentity(identity(), "revoked"), [], "unknown identity");
  });

  t("a channel past validUntil is gone", async ({ store }) => {
    const id = identity();
    const rec = record(id, -1000);
    await store.activate(rec);
    assert.is(await store.getChannel(rec.id), undefined);
    assert.is(await store.activeChannel(id), undefined);
    assert.not.ok((await store.listChannels()).some((c) => c.id === rec.id));
  });

  t("a channel expires at validUntil", async ({ store }) => {
    const id = identity();
    const rec = record(id, 300);
    const keep = record(identity());
    await store.activate(rec);
    await store.activate(keep);
    assert.ok(await store.getChannel(rec.id), "alive before validUntil");
    assert.is(await store.activeChannel(id), rec.id);
    await sleep(400);
    assert.is(await store.getChannel(rec.id), undefined);
    assert.is(await store.activeChannel(id), undefined);
    assert.equal((await store.listChannels()).map((c) => c.id), [keep.id]);
  });

  t("an expired channel cannot be retired", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    const rec = record(id, 100);
    await store.activate(rec);
    await sleep(200);
    assert.is(await store.retire(rec.id, "revoked"), false);
    assert.equal(await store.retireIdentity(id, "revoked"), []);
    await drain(store, events);
    assert.equal(events, [], "no retired event for a channel that had already expired");
  });

  t("an expired channel is not reported as replaced", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    await store.activate(record(id, 100));
    await sleep(200);
    assert.is(await store.activate(record(id)), undefined);
    await drain(store, events);
    assert.equal(events, []);
  });

  t("hit counts per key within a window and resets in the next", async ({ store }) => {
    const windowMs = 500;
    const key = "ip:127.0.0.1";
    await windowStart(windowMs);
    assert.is(await store.hit(key, windowMs), 1);
    assert.is(await store.hit(key, windowMs), 2);
    assert.is(await store.hit(key, windowMs), 3);
    assert.is(await store.hit("ip:127.0.0.2", windowMs), 1, "keys count separately");
    await windowStart(windowMs);
    assert.is(await store.hit(key, windowMs), 1, "a new window starts from one");
    assert.is(await store.hit(key, windowMs), 2);
  });

  t("lease: of concurrent takers on two nodes exactly one gets it; it lasts its ttl; only its owner gives it back", async ({ sut, store }) => {
    const peer = await sut.peer();
    const key = `move:${identity()}`;
    const takers = Array.from({ length: 8 }, (_, i) => ({ owner: `owner-${i}`, on: i % 2 ? peer : store }));
    const took = await Promise.all(takers.map((x) => x.on.lease(key, x.owner, 400)));
    assert.is(took.filter(Boolean).length, 1, "exactly one taker got the lease");
    const holder = takers[took.indexOf(true)]!.owner;
    assert.not.ok(await peer.lease(key, "late", 400), "a held lease is not taken");
    await store.unlease(key, "not-the-owner");
    assert.not.ok(await store.lease(key, "late", 400), "only the owner gives it back");
    await peer.unlease(key, holder);
    assert.ok(await store.lease(key, "next", 300), "given back, it is free");
    assert.not.ok(await peer.lease(`${key}`, "other", 300));
    assert.ok(await peer.lease(`${key}:other`, "other", 300), "keys are independent");
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(await peer.lease(key, "after", 300), "an expired lease is free");
  });

  t("lease and unlease reject malformed arguments", async ({ store }) => {
    for (const [k, o, ttl] of [["", "o", 1], ["k", "", 1], ["k", "o", 0], ["k", "o", 1.5], [1, "o", 1], ["k", null, 1]] as [string, string, number][]) {
      try {
        await store.lease(k, o, ttl);
        assert.unreachable(`lease(${JSON.stringify([k, o, ttl])})`);
      } catch (e) {
        assert.ok(e instanceof TypeError || e instanceof RangeError, String(e));
      }
    }
  });

  t("bind emits rebound for a watched identity", async ({ store, events }) => {
    const id = identity();
    const rec = record(id);
    await store.activate(rec);
    store.watch(id);
    await store.bind(rec.id, id, "binding-2", HOLDER);
    await until(() => events.length > 0, 2000, "rebound");
    assert.equal(events, [{ kind: "rebound", identity: id, channel: rec.id, binding: "binding-2" }]);
    assert.ok(await store.getChannel(rec.id), "bind leaves the channel live");
  });

  t("bind of an unwatched identity emits nothing here", async ({ store, events }) => {
    const id = identity();
    const rec = record(id);
    await store.activate(rec);
    await store.bind(rec.id, id, "binding-2", HOLDER);
    await drain(store, events);
    assert.equal(events, []);
  });

  t("unwatch stops events; watch is reference counted", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    store.watch(id);
    store.unwatch(id);
    const a = record(id);
    await store.activate(a);
    await store.retire(a.id, "closed");
    await drain(store, events);
    assert.equal(events.length, 1, "still watched after one of two unwatches");
    store.unwatch(id);
    const b = record(id);
    await store.activate(b);
    await store.retire(b.id, "closed");
    await store.bind(b.id, id, "x", HOLDER);
    await drain(store, events);
    assert.equal(events.length, 1, "no events after the last unwatch");
    store.unwatch(id); // one too many: harmless
    store.watch(id);
    const c = record(id);
    await store.activate(c);
    await store.retire(c.id, "closed");
    await drain(store, events);
    assert.equal(events.length, 2, "watching again after an extra unwatch works");
  });

  t("no event is delivered after unwatch returns, even one already in flight", async ({ store, events }) => {
    const id = identity();
    store.watch(id);
    await store.activate(record(id));
    await store.activate(record(id)); // publishes "replaced" while watched
    store.unwatch(id);
    const atUnwatch = events.length;
    await drain(store, events);
    assert.is(events.length, atUnwatch);
  });

  t("listChannels returns every live channel", async ({ store }) => {
    assert.equal(await store.listChannels(), []);
    const recs = [record(identity()), record(identity()), record(identity())];
    for (const r of recs) await store.activate(r);
    const replaced = record(recs[0]!.identity);
    await store.activate(replaced);
    const list = await store.listChannels();
    const want = [...recs.slice(1), replaced].map((r) => r.id).sort();
    assert.equal(list.map((c) => c.id).sort(), want);
    for (const c of list) {
      const r = [...recs, replaced].find((x) => x.id === c.id)!;
      assert.equal([...c.key], [...r.key], "records come back whole");
      assert.is(c.identity, r.identity);
      assert.is(c.validUntil, r.validUntil);
    }
  });

  // ---- where a channel's socket is (ChannelRecord.holder; docs/CLI.md, channels list)

  const A = { node: "node-a", instance: "instance-a", conn: "conn-a" };
  const B = { node: "node-b", instance: "instance-b", conn: "conn-b" };

  t("the holder: activate records it; a resume's bind on another node moves it; a late release from the connection that lost it changes nothing; the holder's own release keeps where it was last", async ({ sut, store }) => {
    const peer = await sut.peer();
    const id = identity();
    const rec = { ...record(id), holder: A };
    await store.activate(rec);
    assert.equal((await peer.getChannel(rec.id))?.holder, A, "activate records the granting connection");
    await peer.bind(rec.id, id, "binding-b", B);
    assert.is(await store.release(rec.id, A.conn), false, "a's late release is refused");
    assert.equal((await store.getChannel(rec.id))?.holder, B, "b still holds it");
    assert.equal((await store.listChannels()).find((c) => c.id === rec.id)?.holder, B, "listed with its holder");
    assert.is(await peer.release(rec.id, B.conn), true);
    assert.equal((await store.getChannel(rec.id))?.holder, { node: B.node, instance: B.instance }, "not connected, last on b");
    assert.is(await peer.release(rec.id, B.conn), false, "let go of once");
    await store.bind(rec.id, id, "binding-a2", A);
    assert.equal((await peer.getChannel(rec.id))?.holder, A, "a resume after a close holds it again");
    const without = record(identity());
    await store.activate(without);
    assert.is((await store.getChannel(without.id))?.holder, undefined, "a record written without a holder reads without one");
  });

  t("a release racing a resume's bind on two nodes never undoes the bind (compare-and-set), in either order", async ({ sut, store }) => {
    const peer = await sut.peer();
    for (let i = 0; i < 40; i++) {
      const id = identity();
      const rec = { ...record(id), holder: A };
      await store.activate(rec);
      // a's socket closes while b takes the channel over: both writes in flight at once, from two
      // nodes, either one sent first, the other 0-3 ms after it
      const both: (() => Promise<unknown>)[] = [() => store.release(rec.id, A.conn), () => peer.bind(rec.id, id, `b-${i}`, B)];
      const [first, second] = i % 2 ? both : both.reverse();
      await Promise.all([first!(), sleep(Math.floor(i / 2) % 4).then(() => second!())]);
      assert.equal((await store.getChannel(rec.id))?.holder, B, `round ${i}: b holds it`);
    }
  });

  t("release and bind change no other channel's holder: an unknown channel gets no record, a tombstone and another identity's channel keep theirs", async ({ store }) => {
    const unknown = channelId();
    assert.is(await store.release(unknown, A.conn), false);
    await store.bind(unknown, identity(), "b", B);
    assert.is(await store.getChannel(unknown), undefined, "no record made");
    const id = identity();
    const rec = { ...record(id), holder: A };
    await store.activate(rec);
    await store.bind(rec.id, identity(), "intruder", B);
    assert.equal((await store.getChannel(rec.id))?.holder, A, "another identity's bind moves nothing");
    await store.retire(rec.id, "revoked");
    await store.bind(rec.id, id, "late", B);
    assert.equal((await store.getChannel(rec.id))?.holder, A, "a tombstone keeps its holder");
  });

  t("beat and liveInstances: an instance is live on every node until its beat runs out", async ({ sut, store }) => {
    const peer = await sut.peer();
    const mine = `i-${channelId()}`;
    const other = `i-${channelId()}`;
    assert.equal(await store.liveInstances([mine, other]), new Set());
    await store.beat(mine, 400);
    assert.equal(await peer.liveInstances([mine, other, mine]), new Set([mine]), "live at once, everywhere");
    assert.equal(await peer.liveInstances([]), new Set());
    await store.beat(mine, 400);
    await sleep(600);
    assert.equal(await peer.liveInstances([mine]), new Set(), "gone once its last beat ran out");
  });

  t("release, bind, beat and activate reject malformed holders and arguments, changing nothing", async ({ store }) => {
    const id = identity();
    const rec = { ...record(id), holder: A };
    await store.activate(rec);
    const bad: Refusal[] = [
      [() => store.release(rec.id, ""), RangeError],
      [() => store.release("", A.conn), RangeError],
      [() => store.bind(rec.id, id, "b", { ...B, node: "" }), RangeError],
      [() => store.bind(rec.id, id, "b", { ...B, instance: 7 } as never), TypeError],
      [() => store.bind(rec.id, id, "b", null as never), TypeError],
      [() => store.activate({ ...record(id), holder: { ...A, conn: "" } }), RangeError],
      [() => store.beat("", 1000), RangeError],
      [() => store.beat("x", 0), RangeError],
      [() => store.liveInstances([""]), RangeError],
    ];
    await refusesEach(bad);
    assert.equal((await store.getChannel(rec.id))?.holder, A, "unchanged");
    assert.is(await store.activeChannel(id), rec.id, "the refused activation replaced nothing");
  });

  t("ids and identities are opaque strings", async ({ store, events }) => {
    // base64url ids use - and _, fingerprints use + / : and =; none is special to a store.
    const odd = ["SHA256:+/+/abc==", "SHA256:*?[x]\\", "SHA256:ünï cødé"];
    for (const id of odd) {
      const rec = record(id, 60_000, "-_-_" + channelId().slice(4));
      store.watch(id);
      await store.activate(rec);
      assert.is(await store.activeChannel(id), rec.id);
      assert.is((await store.getChannel(rec.id))?.identity, id);
      assert.is(await store.retire(rec.id, "closed"), true);
    }
    await drain(store, events);
    assert.equal(
      events.map((e) => e.identity),
      odd,
    );
  });

  // -- pushes ---------------------------------------------------------------

  t("pushes are numbered 1, 2, 3 per identity and published to watchers", async ({ store, events }) => {
    const id = identity();
    const other = identity();
    const ch = channelId();
    store.watch(id);
    assert.is(await store.lastPush(id), 0);
    assert.is(await store.push(id, '{"n":1}', WIDE), 1);
    assert.is(await store.push(id, '{"n":2}', WIDE, ch), 2);
    assert.is(await store.push(other, '{"n":"x"}', WIDE), 1, "identities count separately");
    assert.is(await store.push(id, '{"n":3}', WIDE), 3);
    assert.is(await store.lastPush(id), 3);
    assert.is(await store.lastPush(other), 1);
    await drain(store, events);
    assert.equal(events, [
      { kind: "push", identity: id, seq: 1, data: '{"n":1}' },
      { kind: "push", identity: id, channel: ch, seq: 2, data: '{"n":2}' },
      { kind: "push", identity: id, seq: 3, data: '{"n":3}' },
    ]);
  });

  t("pushesSince returns exactly the missing pushes, in order", async ({ store }) => {
    const id = identity();
    const data = ["{}", '"é 🙂 \\u0000"', JSON.stringify({ big: "x".repeat(70_000) }), "[1,2,3]", ""];
    for (const d of data) await store.push(id, d, WIDE);
    assert.equal(await store.pushesSince(id, 0), data.map((d, i) => ({ seq: i + 1, data: d })), "all, data intact");
    assert.equal(await store.pushesSince(id, 2), data.slice(2).map((d, i) => ({ seq: i + 3, data: d })));
    assert.equal(seqs(await store.pushesSince(id, 4)), [5]);
    assert.equal(await store.pushesSince(id, 5), [], "nothing missed");
    assert.equal(await store.pushesSince(identity(), 0), [], "an identity without pushes");
  });

  t("pushesSince says gap for a seq that was never given out (the counter was lost)", async ({ store }) => {
    const id = identity();
    await store.push(id, "1", WIDE);
    assert.is(await store.pushesSince(id, 2), "gap");
    assert.is(await store.pushesSince(identity(), 57), "gap");
  });

  t("pushes trimmed by count leave a gap for whoever needed them", async ({ store }) => {
    const id = identity();
    const window = { count: 3, ageMs: 60_000 };
    for (let i = 1; i <= 5; i++) assert.is(await store.push(id, `${i}`, window), i);
    assert.is(await store.pushesSince(id, 0), "gap");
    assert.is(await store.pushesSince(id, 1), "gap");
    assert.equal(await store.pushesSince(id, 2), [3, 4, 5].map((n) => ({ seq: n, data: `${n}` })), "the last count are kept");
    assert.equal(seqs(await store.pushesSince(id, 4)), [5]);
    assert.is(await store.lastPush(id), 5);
  });

  t("pushes older than the window's age are gone; the numbering goes on", async ({ store }) => {
    const id = identity();
    const window = { count: 100, ageMs: 250 };
    await store.push(id, "1", window);
    await sleep(150);
    await store.push(id, "2", window);
    await sleep(150); // push 1 is 300 ms old, push 2 is 150 ms
    assert.is(await store.pushesSince(id, 0), "gap");
    assert.equal(await store.pushesSince(id, 1), [{ seq: 2, data: "2" }]);
    await sleep(150); // both past their age: nothing kept
    assert.is(await store.pushesSince(id, 1), "gap");
    assert.equal(await store.pushesSince(id, 2), [], "up to date needs nothing");
    assert.is(await store.lastPush(id), 2, "the counter outlives the window");
    assert.is(await store.push(id, "3", window), 3);
    assert.equal(await store.pushesSince(id, 2), [{ seq: 3, data: "3" }]);
  });

  t("concurrent pushes from two nodes are numbered 1..n, no gap, no duplicate, published in order (each node's in order under the replica wait)", async ({ sut, store, events }) => {
    const peer = await sut.peer();
    const id = identity();
    store.watch(id);
    await drain(store, events);
    const n = 25;
    const sent = new Map<number, string>();
    await Promise.all(
      Array.from({ length: 2 * n }, async (_, i) => {
        const data = JSON.stringify({ node: i % 2 ? "b" : "a", i });
        const seq = await (i % 2 ? peer : store).push(id, data, WIDE);
        assert.not.ok(sent.has(seq), `seq ${seq} given twice`);
        sent.set(seq, data);
      }),
    );
    const all = Array.from({ length: 2 * n }, (_, i) => i + 1);
    assert.equal([...sent.keys()].sort((a, b) => a - b), all);
    assert.is(await peer.lastPush(id), 2 * n);
    assert.equal(await store.pushesSince(id, 0), all.map((seq) => ({ seq, data: sent.get(seq)! })));
    assert.equal(await peer.pushesSince(id, 2 * n - 3), all.slice(-3).map((seq) => ({ seq, data: sent.get(seq)! })));
    await until(() => events.length === 2 * n, 2000, "every push event");
    const got = events.map((e) => (e.kind === "push" ? [e.seq, e.data] : e.kind));
    if (sut.pushEventsInSeqOrder) {
      assert.equal(got, all.map((seq) => [seq, sent.get(seq)]), "events arrive in seq order with their data");
    } else {
      // Each once with its data, and each node's own in seq order.
      assert.equal([...got].sort((x, y) => (x[0] as number) - (y[0] as number)), all.map((seq) => [seq, sent.get(seq)]), "every event once, with its data");
      for (const node of ["a", "b"]) {
        const mine = got.filter((x) => String(x[1]).includes(`"node":"${node}"`)).map((x) => x[0] as number);
        assert.equal(mine, [...mine].sort((x, y) => x - y), `node ${node}'s events in seq order`);
      }
    }
  });

  t("push and pushesSince reject malformed arguments", async ({ store }) => {
    const id = identity();
    const bad: Refusal[] = [
      [() => store.push(id, "x", { count: 0, ageMs: 1000 }), RangeError],
      [() => store.push(id, "x", { count: 10, ageMs: -1 }), RangeError],
      [() => store.push(id, "x", { count: 1.5, ageMs: 1000 }), RangeError],
      [() => store.push(id, 42 as unknown as string, WIDE), TypeError],
      [() => store.push("", "x", WIDE), RangeError],
      [() => store.push(id, "x", WIDE, ""), RangeError],
      [() => store.pushesSince(id, -1), RangeError],
      [() => store.pushesSince(id, 0.5), RangeError],
    ];
    await refusesEach(bad);
    assert.is(await store.lastPush(id), 0, "nothing was pushed");
  });

  t("onResync: a registered handler is not called while no event can have been lost (events flow, nothing reconnects)", async ({ store, events }) => {
    // The call after a lost subscription is the Redis store's own test (test/server/store.test.ts).
    let calls = 0;
    store.onResync(() => calls++);
    const id = identity();
    store.watch(id);
    const rec = record(id);
    await store.activate(rec);
    await store.retire(rec.id, "closed");
    await until(() => events.some((e) => e.identity === id), 2000, "the retired event");
    await drain(store, events);
    assert.is(calls, 0);
  });

  t("ping resolves", async ({ store }) => {
    await store.ping();
  });

  t.run();
}

/** A call and the error type it must throw. */
type Refusal = [() => Promise<unknown>, new (...a: never[]) => Error];

/** Each call throws its error type (nothing accepted). */
async function refusesEach(bad: Refusal[]): Promise<void> {
  for (const [call, type] of bad) {
    try {
      await call();
      assert.unreachable("accepted");
    } catch (e) {
      assert.instance(e, type);
    }
  }
}
