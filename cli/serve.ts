/**
 * `serve`: run a broker node.
 */
import type { Command } from "commander";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { chachaEngine } from "../node/engines.js";
import { Broker } from "../server/broker.js";
import { defaultDataDir, resolveConfig } from "../server/config.js";
import { createLogger } from "../server/log.js";
import { FileRegistry, type KeyRegistry, RedisRegistry, readKeysFile } from "../server/registry.js";
import { RedisStore } from "../server/store/redis-store.js";
import type { Store } from "../server/store/store.js";
import { SERVER_KEY_FILE, loadOrCreateServerKey, loadServerKeySet, watchServerKeys } from "../server/server-key.js";
import { consoleHook } from "../server/console.js";
import { loadIdentityKey } from "./client.js";
import { CliError, WRAP_KEY_WAYS, wrapKeyFrom } from "./errors.js";
import { channelTypeList, int } from "./options.js";
import { EVENTS_SECRET_ENV, createAppCalls, destinationSecrets } from "../server/app/setup.js";
import { parseUpstreamRoute } from "../server/app/upstream.js";
import { dirname } from "node:path";
import { EVENT_DEFAULTS, Events } from "../server/app/events.js";
import { ApiServer, parseListen } from "../server/api/server.js";
import { FileTokenStore, RedisTokenStore } from "../server/api/tokens.js";
import type { KemType } from "../shared/frames.js";

/** Adds `serve` to `p`. */
export function serveCommand(p: Command): void {
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
    .option("--hellos-per-address <n>", "hellos per address per 10 s", int("--hellos-per-address"))
    .option("--ping-interval <ms>", "WebSocket ping interval; a peer that misses a pong is cut off", int("--ping-interval"))
    .option("--redis <url>", "share state with other nodes through Redis (needs the wrap key: PSIMBOLS_WRAP_KEY or --wrap-key-file): redis://host:port, or Sentinel: redis+sentinel://host1:26379,host2:26379/mastername; default $PSIMBOLS_REDIS", process.env.PSIMBOLS_REDIS || undefined)
    .option("--wrap-key-file <file>", "with --redis: the key-wrapping key shared by all nodes (instead of PSIMBOLS_WRAP_KEY)")
    .option("--server-key-file <file>", "server key (PKCS#8 PEM) shared by all nodes of the service; default <data-dir>/server-key.pem")
    .option("--server-key-poll <ms>", "how often to look for a next or promoted server key (`psimbols server-key`)", int("--server-key-poll"), 5000)
    .option("--node <name>", "this node's name in logs, metrics and channel records (default: hostname:pid, unique per container)")
    .option("--fleet-range <cidr>", "an address range where many devices share one address (NAT, an office): limits there scale with proven channels, not addresses (repeatable; IPv4 or IPv6 prefix; PROTOCOL.md §11.3)", (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option("--fleet-unproven <n>", "with --fleet-range: sockets without a channel per address of a range; past it the oldest is cut (default 1024)", int("--fleet-unproven"))
    .option("--trust-proxy", "take the client address from the last X-Forwarded-For entry (behind a load balancer)")
    .option("--push-window-count <n>", "application pushes kept per identity for clients that are away", int("--push-window-count"), 1000)
    .option("--push-window-age <seconds>", "longest a push is kept", int("--push-window-age"), 3600)
    .option("--channel-types <list>", "channel types granted, comma-separated (default: AES-256-GCM,ChaCha20-Poly1305; the client's order picks)", channelTypeList("--channel-types"))
    .option("--hellos-per-second <n>", "a fixed cap on hellos per second on this node, shared fairly among addresses (default 0: none, admitted by capacity)", int("--hellos-per-second"))
    .option("--hello-lag <ms>", "admit hellos while this node's event loop lags less than this (default 100; PROTOCOL.md §11.4)", int("--hello-lag"))
    .option("--resume-lag <ms>", "admit resumes of existing channels while the lag is less than this, at least --hello-lag (default 300)", int("--resume-lag"))
    .option("--resumes-per-address <n>", "resumes per address per 10 s (a budget apart from hellos)", int("--resumes-per-address"))
    .option("--failed-frames-per-address <n>", "frames failing authentication per address per 10 s before close 4002", int("--failed-frames-per-address"))
    .option("--resumes-per-second <n>", "a fixed cap on resumes per second on this node, shared fairly among addresses (default 0: none)", int("--resumes-per-second"))
    .option("--store-loss-bound <seconds>", "longest time bound channels are served without reaching the store; then every socket is closed with 4009 (default 15)", int("--store-loss-bound"))
    .option("--no-console", "do not serve the web console at /console/")
    // Calls to the application (docs/BACKEND.md); each destination signed with its own secret (§1).
    .option("--upstream <[prefix=]url>", "send ops no built-in handles to this HTTP upstream (repeatable; PREFIX=URL routes by op prefix, the longest wins)", (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option("--upstream-batch <prefix>", "send this route's requests in batches, answers streamed one per line (repeatable; * is the default route; the upstream must take them: docs/BACKEND.md \"Batches\")", (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option("--upstream-timeout <ms>", "whole-request timeout of upstream calls", int("--upstream-timeout"))
    .option("--upstream-max-in-flight <n>", "requests in flight from this node to each upstream route", int("--upstream-max-in-flight"))
    .option("--upstream-max-in-flight-per-identity <n>", "of those, in flight for one identity; more wait for its own (fair share)", int("--upstream-max-in-flight-per-identity"))
    .option("--authorize <url>", "ask this HTTP hook after each valid proof and at each renewal (fails closed)")
    .option("--authorize-timeout <ms>", "timeout of authorize calls", int("--authorize-timeout"))
    // ---- applications (docs/BACKEND.md): lifecycle events, server API
    .option("--no-events-stream", "with --redis: do not append lifecycle events to the Redis Stream <prefix>events")
    .option("--events-max-len <n>", "approximate length bound of the events stream (XADD MAXLEN ~)", int("--events-max-len"), EVENT_DEFAULTS.streamMaxLen)
    .option("--events-url <url>", "also POST every lifecycle event here (signed with PSIMBOLS_EVENTS_SECRET, at least once)")
    .option("--events-queue <n>", "events waiting per destination before new ones are dropped (counted in /metrics)", int("--events-queue"), EVENT_DEFAULTS.queue)
    .option("--api-listen <host:port>", "serve the server API for backends on this address (off by default; never the client port); its tokens are read from api-tokens.json beside the keys file, or from Redis with --redis and no --keys")
    .option("--log-level <level>", "error, warn, info or debug", process.env.PSIMBOLS_LOG_LEVEL ?? "info")
    .option("--kems <list>", "KEM types accepted in a hello, comma-separated (default all: X25519,P-256,X-Wing)")
    .action(async (o) => {
      const log = createLogger({ level: o.logLevel });
      const limits: Record<string, number> = {};
      if (o.handshakeTimeout !== undefined) limits.handshakeTimeoutMs = o.handshakeTimeout;
      if (o.maxConnectionsPerAddress !== undefined) limits.connectionsPerAddress = o.maxConnectionsPerAddress;
      if (o.hellosPerAddress !== undefined) limits.hellosPerAddress = o.hellosPerAddress;
      if (o.pingInterval !== undefined) limits.pingIntervalMs = o.pingInterval;
      if (o.hellosPerSecond !== undefined) limits.hellosPerSecond = o.hellosPerSecond;
      if (o.resumesPerAddress !== undefined) limits.resumesPerAddress = o.resumesPerAddress;
      if (o.resumesPerSecond !== undefined) limits.resumesPerSecond = o.resumesPerSecond;
      if (o.helloLag !== undefined) limits.helloLagMs = o.helloLag;
      if (o.resumeLag !== undefined) limits.resumeLagMs = o.resumeLag;
      if (o.fleetUnproven !== undefined) limits.fleetUnprovenPerAddress = o.fleetUnproven;
      if (o.failedFramesPerAddress !== undefined) limits.failedFramesPerAddress = o.failedFramesPerAddress;
      if (o.storeLossBound !== undefined) limits.storeLossBoundMs = o.storeLossBound * 1000;
      // Registered keys: --keys FILE; else, in a cluster, Redis; else <data-dir>/keys.json, watched even
      // while missing, so operators and blocked keys added later take effect without a restart.
      const keysFile: string | undefined = o.keys ?? (!o.redis ? join(o.dataDir, "keys.json") : undefined);
      // An explicit --keys FILE that is not there is a typo until proven otherwise for a closed service,
      // which would start and refuse everyone. (An open service watches it for operator and blocked keys.)
      if (o.keys !== undefined && !existsSync(o.keys)) {
        if (o.closed) throw new CliError(`the keys file ${o.keys} (--keys) does not exist`, `create it with \`psimbols keys add KEYFILE --file ${o.keys}\`, or check the path`);
        log.info("keys file does not exist yet: no operator or blocked keys until it is created (it is watched)", { component: "cli", keys_file: o.keys });
      }
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
        fleetRanges: o.fleetRange,
        pushWindow: { count: o.pushWindowCount, ageMs: o.pushWindowAge * 1000 },
        ...(o.node ? { node: o.node } : {}),
        ...(o.channelTypes ? { channelTypes: o.channelTypes } : {}),
        ...(o.kems !== undefined ? { kems: String(o.kems).split(",") as KemType[] } : {}),
        limits,
      });
      const serverKeyFile: string = o.serverKeyFile ?? join(config.dataDir, SERVER_KEY_FILE);
      // a missing or unusable --server-key-file is named; the data dir's key is made on first start
      if (o.serverKeyFile) await loadIdentityKey(o.serverKeyFile, "--server-key-file");
      else await loadOrCreateServerKey(config.dataDir, log);
      // the current key, and during a rollover the next one (PROTOCOL.md §5.6)
      const keySet = await loadServerKeySet(serverKeyFile);
      const serverKey = keySet.current;
      let store: Store | undefined;
      const fileRegistry = keysFile ? new FileRegistry(keysFile, { logger: log }) : undefined;
      let registry: KeyRegistry | undefined = fileRegistry;
      if (o.redis) {
        const wrapKey = wrapKeyFrom(o.wrapKeyFile);
        store = new RedisStore({ url: o.redis, wrapKey, node: config.node, logger: log });
        wrapKey.fill(0);
        if (!keysFile) {
          registry = new RedisRegistry(o.redis);
          // The data dir's keys file, the one `psimbols keys add` writes by default, is not this node's
          // registry: say so, or its operators and blocked keys would silently not count here.
          const ignored = join(o.dataDir, "keys.json");
          let held = 0;
          try {
            held = existsSync(ignored) ? readKeysFile(ignored).length : 0;
          } catch {
            held = 1; // it does not parse: still a file someone meant to be read
          }
          if (held > 0) {
            log.warn(`keys file not read: with --redis and no --keys, registered keys are read from Redis, and ${ignored} holds keys (operators and blocked keys among them do not count here)`, {
              component: "cli",
              keys_file: ignored,
              hint: "add them to Redis with `psimbols keys add KEY --redis URL` (and `--role` as they had), or start with --keys FILE",
            });
          }
        }
      } else if (o.wrapKeyFile !== undefined) {
        throw new CliError("--wrap-key-file is for --redis (a single node keeps its state in memory)", WRAP_KEY_WAYS);
      }
      if (config.closed && fileRegistry?.size === 0) {
        log.warn("closed service with no registered keys: every key will be refused until one is added", { component: "cli", keys_file: fileRegistry.path, hint: "psimbols keys add KEYFILE" });
      }
      const app = createAppCalls({
        upstreams: o.upstream,
        upstreamBatch: o.upstreamBatch,
        authorize: o.authorize,
        eventsUrl: o.eventsUrl,
        env: process.env,
        upstreamTimeoutMs: o.upstreamTimeout,
        upstreamMaxInFlight: o.upstreamMaxInFlight,
        upstreamMaxInFlightPerIdentity: o.upstreamMaxInFlightPerIdentity,
        authorizeTimeoutMs: o.authorizeTimeout,
        log,
      });
      const api = o.apiListen ? parseListen(o.apiListen) : undefined;
      const events =
        (o.redis && o.eventsStream) || o.eventsUrl
          ? new Events({
              node: config.node,
              logger: log,
              queue: o.eventsQueue,
              ...(o.redis && o.eventsStream ? { stream: { url: o.redis, maxLen: o.eventsMaxLen } } : {}),
              ...(o.eventsUrl ? { webhook: { url: o.eventsUrl, secrets: destinationSecrets(process.env, EVENTS_SECRET_ENV, "--events-url").secrets } } : {}),
            })
          : undefined;
      let broker: Broker;
      try {
        broker = await Broker.start({
          config,
          serverKey,
          ...(keySet.next ? { serverKeyNext: keySet.next } : {}),
          registry,
          logger: log,
          ...(events ? { events } : {}),
          ...(store ? { store } : {}),
          ...(o.console ? { http: consoleHook() } : {}),
          ...(app.upstream ? { upstream: app.upstream } : {}),
          ...(app.authorize ? { authorize: app.authorize } : {}),
        });
      } catch (e) {
        await store?.close().catch(() => {});
        await events?.close(0).catch(() => {});
        await (registry instanceof RedisRegistry ? registry.close() : undefined);
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EADDRINUSE") {
          throw new CliError(
            `port ${config.port} on ${config.host} is already in use`,
            `a broker (\`npm start\` or \`psimbols serve\`) or another program already listens there: use that one, stop it, or pick another port with --port N`,
          );
        }
        if (code === "EACCES" || code === "EADDRNOTAVAIL") {
          throw new CliError(`cannot listen on ${config.host}:${config.port} (${code})`, "choose another --host or a --port above 1023");
        }
        throw e;
      }
      // Before the listening line: once it is printed, the whole node is up.
      events?.register(broker.metrics);
      let apiServer: ApiServer | undefined;
      if (api) {
        if (api.port === broker.port && api.port !== 0) throw new Error("setting api-listen: the server API must not share the client port");
        // Tokens live where the keys live: beside the keys file, or in Redis for a cluster.
        const tokensAt = keysFile ? join(dirname(keysFile), "api-tokens.json") : undefined;
        const tokens = tokensAt ? new FileTokenStore(tokensAt) : new RedisTokenStore(o.redis);
        try {
          apiServer = await ApiServer.start({ broker, registry, tokens, logger: log, redis: o.redis, ...api });
        } catch (e) {
          // The node must not run half-started: stop it, then report (exit code 1).
          await Promise.all([broker.close(), events?.close(0), tokens.close()]);
          throw new Error(`setting api-listen: cannot listen on ${o.apiListen}: ${e instanceof Error ? e.message : String(e)}`);
        }
        // Where the tokens are read, so that a token made elsewhere (`api-token create` writes the default data dir's) is not a mystery 401.
        console.log(`server API listening on ${apiServer.url} (tokens: ${tokensAt ? `${tokensAt}; make one with psimbols api-token create --file ${tokensAt}` : "in Redis; make one with psimbols api-token create --redis URL"})`);
      }
      // Printed on stdout as well, so a person (or a test) can pin it.
      console.log(`psimbols listening on ws://${config.host}:${broker.port}/ fingerprint ${serverKey.public.fingerprint}`);
      console.log(`channel types: ${config.channelTypes.join(", ")} (ChaCha20-Poly1305 on ${chachaEngine()})`);
      // What the forwarding does, so that an operator can check it (docs/BACKEND.md §2; a URL carries no credentials).
      for (const text of (o.upstream as string[] | undefined) ?? []) {
        const r = parseUpstreamRoute(text);
        const batched = ((o.upstreamBatch as string[] | undefined) ?? []).includes(r.prefix === "" ? "*" : r.prefix);
        console.log(`upstream ${r.prefix === "" ? "(default route)" : r.prefix} -> ${r.url.href}${batched ? " (batches: --upstream-batch)" : ""}`);
      }
      if (o.console) {
        // With --port 0 the configured source says port 0: name the port the node got, unless --source says otherwise.
        const source = o.source ?? `ws://${config.host.includes(":") ? `[${config.host}]` : config.host}:${broker.port}/`;
        const page = new URL("console/", source.replace(/^ws/i, "http")).href;
        console.log(`web console: ${page} (operators only; --no-console turns it off)`);
      }
      if (keySet.next) console.log(`next server key ${keySet.next.key.public.fingerprint} not before ${keySet.next.notBefore}`);
      const unwatch = watchServerKeys(serverKeyFile, o.serverKeyPoll, (set) => broker.setServerKeys(set), log);
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        unwatch();
        log.info("stopping", { component: "cli", signal });
        void (async () => {
          await apiServer?.close();
          await broker.close();
          await events?.close();
        })().then(() => process.exit(0));
      };
      // One bad request must never take the node down: log what escaped, keep serving.
      process.on("unhandledRejection", (e) => log.error("unhandled rejection", { component: "cli", error: e instanceof Error ? e.stack : String(e) }));
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
    });

}
