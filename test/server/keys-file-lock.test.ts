/**
 * The keys file's lock (server/registry.ts, docs/BACKEND.md "Server API"):
 * writers take `keys.json.lock` (O_EXCL) and wait while another holds it; a
 * lock whose process is gone, or one 30 s old, is broken; a lock held for 5 s
 * refuses the write with `unavailable`, the file unchanged.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { generateSigningKey } from "../../shared/crypto.js";
import { ErrorCode } from "../../shared/errors.js";
import { KEYS_LOCK_WAIT_MS, addKey, readKeysFile, removeKey } from "../../server/registry.js";
import { tempDir } from "../helpers/broker.js";
import { rejectsWith } from "../helpers/refusal.js";

const t = suite("keys file lock");

/** A keys file with one key, and its lock path. */
async function keysFile(): Promise<{ path: string; lock: string }> {
  const path = join(tempDir(), "keys.json");
  await addKey(path, (await generateSigningKey()).public, { comment: "first" });
  return { path, lock: `${path}.lock` };
}

t("a writer waits while the lock is held and writes once it is released; the lock is gone after", async () => {
  const { path, lock } = await keysFile();
  writeFileSync(lock, `${process.pid} ${hostname()} held-by-the-test\n`);
  const started = Date.now();
  setTimeout(() => unlinkSync(lock), 300);
  const key = await generateSigningKey();
  await addKey(path, key.public, { comment: "second" });
  assert.ok(Date.now() - started >= 300, "the write did not wait for the lock");
  assert.equal(readKeysFile(path).map((k) => k.comment), ["first", "second"]);
  assert.not.ok(existsSync(lock));
});

t("a lock whose process is gone (this host) is broken at once", async () => {
  const { path, lock } = await keysFile();
  const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
  writeFileSync(lock, `${dead} ${hostname()} left-by-a-crash\n`);
  const started = Date.now();
  assert.ok(await removeKey(path, readKeysFile(path)[0]!.fingerprint));
  assert.ok(Date.now() - started < 1000, "the stale lock was waited for");
  assert.equal(readKeysFile(path), []);
  assert.not.ok(existsSync(lock));
});

t("a lock 30 s old is broken, whoever holds it", async () => {
  const { path, lock } = await keysFile();
  writeFileSync(lock, `1 another-host left-long-ago\n`);
  const old = (Date.now() - 31_000) / 1000;
  utimesSync(lock, old, old);
  await addKey(path, (await generateSigningKey()).public, { comment: "second" });
  assert.is(readKeysFile(path).length, 2);
  assert.not.ok(existsSync(lock));
});

t(`a lock held for ${KEYS_LOCK_WAIT_MS / 1000} s refuses the write with unavailable; the file and the holder's lock are unchanged`, async () => {
  const { path, lock } = await keysFile();
  const before = readFileSync(path, "utf8");
  const held = `${process.pid} ${hostname()} held-by-the-test\n`;
  writeFileSync(lock, held);
  const started = Date.now();
  await rejectsWith(addKey(path, (await generateSigningKey()).public), ErrorCode.unavailable, /is locked by another writer/);
  assert.ok(Date.now() - started >= KEYS_LOCK_WAIT_MS);
  assert.is(readFileSync(path, "utf8"), before);
  assert.is(readFileSync(lock, "utf8"), held);
  unlinkSync(lock);
});

t.run();
