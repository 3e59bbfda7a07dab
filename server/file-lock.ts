/**
 * Read-modify-write of a small JSON file shared by several processes (the
 * keys file, the API tokens file): one writer at a time under `<file>.lock`,
 * the file replaced by rename, so concurrent writers never lose one another's
 * writes and a reader sees the old file or the new one (DESIGN.md §11).
 */
import { closeSync, linkSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";

/** How long a writer waits for a file's lock before giving up. */
export const FILE_LOCK_WAIT_MS = 5000;
/** A lock older than this is stale (its writer died while holding it): a write takes milliseconds. */
export const FILE_LOCK_STALE_MS = 30_000;

/** Writes `text` to `path` (mode 0600) through a temporary file and a rename. Call it holding the lock. */
export function replaceFile(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}

/**
 * Runs `fn` (synchronous: read, change, {@link replaceFile}) holding
 * `<path>.lock`, made with O_EXCL, so writers in every process sharing the
 * file take turns. A lock whose process is gone (same host) or older than
 * {@link FILE_LOCK_STALE_MS} is broken.
 * @throws PsimbolsError `unavailable` when the lock stays held for {@link FILE_LOCK_WAIT_MS}; nothing written.
 */
export async function withFileLock<T>(path: string, fn: () => T): Promise<T> {
  const lock = `${path}.lock`;
  const mine = `${process.pid} ${hostname()} ${randomBytes(8).toString("hex")}\n`;
  const deadline = Date.now() + FILE_LOCK_WAIT_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      const fd = openSync(lock, "wx", 0o600);
      try {
        writeSync(fd, mine);
      } finally {
        closeSync(fd);
      }
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    if (breakStaleLock(lock)) continue;
    if (Date.now() > deadline) throw new PsimbolsError(ErrorCode.unavailable, `${path} is locked by another writer (${lock}); try again`);
    await new Promise((r) => setTimeout(r, Math.min(50, attempt * 2) * (0.5 + Math.random())));
  }
  try {
    return fn();
  } finally {
    // Only our own lock: were it broken as stale meanwhile, it now belongs to another writer.
    if (readText(lock) === mine) unlinkSync(lock);
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** Removes `lock` if its writer is gone. @returns whether it did, or the lock went meanwhile (then try again at once). */
function breakStaleLock(lock: string): boolean {
  const seen = readText(lock);
  if (seen === undefined) return true;
  let age: number;
  try {
    age = Date.now() - statSync(lock).mtimeMs;
  } catch {
    return true;
  }
  const [pid, host] = seen.split(" ");
  const dead = host === hostname() && Number.isSafeInteger(Number(pid)) && !alive(Number(pid));
  if (!dead && age < FILE_LOCK_STALE_MS) return false;
  // Renamed aside first, then checked: if another writer broke it and took the lock in between, put theirs back.
  const aside = `${lock}.${process.pid}.${randomBytes(6).toString("hex")}.stale`;
  try {
    renameSync(lock, aside);
  } catch {
    return true;
  }
  if (readText(aside) !== seen) {
    try {
      linkSync(aside, lock);
    } catch {
      /* a third writer holds it now; theirs stands */
    }
  }
  unlinkSync(aside);
  return true;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
