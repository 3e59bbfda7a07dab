/**
 * `server-key status|next|promote`: the service's server key rotation
 * (PROTOCOL.md §5.6) on the key file every node reads (`<data-dir>/server-key.pem`,
 * or `--server-key-file`). Nodes poll the files (`serve --server-key-poll`):
 * `next` makes every node announce the next key to pinned clients; `promote`,
 * once its not-before time has passed, makes every node present it.
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { KeyType } from "../shared/crypto.js";
import { defaultDataDir } from "../server/config.js";
import { SERVER_KEY_FILE, addNextServerKey, loadServerKeySet, promoteNextServerKey, serverKeyPaths } from "../server/server-key.js";

const KEY_TYPES: Record<string, KeyType> = { ed25519: KeyType.ed25519, p256: KeyType.p256, rsa: KeyType.rsa };
const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `90s`, `30m`, `12h`, `7d` into milliseconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+)([smhd])$/.exec(v);
  if (!m) throw new InvalidArgumentError(`expected a duration such as 30m, 12h or 7d`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

interface Where {
  dataDir: string;
  serverKeyFile?: string;
}
const keyFile = (o: Where) => o.serverKeyFile ?? join(o.dataDir, SERVER_KEY_FILE);

/** Adds `server-key` to `p`. */
export function serverKeyCommands(p: Command): void {
  const sk = p.command("server-key").description("rotate the service's server key without breaking pinned clients (PROTOCOL.md §5.6)");
  const where = (c: Command) =>
    c
      .option("--data-dir <dir>", "the node's data directory (holds server-key.pem)", defaultDataDir())
      .option("--server-key-file <file>", "the server key file every node of the service reads (as `serve --server-key-file`)");

  where(sk.command("status"))
    .description("show the current server key and, during a rollover, the next one")
    .option("--json", "print JSON")
    .action(async (o: Where & { json?: boolean }) => {
      const set = await loadServerKeySet(keyFile(o));
      const retired = serverKeyPaths(keyFile(o)).retired;
      const out = {
        file: keyFile(o),
        current: set.current.public.fingerprint,
        next: set.next ? { fingerprint: set.next.key.public.fingerprint, not_before: set.next.notBefore, promotable: Date.now() >= Date.parse(set.next.notBefore) } : null,
        retired_file: existsSync(retired) ? retired : null,
      };
      if (o.json) return console.log(JSON.stringify(out, null, 2));
      console.log(`current  ${out.current}`);
      if (out.next) console.log(`next     ${out.next.fingerprint}  not before ${out.next.not_before}${out.next.promotable ? "  (may be promoted)" : ""}`);
      else console.log("next     none (no rollover under way)");
      if (out.retired_file) console.log(`retired  ${out.retired_file} (destroy it once every client has moved)`);
    });

  where(sk.command("next"))
    .description("generate the next server key; every node announces it, signed by the current key, to clients that connect")
    .addOption(new Option("--type <type>", "key type").choices(Object.keys(KEY_TYPES)).default("ed25519"))
    .option("--in <duration>", "earliest promotion, from now (30m, 12h, 7d): long enough for clients to connect once", parseDuration)
    .option("--not-before <time>", "earliest promotion, as a date (RFC 3339)")
    .option("--force", "replace a next key that exists")
    .action(async (o: Where & { type: string; in?: number; notBefore?: string; force?: boolean }) => {
      if (o.in !== undefined && o.notBefore !== undefined) throw new InvalidArgumentError("give --in or --not-before, not both");
      let notBefore = new Date(Date.now() + (o.in ?? UNITS.d! * 7));
      if (o.notBefore !== undefined) {
        notBefore = new Date(o.notBefore);
        if (Number.isNaN(notBefore.getTime())) throw new InvalidArgumentError("--not-before expects a date such as 2027-01-31T00:00:00Z");
      }
      const set = await addNextServerKey(keyFile(o), { type: KEY_TYPES[o.type]!, notBefore, force: o.force === true });
      const paths = serverKeyPaths(keyFile(o));
      console.log(`next server key ${set.next!.key.public.fingerprint} not before ${set.next!.notBefore}`);
      console.log(`written to ${paths.next}; give it to every node as the current key was (they pick it up within --server-key-poll)`);
    });

  where(sk.command("promote"))
    .description("make the next server key the current one (after its not-before time)")
    .option("--force", "promote before the not-before time (clients that missed the announcement fail with server_key_mismatch)")
    .action(async (o: Where & { force?: boolean }) => {
      const before = await loadServerKeySet(keyFile(o));
      const set = await promoteNextServerKey(keyFile(o), { force: o.force === true });
      console.log(`server key is now ${set.current.public.fingerprint}; the former ${before.current.public.fingerprint} is in ${serverKeyPaths(keyFile(o)).retired}`);
    });
}
