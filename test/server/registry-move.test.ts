/**
 * Moving a registration (PROTOCOL.md §5.7) in both registries: a keys file
 * and Redis (a real redis-server on a free port). Role, comment and the date
 * added stay; a registered target, or an old entry that is no longer the one
 * checked (moved, removed, blocked, its role changed), is refused
 * (MoveLostError: forbidden, close 4008) and nothing changes.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { generateSigningKey } from "../../shared/crypto.js";
import { FileRegistry, type ManagedRegistry, RedisRegistry, MoveLostError, Role, readKeysFile } from "../../server/registry.js";
import { CloseCode, ErrorCode } from "../../shared/errors.js";
import { tempDir } from "../helpers/broker.js";
import { MemoryStore } from "../../server/store/memory-store.js";
import { MOVE_LEASE_MS, moveIdentity } from "../../server/identity-move.js";
import { resolveConfig } from "../../server/config.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";

const t = suite("registry: moving a registration");
let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.after(async () => {
  await redis?.stop();
});

/** Asserts that `p` is refused as a lost move: forbidden, close 4008. */
async function refused(p: Promise<unknown>, message: RegExp): Promise<void> {
  try {
    await p;
    assert.unreachable("the move was not refused");
  } catch (e) {
    assert.instance(e, MoveLostError);
    assert.equal([(e as MoveLostError).code, (e as MoveLostError).close], [ErrorCode.forbidden, CloseCode.forbidden]);
    assert.match((e as Error).message, message);
  }
}

/** The same checks on either registry; `raw` reads what is stored, for "nothing changed". */
async function moves(reg: ManagedRegistry, raw: () => Promise<string>): Promise<void> {
  const [a, b, c, d] = [await generateSigningKey(), await generateSigningKey(), await generateSigningKey(), await generateSigningKey()];
  const added = await reg.add(a.public, { role: Role.operator, comment: "ops laptop" });
  await reg.add(c.public, { comment: "someone else" });
  const moved = await reg.move(added, b.public);
  assert.equal({ ...moved, moved: undefined }, { fingerprint: b.public.fingerprint, public_key: { type: b.public.type, data: moved.public_key!.data }, role: Role.operator, comment: "ops laptop", added: added.added, moved_from: a.public.fingerprint, moved: undefined });
  assert.is(await reg.lookup(a.public.fingerprint), undefined);
  assert.equal(await reg.lookup(b.public.fingerprint), moved);
  const before = await raw();
  // a registered target
  await refused(reg.move(moved, c.public), /already registered/);
  // the old entry as checked is gone (moved already): a second move of it loses
  await refused(reg.move(added, d.public), /changed while it was being moved/);
  // the old entry changed since the check (a role change, a block): the move loses
  await reg.add(b.public, { role: Role.client, comment: "demoted" });
  const demotedRaw = await raw();
  await refused(reg.move(moved, d.public), /changed while it was being moved/);
  assert.is(await raw(), demotedRaw);
  assert.not.equal(demotedRaw, before);
  assert.is(await reg.lookup(d.public.fingerprint), undefined);
  assert.is((await reg.lookup(c.public.fingerprint))?.comment, "someone else");
  assert.is((await reg.list()).length, 2);
}

t("a keys file: the entry is re-keyed with its role and comment; a taken target or a changed entry is refused, the file unchanged", async () => {
  const path = join(tempDir(), "keys.json");
  await moves(new FileRegistry(path), async () => readFileSync(path, "utf8"));
  assert.is(readKeysFile(path).length, 2);
});

t("a keys file rewritten in place within one clock tick, with the same size and mtime, is still re-read: a block takes effect", async () => {
  const path = join(tempDir(), "keys.json");
  const key = await generateSigningKey();
  const entry = await new FileRegistry(path).add(key.public, { role: Role.client, comment: "abcd" });
  // one mtime for both versions of the file, as a coarse clock gives two writes within one tick
  const tick = Date.now() / 1000;
  utimesSync(path, tick, tick);
  const reg = new FileRegistry(path);
  assert.is((await reg.lookup(key.public.fingerprint))?.role, Role.client);
  const { size } = statSync(path);
  // "client" to "blocked" is one character more: the comment one less keeps the size
  writeFileSync(path, JSON.stringify({ version: 1, keys: [{ ...entry, role: Role.blocked, comment: "abc" }] }, null, 2) + "\n");
  utimesSync(path, tick, tick);
  assert.is(statSync(path).size, size);
  await new Promise((r) => setTimeout(r, 1100)); // lookups re-check the file at most once a second
  assert.is((await reg.lookup(key.public.fingerprint))?.role, Role.blocked);
});

t("Redis: the entry is re-keyed with its role and comment; a taken target or a changed entry is refused and the old entry stays", async () => {
  const prefix = `psimbols-test-${Date.now()}:`;
  const reg = new RedisRegistry(redis.url, prefix);
  try {
    await moves(reg, async () => JSON.stringify((await reg.list()).sort((x, y) => x.fingerprint.localeCompare(y.fingerprint))));
  } finally {
    await reg.close();
  }
});

t("moveIdentity: a move that lost to a role change gives the old key's lease back (a retry with the entry as it now stands is made); after a move the old key cannot move again for 60 s", async () => {
  const path = join(tempDir(), "keys.json");
  const reg = new FileRegistry(path);
  let clock = Date.now();
  const store = new MemoryStore({ now: () => clock });
  const config = resolveConfig({ keysFile: path });
  try {
    const [a, b, c] = [await generateSigningKey(), await generateSigningKey(), await generateSigningKey()];
    const checked = await reg.add(a.public, { role: Role.operator, comment: "ops" });
    await store.push(a.public.fingerprint, JSON.stringify("kept"), config.pushWindow);
    const now = await reg.add(a.public, { role: Role.client, comment: "demoted" });
    await refused(moveIdentity(config, store, reg, a.public, b.public, checked), /changed while it was being moved/);
    assert.is(await store.lastPush(b.public.fingerprint), 0, "the lost move copied pushes");
    const moved = await moveIdentity(config, store, reg, a.public, b.public, now);
    assert.equal([moved.registered?.role, moved.registered?.comment, moved.pushes], [Role.client, "demoted", 1]);
    // the old key again, unregistered now (as in an open service): its lease still holds
    clock += MOVE_LEASE_MS - 1;
    await refused(moveIdentity(config, store, reg, a.public, c.public, undefined), /another move of this key/);
    assert.is(await store.lastPush(c.public.fingerprint), 0);
    clock += 1;
    assert.is((await moveIdentity(config, store, reg, a.public, c.public, undefined)).registered, undefined, "60 s on, the old key moves (with no registration)");
    assert.is(MOVE_LEASE_MS, 60_000, "PROTOCOL.md §5.7 says 60 s");
  } finally {
    await store.close();
  }
});

t.run();
