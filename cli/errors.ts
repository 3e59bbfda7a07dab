/**
 * How the CLI fails: an `error:` line and, where it helps, a `hint:` line
 * saying what to do (as age does), exit code 1. A hint is chosen where the
 * failure happened (the command knows whether a key came from a file or a
 * pin came from an option), so it never blames the wrong party.
 */
import { readFileSync } from "node:fs";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { parseWrapKey } from "../server/store/wrap.js";

/** An error of the CLI with the hint to print under it. */
export class CliError extends Error {
  readonly hint: string | undefined;
  constructor(message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CliError";
    this.hint = hint;
  }
}

/** `e` with `hint` attached (kept when `e` already carries one), for {@link main}'s printer. */
export function withHint<E>(e: E, hint: string): E {
  if (e instanceof Error && (e as { hint?: string }).hint === undefined) Object.assign(e, { hint });
  return e;
}

/** The hint attached to `e` by {@link withHint} or {@link CliError}, if any. */
export function hintOf(e: unknown): string | undefined {
  const h = e instanceof Error ? (e as { hint?: unknown }).hint : undefined;
  return typeof h === "string" ? h : undefined;
}

/** Fails like commander does for a missing mandatory option (checked in the action, so an unknown option is reported first). */
export function required<T>(value: T | undefined, flag: string): T {
  if (value === undefined) throw new CliError(`required option '${flag}' not specified`, "add --help for usage");
  return value;
}

/**
 * A Redis URL fit to print: the password (and a user name, which may be a
 * token) replaced by `***`. Falls back to a placeholder when it does not parse.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    if (u.username !== "" && u.password === "") u.username = "***";
    return u.href;
  } catch {
    return "(the --redis URL, which does not parse)";
  }
}

/**
 * Runs `f` against Redis at `url`; a store failure (`unavailable`) or a
 * connection error becomes an error naming the URL (password redacted).
 */
export async function atRedis<T>(url: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    const down = e instanceof PsimbolsError ? e.code === ErrorCode.unavailable : /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|Connection is closed|max retries|timed out|NOAUTH|WRONGPASS/i.test(String(e));
    if (!down) throw e;
    throw new CliError(`cannot reach Redis at ${redactUrl(url)}`, "is redis-server running there, and is the URL (--redis) right?", { cause: e });
  }
}

/** Where a command that writes Redis directly takes the key-wrapping key from. */
export const WRAP_KEY_WAYS = "set PSIMBOLS_WRAP_KEY (32 bytes, base64url) or pass --wrap-key-file FILE; `npm run cluster` keeps it in DIR/wrap-key and prints the export line";

/**
 * The key-wrapping key: the file named by `--wrap-key-file`, else
 * `PSIMBOLS_WRAP_KEY`. The caller wipes the bytes after use.
 * @throws CliError naming both ways when neither is given, or the source of a malformed key.
 */
export function wrapKeyFrom(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Uint8Array {
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (cause) {
      throw new CliError(`cannot read the wrap key file ${file}`, WRAP_KEY_WAYS, { cause });
    }
    try {
      return parseWrapKey(text, `--wrap-key-file ${file}`);
    } catch (e) {
      throw new CliError((e as Error).message, WRAP_KEY_WAYS);
    }
  }
  const text = env.PSIMBOLS_WRAP_KEY;
  if (text === undefined || text === "") {
    throw new CliError("--redis needs the cluster's key-wrapping key, which encrypts channel keys and pushes in Redis", WRAP_KEY_WAYS);
  }
  try {
    return parseWrapKey(text, "PSIMBOLS_WRAP_KEY");
  } catch (e) {
    throw new CliError((e as Error).message, WRAP_KEY_WAYS);
  }
}
