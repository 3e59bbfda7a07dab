/**
 * The `psimbols` command: keygen, serve, call, fingerprint, keys.
 * Errors print `error: …` and, where it helps, `hint: …`, and exit non-zero.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type KeyType, KeyType as KT, type PublicKey, importSpki, wirePublicKey } from "../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { connect, generateKeyFile, keyTypeOf, loadKey } from "../client/node.js";
import { Broker, MAX_PUSH_BYTES } from "./broker.js";
import { defaultDataDir, resolveConfig } from "./config.js";
import { createLogger } from "./log.js";
import { FileRegistry, type KeyRegistry, RedisRegistry, Role, addKey, readKeysFile, removeKey } from "./registry.js";
import { RedisStore } from "./store/redis-store.js";
import type { Store } from "./store/store.js";
import { parseWrapKey } from "./store/wrap.js";
import { loadOrCreateServerKey } from "./server-key.js";
import { consoleHook } from "./console.js";
import { channelRow } from "./operator.js";

const KEY_TYPES: Record<string, KeyType> = { ed25519: KT.ed25519, p256: KT.p256, rsa: KT.rsa };

function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${name} expects an integer`);
    return n;
  };
}

/** Reads a public key from a PEM file holding either a private (PKCS#8) or a public (SPKI) key. */
async function loadPublicKey(path: string): Promise<PublicKey> {
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `cannot read ${path}`, { cause });
  }
  let pub;
  try {
    pub = createPublicKey(pem);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `${path} is not a PEM key`, { cause });
  }
  const spki = new Uint8Array(pub.export({ type: "spki", format: "der" }));
  return importSpki(keyTypeOf(pub), spki);
}

const defaultKeysFile = () => join(defaultDataDir(), "keys.json");

export function program(): Command {
  const p = new Command("psimbols")
    .description("Secure channel broker: a key pair and a URL are all a client needs.")
    .showHelpAfterError("(add --help for usage)");

  p.command("keygen")
    .description("generate an identity key (PKCS#8 PEM, mode 0600) and print its public key and fingerprint")
    .addOption(new Option("--type <type>", "key type").choices(Object.keys(KEY_TYPES)).default("ed25519"))
    .requiredOption("-o, --out <file>", "where to write the private key")
    .option("--force", "overwrite an existing file")
    .action(async (o: { type: string; out: string; force?: boolean }) => {
      const key = await generateKeyFile(KEY_TYPES[o.type]!, o.out, { force: o.force === true });
      console.log(JSON.stringify({ public_key: wirePublicKey(key.public), fingerprint: key.public.fingerprint }));
    });

  p.command("fingerprint")
    .description("print the fingerprint of a key file (private or public PEM)")
    .argument("<file>")
    .action(async (file: string) => console.log((await loadPublicKey(file)).fingerprint));

  p.command("serve")
    .description("run a broker node")
    .option("--port <n>", "port for WebSocket and HTTP", int("--port"), 9393)
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--source <url>", "URL clients use to reach this node (the `source` of server frames)")
    .option("--data-dir <dir>", "holds the server key", defaultDataDir())
    .option("--closed", "closed service: only registered keys get a channel")
    .option("--keys <file>", "registered keys file (see `psimbols keys`)")
    .option("--channel-ttl <seconds>", "channel lifetime", int("--channel-ttl"), 3600)
    .option("--expiring-before <seconds>", "push `expiring` this long before expiry", int("--expiring-before"))
    .option("--handshake-timeout <ms>", "time allowed to complete a handshake", int("--handshake-timeout"))
    .option("--max-connections-per-address <n>", "open connections per client address", int("--max-connections-per-address"))
    .option("--hellos-per-address <n>", "hellos and resumes per address per 10 s", int("--hellos-per-address"))
    .option("--ping-interval <ms>", "WebSocket ping interval; a peer that misses a pong is cut off", int("--ping-interval"))
    .option("--redis <url>", "share state with other nodes through Redis (needs PSIMBOLS_WRAP_KEY)")
    .option("--server-key-file <file>", "server key (PKCS#8 PEM) shared by all nodes of the service; default <data-dir>/server-key.pem")
    .option("--node <name>", "this node's name in logs, metrics and channel records")
    .option("--trust-proxy", "take the client address from the last X-Forwarded-For entry (behind a load balancer)")
    .option("--push-window-count <n>", "application pushes kept per identity for clients that are away", int("--push-window-count"), 1000)
    .option("--push-window-age <seconds>", "longest a push is kept", int("--push-window-age"), 3600)
    .option("--no-console", "do not serve the web console at /console/")
    .option("--log-level <level>", "error, warn, info or debug", process.env.PSIMBOLS_LOG_LEVEL ?? "info")
    .action(async (o) => {
      const log = createLogger({ level: o.logLevel });
      const limits: Record<string, number> = {};
      if (o.handshakeTimeout !== undefined) limits.handshakeTimeoutMs = o.handshakeTimeout;
      if (o.maxConnectionsPerAddress !== undefined) limits.connectionsPerAddress = o.maxConnectionsPerAddress;
      if (o.hellosPerAddress !== undefined) limits.hellosPerAddress = o.hellosPerAddress;
      if (o.pingInterval !== undefined) limits.pingIntervalMs = o.pingInterval;
      // Registered keys: --keys FILE; else, in a cluster, Redis; else <data-dir>/keys.json, watched even
      // while missing, so operators and blocked keys added later take effect without a restart.
      const keysFile: string | undefined = o.keys ?? (!o.redis ? join(o.dataDir, "keys.json") : undefined);
      const config = resolveConfig({
        port: o.port,
        host: o.host,
        source: o.source,
        dataDir: o.dataDir,
        closed: o.closed === true,
        keysFile,
        channelTtl: o.channelTtl,
        expiringBefore: o.expiringBefore,
        trustProxy: o.trustProxy === true,
        pushWindow: { count: o.pushWindowCount, ageMs: o.pushWindowAge * 1000 },
        ...(o.node ? { node: o.node } : {}),
        limits,
      });
      const serverKey = o.serverKeyFile ? await loadKey(o.serverKeyFile) : await loadOrCreateServerKey(config.dataDir, log);
      let store: Store | undefined;
      let registry: KeyRegistry | undefined = keysFile ? new FileRegistry(keysFile) : undefined;
      if (o.redis) {
        const wrapKey = parseWrapKey(process.env.PSIMBOLS_WRAP_KEY, "PSIMBOLS_WRAP_KEY");
        store = new RedisStore({ url: o.redis, wrapKey, node: config.node, logger: log });
        wrapKey.fill(0);
        if (!keysFile) registry = new RedisRegistry(o.redis);
      }
      const broker = await Broker.start({
        config,
        serverKey,
        registry,
        logger: log,
        ...(store ? { store } : {}),
        ...(o.console ? { http: consoleHook() } : {}),
      });
      // Printed on stdout as well, so a person (or a test) can pin it.
      console.log(`psimbols listening on ws://${config.host}:${broker.port}/ fingerprint ${serverKey.public.fingerprint}`);
      if (o.console) {
        const page = new URL("console/", broker.config.source.replace(/^ws/i, "http")).href;
        console.log(`web console: ${page} (operators only; --no-console turns it off)`);
      }
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info("stopping", { component: "cli", signal });
        void broker.close().then(() => process.exit(0));
      };
      // One bad request must never take the node down: log what escaped, keep serving.
      process.on("unhandledRejection", (e) => log.error("unhandled rejection", { component: "cli", error: e instanceof Error ? e.stack : String(e) }));
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
    });

  p.command("call")
    .description("make one request and print the response data as JSON")
    .argument("<url>", "broker URL, e.g. ws://127.0.0.1:9393/")
    .argument("<op>", "operation, e.g. echo")
    .argument("[json]", "request data as JSON", "null")
    .requiredOption("--key <file>", "identity key (PKCS#8 PEM)")
    .option("--server-key <fingerprint>", "pin the server key (otherwise trust on first use, kept in the known-servers file)")
    .option("--known-servers <file>", "known-servers file")
    .option("--timeout <ms>", "request timeout", int("--timeout"), 10_000)
    .action(async (url: string, op: string, json: string, o: { key: string; serverKey?: string; knownServers?: string; timeout: number }) => {
      let data: unknown;
      try {
        data = JSON.parse(json);
      } catch {
        throw new PsimbolsError(ErrorCode.badRequest, "request data is not valid JSON");
      }
      const key = await loadKey(o.key);
      const client = await connect(url, {
        key,
        ...(o.serverKey ? { serverKey: o.serverKey } : {}),
        ...(o.knownServers ? { knownServersFile: o.knownServers } : {}),
        requestTimeoutMs: o.timeout,
        reconnect: false,
        renew: false,
      });
      try {
        console.log(JSON.stringify(await client.request(op, data, { timeoutMs: o.timeout })));
      } finally {
        await client.close().catch(() => {});
      }
    });

  // ---- operations on a running service: through Redis, or over a channel with an operator key
  type AdminOpts = { redis?: string; url?: string; key?: string; serverKey?: string };
  const adminWhere = (c: Command) =>
    c
      .option("--redis <url>", "act on the cluster's Redis directly (needs PSIMBOLS_WRAP_KEY)")
      .option("--url <url>", "or: a broker URL, acting through its admin ops")
      .option("--key <file>", "with --url: an operator identity key (keys add --role operator)")
      .option("--server-key <fingerprint>", "with --url: pin the server key");
  const targetOf = (o: { channel?: string; identity?: string }) => {
    if ((o.channel === undefined) === (o.identity === undefined)) throw new PsimbolsError(ErrorCode.badRequest, "give exactly one of --channel or --identity");
    return o.channel !== undefined ? { channel: o.channel } : { identity: o.identity! };
  };
  /** Runs `viaStore` on a RedisStore, or `viaOps` on an operator's channel. */
  async function admin<T>(o: AdminOpts, viaStore: (s: RedisStore) => Promise<T>, viaOps: (request: (op: string, data?: unknown) => Promise<unknown>) => Promise<T>): Promise<T> {
    if (o.redis) {
      const wrapKey = parseWrapKey(process.env.PSIMBOLS_WRAP_KEY, "PSIMBOLS_WRAP_KEY");
      const store = new RedisStore({ url: o.redis, wrapKey });
      wrapKey.fill(0);
      try {
        return await viaStore(store);
      } finally {
        await store.close();
      }
    }
    if (!o.url || !o.key) throw new PsimbolsError(ErrorCode.badRequest, "give --redis URL, or --url URL with --key FILE");
    const client = await connect(o.url, { key: await loadKey(o.key), ...(o.serverKey ? { serverKey: o.serverKey } : {}), reconnect: false, renew: false });
    try {
      return await viaOps((op, data) => client.request(op, data));
    } finally {
      await client.close().catch(() => {});
    }
  }

  const channels = p.command("channels").description("list or revoke the channels of a running service");
  adminWhere(channels.command("list"))
    .description("list live channels (never their keys)")
    .option("--json", "print JSON")
    .action(async (o: AdminOpts & { json?: boolean }) => {
      const rows = await admin(
        o,
        async (store) => (await store.listChannels()).map(channelRow),
        async (request) => ((await request("admin.channels")) as { channels: ReturnType<typeof channelRow>[] }).channels,
      );
      if (o.json) return console.log(JSON.stringify(rows, null, 2));
      for (const r of rows) console.log(`${r.channel}  ${r.identity}  ${r.node}  until ${r.valid_until}`);
      if (rows.length === 0) console.error("no live channels");
    });
  adminWhere(channels.command("revoke"))
    .description("revoke a channel, or the channel of an identity; its client gets `revoked`")
    .option("--channel <id>")
    .option("--identity <fingerprint>")
    .action(async (o: AdminOpts & { channel?: string; identity?: string }) => {
      const t = targetOf(o);
      const revoked = await admin(
        o,
        async (store) => (t.channel !== undefined ? ((await store.retire(t.channel, "revoked")) ? [t.channel] : []) : store.retireIdentity(t.identity!, "revoked")),
        async (request) => ((await request("admin.revoke", t)) as { revoked: string[] }).revoked,
      );
      if (revoked.length === 0) throw new PsimbolsError(ErrorCode.notFound, "no live channel matched");
      console.log(`revoked ${revoked.join(" ")}`);
    });

  adminWhere(p.command("push"))
    .description("push an application message to an identity (or one channel) wherever it is connected")
    .argument("<json>", "the message, as JSON")
    .option("--channel <id>")
    .option("--identity <fingerprint>")
    .option("--push-window-count <n>", "with --redis: pushes kept per identity (match the nodes)", int("--push-window-count"), 1000)
    .option("--push-window-age <seconds>", "with --redis: longest a push is kept", int("--push-window-age"), 3600)
    .action(async (json: string, o: AdminOpts & { channel?: string; identity?: string; pushWindowCount: number; pushWindowAge: number }) => {
      let message: unknown;
      try {
        message = JSON.parse(json);
      } catch {
        throw new PsimbolsError(ErrorCode.badRequest, "the message is not valid JSON");
      }
      // The same bound as Broker.push (with --redis the store is written directly).
      if (Buffer.byteLength(JSON.stringify(message)) > MAX_PUSH_BYTES) throw new PsimbolsError(ErrorCode.badRequest, `the message is larger than ${MAX_PUSH_BYTES} bytes of JSON`);
      const t = targetOf(o);
      const seq = await admin(
        o,
        async (store) => {
          const identity = t.identity ?? (await store.getChannel(t.channel!))?.identity;
          if (identity === undefined) throw new PsimbolsError(ErrorCode.notFound, "no such channel");
          return store.push(identity, JSON.stringify(message), { count: o.pushWindowCount, ageMs: o.pushWindowAge * 1000 }, t.channel);
        },
        async (request) => ((await request("admin.push", { ...t, message })) as { seq: number }).seq,
      );
      console.log(JSON.stringify({ seq }));
    });

  const keys = p.command("keys").description("manage the registered keys of a closed service (a keys file, or Redis for a cluster)");
  const where = (c: Command) =>
    c.option("--file <keys.json>", "registered keys file", defaultKeysFile()).option("--redis <url>", "the cluster's Redis instead of a file");
  const withRegistry = async <T>(o: { file: string; redis?: string }, f: (r: RedisRegistry | undefined) => Promise<T>): Promise<T> => {
    const r = o.redis ? new RedisRegistry(o.redis) : undefined;
    try {
      return await f(r);
    } finally {
      await r?.close();
    }
  };
  where(keys.command("add"))
    .description("register a key (from a private or public PEM file); --role blocked refuses it (a fingerprint is enough)")
    .argument("<keyfile>", "a PEM file, or with --role blocked a fingerprint SHA256:…")
    .addOption(new Option("--role <role>", "role").choices(Object.values(Role)).default(Role.client))
    .option("--comment <text>", "a note for operators", "")
    .action(async (keyfile: string, o: { file: string; redis?: string; role: Role; comment: string }) => {
      const byFingerprint = /^SHA256:[A-Za-z0-9+/]{43}$/.test(keyfile);
      if (byFingerprint && o.role !== Role.blocked) throw new PsimbolsError(ErrorCode.badRequest, `a ${o.role} key needs its public key (a PEM file); only --role blocked takes a fingerprint`);
      const pub = byFingerprint ? { fingerprint: keyfile } : await loadPublicKey(keyfile);
      const k = await withRegistry(o, async (r) => (r ? r.add(pub, o) : addKey(o.file, pub, o)));
      console.log(`added ${k.fingerprint} (${k.role}) to ${o.redis ? "redis" : o.file}`);
    });
  where(keys.command("list"))
    .description("list registered keys")
    .option("--json", "print JSON")
    .action(async (o: { file: string; redis?: string; json?: boolean }) => {
      const list = await withRegistry(o, async (r) => (r ? r.list() : readKeysFile(o.file)));
      if (o.json) return console.log(JSON.stringify(list, null, 2));
      for (const k of list) console.log(`${k.fingerprint}  ${k.public_key?.type ?? "-"}  ${k.role}  ${k.comment}`);
      if (list.length === 0) console.error(`no keys registered in ${o.redis ? "redis" : o.file}`);
    });
  where(keys.command("remove"))
    .description("unregister a key by fingerprint")
    .argument("<fingerprint>")
    .action(async (fp: string, o: { file: string; redis?: string }) => {
      const removed = await withRegistry(o, async (r) => (r ? r.remove(fp) : removeKey(o.file, fp)));
      if (!removed) throw new PsimbolsError(ErrorCode.badRequest, `${fp} is not registered in ${o.redis ? "redis" : o.file}`);
      console.log(`removed ${fp} from ${o.redis ? "redis" : o.file}`);
    });
  return p;
}

const HINTS: Partial<Record<ErrorCode, string>> = {
  server_key_mismatch: "the server's key differs from the pinned or known one; if the server key was rotated on purpose, remove its line from the known-servers file",
  connection_lost: "is the broker running at that URL? start one with `psimbols serve`",
  forbidden: "the service refused this key: a closed service serves only registered keys (ask its operator to run `psimbols keys add` with your public key), and any service refuses keys its operator blocked",
  unsupported: "the server does not accept what this client offered",
  too_many: "rate limited: wait a little and try again",
  unavailable: "the broker's store is down: try again shortly",
};

/** Runs the CLI; never throws. */
export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv);
  } catch (e) {
    if (e instanceof PsimbolsError) {
      console.error(`error: ${e.message} (${e.code})`);
      const hint = HINTS[e.code];
      if (hint) console.error(`hint: ${hint}`);
    } else {
      console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    }
    process.exitCode = 1;
  }
}
