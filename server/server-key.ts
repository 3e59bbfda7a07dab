/**
 * The server key: generated on first start into the data directory
 * (`server-key.pem`, PKCS#8, mode 0600; directory 0700) and loaded after.
 * All nodes of one service share it (copy the file or mount it as a secret).
 */
import { existsSync, mkdirSync, statSync } from "node:fs";
import { chmod, copyFile, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KeyType, type SigningKey } from "../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { RFC3339_UTC } from "../shared/frames.js";
import { generateKeyFile, loadKey } from "../node/key-files.js";
import type { Logger } from "./log.js";

export const SERVER_KEY_FILE = "server-key.pem";

export async function loadOrCreateServerKey(dataDir: string, log: Logger): Promise<SigningKey> {
  const path = join(dataDir, SERVER_KEY_FILE);
  if (existsSync(path)) {
    const key = await loadKey(path);
    log.info("server key loaded", { component: "server-key", path, fingerprint: key.public.fingerprint });
    return key;
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const key = await generateKeyFile(KeyType.ed25519, path);
  log.info("server key generated", { component: "server-key", path, fingerprint: key.public.fingerprint });
  return key;
}

// ------------------------------------------------------------------ rotation (PROTOCOL.md §5.6)

/**
 * The files of a server key and its rotation, beside the key file `F`
 * (`<dir>/server-key.pem` by default):
 * - `F` the current key;
 * - `<F>.next.pem` the next key (PKCS#8, mode 0600), shared with every node
 *   as the current one is;
 * - `<F>.next.json` `{"not_before": RFC 3339 UTC}`: the earliest promotion;
 * - `<F>.retired.pem` the key a promotion replaced (kept for a rollback; destroy it once the rollover is over).
 */
export interface ServerKeyPaths {
  readonly current: string;
  readonly next: string;
  readonly nextMeta: string;
  readonly retired: string;
}

/** The rotation files of the key file `file`. */
export function serverKeyPaths(file: string): ServerKeyPaths {
  const base = file.endsWith(".pem") ? file.slice(0, -4) : file;
  return { current: file, next: `${base}.next.pem`, nextMeta: `${base}.next.json`, retired: `${base}.retired.pem` };
}

/** What a node presents: the current key, and during a rollover the next one. */
export interface ServerKeySet {
  readonly current: SigningKey;
  readonly next?: { readonly key: SigningKey; readonly notBefore: string } | undefined;
}

/** Reads `<F>.next.json`; undefined when absent. @throws PsimbolsError `bad_request` when malformed. */
async function readNextMeta(path: string): Promise<{ not_before: string } | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw cause;
  }
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new PsimbolsError(ErrorCode.badRequest, `${path}: not JSON`);
  }
  const nb = (o as { not_before?: unknown } | null)?.not_before;
  if (typeof nb !== "string" || !RFC3339_UTC.test(nb) || Number.isNaN(Date.parse(nb))) {
    throw new PsimbolsError(ErrorCode.badRequest, `${path}: "not_before" expected an RFC 3339 UTC time`);
  }
  return { not_before: nb };
}

/**
 * Loads the current key of `file` and, when both `<F>.next.pem` and
 * `<F>.next.json` exist, the next one. A next key equal to the current one
 * (a promotion half done) counts as none.
 * @throws PsimbolsError `bad_request` for malformed files.
 */
export async function loadServerKeySet(file: string): Promise<ServerKeySet> {
  const p = serverKeyPaths(file);
  const current = await loadKey(p.current);
  const meta = await readNextMeta(p.nextMeta);
  if (!meta || !existsSync(p.next)) return { current };
  const key = await loadKey(p.next);
  if (key.public.fingerprint === current.public.fingerprint) return { current };
  return { current, next: { key, notBefore: meta.not_before } };
}

/**
 * `psimbols server-key next`: generates the next key beside `file` and
 * records its not-before time. Nodes that watch `file` start announcing it.
 * @throws PsimbolsError `bad_request` when a next key exists (unless `force`) or there is no current key.
 */
export async function addNextServerKey(file: string, o: { type?: KeyType; notBefore: Date; force?: boolean }): Promise<ServerKeySet> {
  const p = serverKeyPaths(file);
  if (!existsSync(p.current)) throw new PsimbolsError(ErrorCode.badRequest, `${p.current} does not exist: there is no current server key to announce a next one`);
  const current = await loadKey(p.current);
  const notBefore = o.notBefore.toISOString().replace(/\.\d{3}Z$/, "Z");
  if (existsSync(p.next) && !o.force) throw new PsimbolsError(ErrorCode.badRequest, `${p.next} exists: a rollover is already under way (promote it, or --force to replace it)`);
  // the key first, then the time: a node sees a next key only when both are there
  await rm(p.nextMeta, { force: true });
  const key = await generateKeyFile(o.type ?? KeyType.ed25519, p.next, { force: o.force === true });
  await writeAtomic(p.nextMeta, `${JSON.stringify({ not_before: notBefore })}\n`);
  return { current, next: { key, notBefore } };
}

/**
 * `psimbols server-key promote`: the next key becomes the current one; the
 * former current key is kept as `<F>.retired.pem`.
 * @throws PsimbolsError `bad_request` when there is no next key, or before its not-before time unless `force`.
 */
export async function promoteNextServerKey(file: string, o: { now?: Date; force?: boolean } = {}): Promise<ServerKeySet> {
  const p = serverKeyPaths(file);
  const set = await loadServerKeySet(file);
  if (!set.next) throw new PsimbolsError(ErrorCode.badRequest, `no next server key beside ${file} (run \`psimbols server-key next\` first)`);
  const now = o.now ?? new Date();
  if (now.getTime() < Date.parse(set.next.notBefore) && !o.force) {
    throw new PsimbolsError(ErrorCode.badRequest, `the next key is not to be used before ${set.next.notBefore}: clients that have not connected since it was announced would not know it (--force to promote anyway)`);
  }
  await copyFile(p.current, p.retired);
  await chmod(p.retired, 0o600);
  // rename is atomic: a node reading meanwhile sees the old key or the new one, never neither
  await rename(p.next, p.current);
  await rm(p.nextMeta, { force: true });
  return { current: set.next.key };
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

/**
 * Polls the rotation files of `file` every `intervalMs` and calls `onChange`
 * with the new set when any of them changed (size or modification time).
 * A failed load (a file caught mid-write) is logged and tried again at the next tick.
 * @returns a function that stops the polling.
 */
export function watchServerKeys(file: string, intervalMs: number, onChange: (set: ServerKeySet) => void | Promise<void>, log: Logger): () => void {
  const p = serverKeyPaths(file);
  const stamp = () =>
    [p.current, p.next, p.nextMeta]
      .map((f) => {
        try {
          const s = statSync(f);
          return `${s.size}:${s.mtimeMs}:${s.ino}`;
        } catch {
          return "-";
        }
      })
      .join("|");
  let last = stamp();
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    const now = stamp();
    if (now === last) return;
    busy = true;
    loadServerKeySet(file)
      .then(async (set) => {
        last = now;
        await onChange(set);
      })
      .catch((e: unknown) => log.warn("cannot load the server key files; keeping the keys in use", { component: "server-key", path: file, error: e instanceof Error ? e.message : String(e) }))
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
