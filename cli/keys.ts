/**
 * `keys add|list|remove`: the registered keys of a service (a keys file, or
 * Redis for a cluster).
 */
import { type Command, Option } from "commander";
import { join } from "node:path";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { loadKey, loadPublicKey } from "../node/key-files.js";
import { connect } from "../client/node.js";
import { defaultDataDir } from "../server/config.js";
import { RedisRegistry, Role, addKey, readKeysFile, removeKey } from "../server/registry.js";
import { atRedis } from "./errors.js";
import { escapeComment } from "../shared/comment.js";

const defaultKeysFile = () => join(defaultDataDir(), "keys.json");

/** Adds `keys` to `p`. */
export function keysCommands(p: Command): void {
  const keys = p.command("keys").description("manage the registered keys of a closed service (a keys file, or Redis for a cluster)");
  const where = (c: Command) =>
    c.option("--file <keys.json>", "registered keys file (its folder is created when missing)", defaultKeysFile()).option("--redis <url>", "the cluster's Redis instead of a file (no wrap key needed)");
  const withRegistry = async <T>(o: { file: string; redis?: string }, f: (r: RedisRegistry | undefined) => Promise<T>): Promise<T> => {
    const r = o.redis ? new RedisRegistry(o.redis) : undefined;
    try {
      return r && o.redis ? await atRedis(o.redis, () => f(r)) : await f(r);
    } finally {
      await r?.close();
    }
  };
  where(keys.command("add"))
    .description("register a key (from a private or public PEM file); --role blocked refuses it (a fingerprint is enough)")
    .argument("<keyfile>", "a PEM file, or with --role blocked a fingerprint SHA256:…")
    .addOption(new Option("--role <role>", "role").choices(Object.values(Role)).default(Role.client))
    .option("--comment <text>", "a note for operators: one line of at most 200 characters, no control characters (a block by fingerprint of a registered key keeps its comment unless one is given)")
    .action(async (keyfile: string, o: { file: string; redis?: string; role: Role; comment?: string }) => {
      const byFingerprint = /^SHA256:[A-Za-z0-9+/]{43}$/.test(keyfile);
      if (byFingerprint && o.role !== Role.blocked) throw new PsimbolsError(ErrorCode.badRequest, `a ${o.role} key needs its public key (a PEM file); only --role blocked takes a fingerprint`);
      const pub = byFingerprint ? { fingerprint: keyfile } : await loadPublicKey(keyfile);
      const k = await withRegistry(o, (r) => (r ? r.add(pub, o) : addKey(o.file, pub, o)));
      console.log(`added ${k.fingerprint} (${k.role}) to ${o.redis ? "redis" : o.file}`);
    });
  where(keys.command("list"))
    .description("list registered keys")
    .option("--json", "print JSON")
    .action(async (o: { file: string; redis?: string; json?: boolean }) => {
      const list = await withRegistry(o, async (r) => (r ? r.list() : readKeysFile(o.file)));
      if (o.json) return console.log(JSON.stringify(list, null, 2));
      // A comment written before comments were checked cannot forge rows: control characters are escaped.
      for (const k of list) console.log(`${k.fingerprint}  ${k.public_key?.type ?? "-"}  ${k.role}  ${escapeComment(typeof k.comment === "string" ? k.comment : "")}`);
      if (list.length === 0) console.error(`no keys registered in ${o.redis ? "redis" : o.file}`);
    });
  keys
    .command("rotate")
    .description("move your identity from one key to another in one handshake proving both (PROTOCOL.md §5.7): the service keeps your registration and kept pushes")
    .argument("<old>", "the current identity key (PKCS#8 PEM)")
    .argument("<new>", "the new identity key (PKCS#8 PEM; `psimbols keygen -o new.pem`)")
    .requiredOption("--url <url>", "broker URL, e.g. wss://broker.example/")
    .option("--server-key <fingerprint>", "pin the server key (otherwise the known-servers file)")
    .option("--known-servers <file>", "known-servers file")
    .action(async (oldFile: string, newFile: string, o: { url: string; serverKey?: string; knownServers?: string }) => {
      const [oldKey, newKey] = [await loadKey(oldFile), await loadKey(newFile)];
      const client = await connect(o.url, {
        key: oldKey,
        ...(o.serverKey ? { serverKey: o.serverKey } : {}),
        ...(o.knownServers ? { knownServersFile: o.knownServers } : {}),
        reconnect: false,
        renew: false,
      });
      try {
        await client.moveIdentity(newKey);
        console.log(`moved ${oldKey.public.fingerprint} to ${client.identity}; use ${newFile} from now on`);
      } finally {
        await client.close().catch(() => {});
      }
    });
  where(keys.command("remove"))
    .description("unregister a key by fingerprint")
    .argument("<fingerprint>")
    .action(async (fp: string, o: { file: string; redis?: string }) => {
      const removed = await withRegistry(o, (r) => (r ? r.remove(fp) : removeKey(o.file, fp)));
      if (!removed) throw new PsimbolsError(ErrorCode.badRequest, `${fp} is not registered in ${o.redis ? "redis" : o.file}`);
      console.log(`removed ${fp} from ${o.redis ? "redis" : o.file}`);
    });
}
