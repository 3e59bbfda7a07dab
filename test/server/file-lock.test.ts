/**
 * The lock of the keys file and the API tokens file (server/file-lock.ts,
 * docs/BACKEND.md "Server API"): writers take `<file>.lock` (O_EXCL) and wait
 * while another holds it; a lock whose process is gone, or one 30 s old, is
 * broken; a lock held for 5 s refuses the write with `unavailable`, the file
 * unchanged; concurrent `psimbols api-token` processes lose no create or revoke.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { KeyType, generateSigningKey } from "../../shared/crypto.js";
import { generateKeyFile } from "../../node/key-files.js";
import { ErrorCode } from "../../shared/errors.js";
import { addKey, readKeysFile, removeKey } from "../../server/registry.js";
import { FILE_LOCK_WAIT_MS } from "../../server/file-lock.js";
import { runCli, tempDir } from "../helpers/broker.js";
import { rejectsWith } from "../helpers/refusal.js";

const t = suite("file lock of the keys and tokens files");

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

t(`a lock held for ${FILE_LOCK_WAIT_MS / 1000} s refuses the write with unavailable; the file and the holder's lock are unchanged`, async () => {
  const { path, lock } = await keysFile();
  const before = readFileSync(path, "utf8");
  const held = `${process.pid} ${hostname()} held-by-the-test\n`;
  writeFileSync(lock, held);
  const started = Date.now();
  await rejectsWith(addKey(path, (await generateSigningKey()).public), ErrorCode.unavailable, /is locked by another writer/);
  assert.ok(Date.now() - started >= FILE_LOCK_WAIT_MS);
  assert.is(readFileSync(path, "utf8"), before);
  assert.is(readFileSync(lock, "utf8"), held);
  unlinkSync(lock);
});

t("a reader never sees a half-written keys file while writers in other processes replace it", async () => {
  const { path } = await keysFile();
  const dir = tempDir();
  const files = await Promise.all(Array.from({ length: 6 }, (_, i) => generateKeyFile(KeyType.ed25519, join(dir, `k${i}.pem`)).then(() => join(dir, `k${i}.pem`))));
  // a file of some size (comments are at most 200 characters): 100 entries written before, about 30 KB
  const f = JSON.parse(readFileSync(path, "utf8"));
  for (let i = 0; i < 100; i++) f.keys.push({ fingerprint: (await generateSigningKey()).public.fingerprint, role: "blocked", comment: "x".repeat(200), added: new Date().toISOString() });
  writeFileSync(path, JSON.stringify(f, null, 2));
  let writing = true;
  const writers = Promise.all(files.map((f) => runCli(["keys", "add", f, "--comment", "x".repeat(200), "--file", path]))).finally(() => (writing = false));
  let reads = 0;
  while (writing) {
    readKeysFile(path); // throws on a partial file
    reads++;
    await new Promise((r) => setImmediate(r));
  }
  for (const r of await writers) assert.is(r.code, 0, r.stderr);
  assert.is(readKeysFile(path).length, 107);
  assert.ok(reads > 10, `only ${reads} reads`);
});

t("concurrent api-token create and revoke, each in its own process: every create is kept, every revoke holds", async () => {
  const file = join(tempDir(), "api-tokens.json");
  const cli = async (...args: string[]) => {
    const r = await runCli(["api-token", ...args, "--file", file]);
    assert.is(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  const ids = async () => (JSON.parse(await cli("list", "--json")) as { id: string }[]).map((x) => x.id).sort();
  const old = [await cli("create", "--comment", "old 1"), await cli("create", "--comment", "old 2")].map((tok) => tok.slice(5, 21));
  const made = await Promise.all([
    ...Array.from({ length: 4 }, (_, i) => cli("create", "--comment", `new ${i}`)),
    ...old.map((id) => cli("revoke", id).then(() => undefined)),
  ]);
  const created = made.filter((x): x is string => x !== undefined).map((tok) => tok.slice(5, 21));
  assert.equal(await ids(), created.sort());
  assert.not.ok(existsSync(`${file}.lock`));
});

t.run();
