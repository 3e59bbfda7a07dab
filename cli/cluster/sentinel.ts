/**
 * Redis with Sentinel from local processes, for `npm run cluster --
 * --sentinel` and the failover test: a master, one replica and three
 * sentinels (`redis-server <conf> --sentinel`), every one on a free port of
 * 127.0.0.1, nothing kept on disk. The sentinels run deploy/sentinel.conf —
 * the file docker-compose.sentinel.yml uses — copied with its `port` and
 * `sentinel monitor` lines pointed at the local master.
 */
import type { ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { answersPing, freePort } from "./net.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** The one Sentinel config, shared with docker-compose.sentinel.yml. */
export const SENTINEL_CONFIG = join(ROOT, "deploy", "sentinel.conf");
/**
 * Starts a Redis server of the Sentinel setup as the sentinels say (a
 * replica of the master they name; never a second, empty master): what
 * docker-compose.sentinel.yml runs, and the soak with faults restarts with.
 */
export const REDIS_START = join(ROOT, "deploy", "redis-start.sh");
/** The master's name in deploy/sentinel.conf. */
export const SENTINEL_MASTER_NAME = "psimbols";

const READY_MS = 20_000;

/** What {@link startSentinelSet} needs of the launcher: start a named process. */
export interface Launched {
  readonly name: string;
  readonly proc: ChildProcess;
  output(): string;
  alive(): boolean;
  kill(signal?: NodeJS.Signals): Promise<void>;
}
export type Launch = (name: string, command: string, args: string[]) => Launched;

/** A running master + replica + three sentinels. */
export interface SentinelSet {
  /** `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/psimbols`: what nodes get as --redis. */
  readonly url: string;
  readonly master: Launched & { readonly port: number };
  readonly replica: Launched & { readonly port: number };
  readonly sentinels: (Launched & { readonly port: number })[];
  /** Every process, store first. */
  readonly processes: Launched[];
  /** The master's port as the first sentinel that answers sees it now. */
  masterPort(): Promise<number | undefined>;
}

/**
 * deploy/sentinel.conf for a local sentinel: its `port` line set to `port`,
 * its `sentinel monitor` line pointed at 127.0.0.1:`masterPort`; every other
 * line as shipped.
 * @throws Error when the shipped file lacks either line.
 */
export function sentinelConfigFor(port: number, masterPort: number, dir: string, source = readFileSync(SENTINEL_CONFIG, "utf8")): string {
  const portLine = /^port \d+$/m;
  const monitor = new RegExp(`^sentinel monitor ${SENTINEL_MASTER_NAME} \\S+ \\d+ (\\d+)$`, "m");
  if (!portLine.test(source) || !monitor.test(source)) throw new Error(`${SENTINEL_CONFIG} has no "port N" or "sentinel monitor ${SENTINEL_MASTER_NAME} HOST PORT QUORUM" line`);
  return (
    source.replace(portLine, `port ${port}\nbind 127.0.0.1\ndir ${dir}`).replace(monitor, (_, quorum: string) => `sentinel monitor ${SENTINEL_MASTER_NAME} 127.0.0.1 ${masterPort} ${quorum}`)
  );
}

/**
 * Starts the master, its replica and three sentinels; resolves once the
 * replica is in sync and every sentinel knows the replica and the two
 * other sentinels (so a failover can be agreed on at once).
 * @throws Error with the failing process's output. The caller stops what `started` received.
 */
export async function startSentinelSet(redisBin: string, dir: string, launch: Launch, started: Launched[]): Promise<SentinelSet> {
  const common = ["--bind", "127.0.0.1", "--loglevel", "warning", "--protected-mode", "yes", "--save", "", "--appendonly", "no"];
  const server = async (name: string, extra: string[]) => {
    const port = await freePort();
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    const p = launch(name, redisBin, ["--port", String(port), ...common, "--dir", d, ...extra]);
    started.push(p);
    for (const deadline = Date.now() + 5000; !(await answersPing(port)); await sleep(25)) {
      if (!p.alive() || Date.now() > deadline) throw new Error(`${name} on port ${port} did not start:\n${p.output()}`);
    }
    return Object.assign(p, { port });
  };
  const master = await server("redis-master", []);
  const replica = await server("redis-replica", ["--replicaof", "127.0.0.1", String(master.port)]);

  const sentinels: (Launched & { port: number })[] = [];
  for (let i = 1; i <= 3; i++) {
    const name = `sentinel${i}`;
    const port = await freePort();
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    const conf = join(d, "sentinel.conf");
    writeFileSync(conf, sentinelConfigFor(port, master.port, d));
    const p = launch(name, redisBin, [conf, "--sentinel", "--loglevel", "warning"]);
    started.push(p);
    sentinels.push(Object.assign(p, { port }));
  }

  // Ready: the replica streams from the master, and each sentinel sees the replica and both peers.
  const deadline = Date.now() + READY_MS;
  const clients = [replica.port, ...sentinels.map((s) => s.port)].map((port) => new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 }));
  try {
    for (;;) {
      const ok = await (async () => {
        const info = String(await clients[0]!.info("replication"));
        if (!/master_link_status:up/.test(info)) return false;
        for (const c of clients.slice(1)) {
          const replicas = (await c.call("SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME)) as unknown[];
          const peers = (await c.call("SENTINEL", "SENTINELS", SENTINEL_MASTER_NAME)) as unknown[];
          if (replicas.length < 1 || peers.length < 2) return false;
        }
        return true;
      })().catch(() => false);
      if (ok) break;
      for (const p of [master, replica, ...sentinels]) if (!p.alive()) throw new Error(`${p.name} exited:\n${p.output()}`);
      if (Date.now() > deadline) throw new Error(`the sentinels did not see the replica and each other in ${READY_MS / 1000} s:\n${sentinels.map((s) => `${s.name}: ${s.output()}`).join("\n")}`);
      await sleep(200);
    }
  } finally {
    for (const c of clients) c.disconnect();
  }

  const url = `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(",")}/${SENTINEL_MASTER_NAME}`;
  return {
    url,
    master,
    replica,
    sentinels,
    processes: [master, replica, ...sentinels],
    async masterPort() {
      for (const s of sentinels) {
        if (!s.alive()) continue;
        const c = new Redis({ host: "127.0.0.1", port: s.port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, commandTimeout: 1000 });
        try {
          const r = (await c.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME)) as [string, string] | null;
          if (r) return Number(r[1]);
        } catch {
          // next sentinel
        } finally {
          c.disconnect();
        }
      }
      return undefined;
    },
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
