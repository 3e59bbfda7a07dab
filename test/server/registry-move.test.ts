/**
 * Moving a registration (PROTOCOL.md §5.7) in both registries: a keys file
 * and Redis (a real redis-server on a free port). Role, comment and the date
 * added stay; a registered target is refused and nothing changes.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { generateSigningKey } from "../../shared/crypto.js";
import { FileRegistry, RedisRegistry, Role, addKey, readKeysFile } from "../../server/registry.js";
import { tempDir } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";

const t = suite("registry: moving a registration");
let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.after(async () => {
  await redis?.stop();
});

t("a keys file: the entry is re-keyed with its role and comment; a taken target is refused, the file unchanged", async () => {
  const path = join(tempDir(), "keys.json");
  const [a, b, c] = [await generateSigningKey(), await generateSigningKey(), await generateSigningKey()];
  const added = addKey(path, a.public, { role: Role.operator, comment: "ops laptop" });
  addKey(path, c.public, { comment: "someone else" });
  const reg = new FileRegistry(path);
  const moved = await reg.move(a.public.fingerprint, b.public);
  assert.equal({ ...moved, moved: undefined }, { fingerprint: b.public.fingerprint, public_key: { type: b.public.type, data: moved!.public_key!.data }, role: Role.operator, comment: "ops laptop", added: added.added, moved_from: a.public.fingerprint, moved: undefined });
  assert.is(await reg.lookup(a.public.fingerprint), undefined);
  assert.is((await reg.lookup(b.public.fingerprint))?.role, Role.operator);
  const before = readFileSync(path, "utf8");
  try {
    await reg.move(b.public.fingerprint, c.public);
    assert.unreachable();
  } catch (e) {
    assert.match(String(e), /already registered/);
  }
  assert.is(readFileSync(path, "utf8"), before);
  assert.is(await reg.move((await generateSigningKey()).public.fingerprint, c.public), undefined);
  assert.is(readKeysFile(path).length, 2);
});

t("Redis: the entry is re-keyed with its role and comment; a taken target is refused and the old entry stays", async () => {
  const reg = new RedisRegistry(redis.url, `psimbols-test-${Date.now()}:`);
  try {
    const [a, b, c] = [await generateSigningKey(), await generateSigningKey(), await generateSigningKey()];
    const added = await reg.add(a.public, { role: Role.client, comment: "kiosk 7" });
    await reg.add(c.public, { comment: "taken" });
    const moved = await reg.move(a.public.fingerprint, b.public);
    assert.is(moved?.comment, "kiosk 7");
    assert.is(moved?.added, added.added);
    assert.is(await reg.lookup(a.public.fingerprint), undefined);
    assert.equal(await reg.lookup(b.public.fingerprint), moved);
    try {
      await reg.move(b.public.fingerprint, c.public);
      assert.unreachable();
    } catch (e) {
      assert.match(String(e), /already registered/);
    }
    assert.equal(await reg.lookup(b.public.fingerprint), moved);
    assert.is((await reg.lookup(c.public.fingerprint))?.comment, "taken");
    assert.is((await reg.list()).length, 2);
  } finally {
    await reg.close();
  }
});

t.run();
