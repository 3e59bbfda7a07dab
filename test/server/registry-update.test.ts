/**
 * Changing a registration (docs/BACKEND.md "Calls", `POST /v1/keys`; `psimbols
 * keys add` of a registered key) in both registries, a keys file and Redis (a
 * real redis-server on a free port): `added` stays the time the key was first
 * registered, `updated` says when its role or comment changed, a move's
 * `moved_from` and `moved` stay, and a write that changes nothing writes
 * nothing.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { PsimbolsError } from "../../shared/errors.js";
import { generateSigningKey } from "../../shared/crypto.js";
import { FileRegistry, type ManagedRegistry, RedisRegistry, Role, addKey } from "../../server/registry.js";
import { tempDir } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";

const t = suite("registry: changing a registration");
let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.after(async () => {
  await redis?.stop();
});

const tick = () => new Promise((r) => setTimeout(r, 5));

/** The same checks on either registry; `raw` reads what is stored. */
async function updates(reg: ManagedRegistry, raw: () => Promise<string>): Promise<void> {
  const [a, b] = [await generateSigningKey(), await generateSigningKey()];
  const first = await reg.add(a.public, { comment: "laptop" });
  assert.is(first.updated, undefined, "a new key has no updated");
  await tick();
  const promoted = await reg.add(a.public, { role: Role.operator, comment: "laptop" });
  assert.equal([promoted.role, promoted.added], [Role.operator, first.added], "a role change keeps added");
  assert.ok(promoted.updated !== undefined && promoted.updated > first.added, `updated ${promoted.updated} after added ${first.added}`);
  assert.equal(await reg.lookup(a.public.fingerprint), promoted);
  await tick();
  const renamed = await reg.add(a.public, { role: Role.operator, comment: "new laptop" });
  assert.equal([renamed.comment, renamed.added], ["new laptop", first.added], "a comment change keeps added");
  assert.ok(renamed.updated! > promoted.updated!);
  await tick();
  const blocked = await reg.add({ fingerprint: a.public.fingerprint }, { role: Role.blocked });
  assert.equal([blocked.role, blocked.added], [Role.blocked, first.added], "a block by fingerprint keeps added");
  // A write that changes nothing leaves the entry as it is, updated included.
  const before = await raw();
  await tick();
  assert.equal(await reg.add({ fingerprint: a.public.fingerprint }, { role: Role.blocked }), blocked);
  assert.is(await raw(), before);
  // A moved registration keeps its move's record through a later change.
  const c = await reg.add(b.public, { comment: "phone" });
  const d = await generateSigningKey();
  const moved = await reg.move(c, d.public);
  await tick();
  const after = await reg.add(d.public, { role: Role.operator, comment: "phone" });
  assert.equal([after.added, after.moved_from, after.moved], [c.added, b.public.fingerprint, moved.moved]);
  assert.ok(after.updated !== undefined);
  // Removed, then registered again: a new registration, added anew.
  await reg.remove(a.public.fingerprint);
  await tick();
  const again = await reg.add(a.public);
  assert.ok(again.added > first.added);
  assert.is(again.updated, undefined);
}

/** Blocking by fingerprint keeps a registered key's public key and comment; every write checks the comment. */
async function blocks(reg: ManagedRegistry, raw: () => Promise<string>): Promise<void> {
  const [a, b] = [await generateSigningKey(), await generateSigningKey()];
  const first = await reg.add(a.public, { comment: "build agent" });
  const blocked = await reg.add({ fingerprint: a.public.fingerprint }, { role: Role.blocked });
  assert.equal([blocked.role, blocked.public_key, blocked.comment, blocked.added], [Role.blocked, first.public_key, "build agent", first.added]);
  assert.equal(await reg.lookup(a.public.fingerprint), blocked);
  const renamed = await reg.add({ fingerprint: a.public.fingerprint }, { role: Role.blocked, comment: "stolen" });
  assert.equal([renamed.public_key, renamed.comment], [first.public_key, "stolen"], "a comment given replaces it");
  // the public key kept, the registration is restored from it
  const restored = await reg.add(a.public, { role: Role.client, comment: "build agent" });
  assert.equal([restored.role, restored.public_key, restored.comment], [Role.client, first.public_key, "build agent"]);
  // a key the registry does not know is blocked by its fingerprint alone
  const stranger = await reg.add({ fingerprint: b.public.fingerprint }, { role: Role.blocked });
  assert.equal([stranger.public_key, stranger.comment], [undefined, ""]);
  const before = await raw();
  for (const comment of ["x".repeat(201), "two\nlines", "\x1b[31m", "\u202e", "\u2066", "\u2029", "\x7f", "\x85"]) {
    for (const write of [() => reg.add(a.public, { comment }), () => reg.add({ fingerprint: b.public.fingerprint }, { role: Role.blocked, comment })]) {
      try {
        await write();
        assert.unreachable(`comment ${JSON.stringify(comment).slice(0, 20)} accepted`);
      } catch (e) {
        assert.instance(e, PsimbolsError);
        assert.is((e as PsimbolsError).code, "bad_request");
        assert.match((e as Error).message, /"comment" refused: a comment is (at most 200 characters|one line without control characters)/);
      }
    }
  }
  assert.is(await raw(), before, "a refused comment changed the registry");
  // 200 characters (code points, an emoji is one) are fine
  assert.is((await reg.add(a.public, { comment: "😀".repeat(200) })).comment, "😀".repeat(200));
}

t("a keys file: blocking a registered key by fingerprint keeps its public key and comment; a bad comment is refused and changes nothing", async () => {
  const file = join(tempDir(), "keys.json");
  await blocks(new FileRegistry(file), async () => readFileSync(file, "utf8"));
});

t("Redis: blocking a registered key by fingerprint keeps its public key and comment; a bad comment is refused and changes nothing", async () => {
  const reg = new RedisRegistry(redis.url, "blocks:");
  try {
    await blocks(reg, async () => JSON.stringify((await reg.list()).sort((x, y) => (x.fingerprint < y.fingerprint ? -1 : 1))));
  } finally {
    await reg.close();
  }
});

t("a keys file that does not parse: a write is refused with unavailable naming the file, which is left as it was", async () => {
  const file = join(tempDir(), "keys.json");
  writeFileSync(file, "{ not json");
  const k = await generateSigningKey();
  try {
    await addKey(file, k.public);
    assert.unreachable("a write over a broken keys file succeeded");
  } catch (e) {
    assert.instance(e, PsimbolsError);
    assert.is((e as PsimbolsError).code, "unavailable");
    assert.is((e as Error).message, `the keys file ${file} does not parse (not valid JSON); fix it and try again`);
  }
  assert.is(readFileSync(file, "utf8"), "{ not json");
});

t("a keys file: a change of role or comment keeps added and sets updated; a write that changes nothing leaves the file as it is", async () => {
  const file = join(tempDir(), "keys.json");
  await updates(new FileRegistry(file), async () => readFileSync(file, "utf8"));
});

t("keys add on a keys file (the CLI's path): the same", async () => {
  const file = join(tempDir(), "keys.json");
  const k = await generateSigningKey();
  const first = await addKey(file, k.public, { comment: "x" });
  await tick();
  const changed = await addKey(file, k.public, { role: Role.operator, comment: "x" });
  assert.equal([changed.added, changed.role], [first.added, Role.operator]);
  assert.ok(changed.updated! > first.added);
});

t("Redis: a change of role or comment keeps added and sets updated; a write that changes nothing writes nothing", async () => {
  const reg = new RedisRegistry(redis.url, "update:");
  try {
    await updates(reg, async () => JSON.stringify(await reg.list()));
  } finally {
    await reg.close();
  }
});

t("Redis: concurrent role changes of one key from two connections all keep the first added, and one of them is the entry left", async () => {
  const [r1, r2] = [new RedisRegistry(redis.url, "race:"), new RedisRegistry(redis.url, "race:")];
  try {
    const k = await generateSigningKey();
    const first = await r1.add(k.public, { comment: "0" });
    const written = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? r1 : r2).add(k.public, { role: i % 3 ? Role.client : Role.operator, comment: String(i + 1) })));
    for (const w of written) assert.is(w.added, first.added);
    const left = await r1.lookup(k.public.fingerprint);
    assert.ok(written.some((w) => JSON.stringify(w) === JSON.stringify(left)), JSON.stringify(left));
  } finally {
    await Promise.all([r1.close(), r2.close()]);
  }
});

t.run();
