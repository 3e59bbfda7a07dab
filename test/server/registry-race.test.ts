/**
 * Registry writes are atomic (DESIGN.md §11, PROTOCOL.md §5.7), on Redis: two
 * nodes (two Broker instances, each with its own RedisStore, RedisRegistry and
 * server API) on one real redis-server, a closed service. Each round fires, at
 * one instant, identity moves of one registered operator key from both nodes
 * and, in the mixed rounds, the other writers of the registry: `keys add`
 * (a role change, a block), `keys remove` and a revocation through both nodes'
 * server API, and the CLI `keys` against the same Redis. After each round: the
 * registry equals some serial order of the writes that took effect; at most
 * one move won (exactly one when nothing else wrote); every loser was refused
 * `forbidden` (close 4008) and changed nothing; the role, comment and kept
 * pushes went to the winner only. (The keys-file twin: registry-race-file.test.ts.)
 */
import { suite } from "uvu";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { generateSigningKey } from "../../shared/crypto.js";
import { Broker } from "../../server/broker.js";
import { RedisRegistry, type Role } from "../../server/registry.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { createLogger } from "../../server/log.js";
import { ApiServer } from "../../server/api/server.js";
import { ALL_SCOPES, FileTokenStore, newToken } from "../../server/api/tokens.js";
import { tempDir } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";
import { type RaceNodes, ROUNDS, SEED, addRemoveRound, moveRound, regOf } from "../helpers/registry-race.js";
import { call } from "../helpers/api.js";

const t = suite(`registry races on two nodes sharing one Redis (seed ${SEED}, ${ROUNDS} rounds)`);
const log = createLogger({ level: "error" });
let redis: TestRedis;
const nodes: { broker: Broker; api: ApiServer; registry: RedisRegistry; store: RedisStore }[] = [];
/** The test's own view of the shared state. */
let registry: RedisRegistry;
let openRegistry: RedisRegistry;
let race: RaceNodes;
/** The same on two nodes of an open service (their own key prefix in the same Redis). */
let openRace: RaceNodes;

t.before(async () => {
  redis = await startRedis();
  const dir = tempDir();
  const wrapKey = randomBytes(32);
  const window = { count: 100, ageMs: 3600_000 };
  const serverKey = await generateSigningKey();
  const tokens = new FileTokenStore(join(dir, "api-tokens.json"));
  const { token, entry } = newToken("race test", ALL_SCOPES); // the race writes operator keys too
  await tokens.add(entry);
  for (const [node, prefix, closed] of [["a", "psimbols:", true], ["b", "psimbols:", true], ["open-a", "open:", false], ["open-b", "open:", false]] as const) {
    const store = new RedisStore({ url: redis.url, wrapKey, node, prefix });
    const nodeRegistry = new RedisRegistry(redis.url, prefix);
    const config = { port: 0, node, closed, pushWindow: window, limits: { hellosPerAddress: 100_000 } };
    const broker = await Broker.start({ config, serverKey, store, registry: nodeRegistry, logger: log });
    const api = await ApiServer.start({ broker, registry: nodeRegistry, tokens, host: "127.0.0.1", port: 0, logger: log, failuresPerAddress: 1000 });
    nodes.push({ broker, api, registry: nodeRegistry, store });
  }
  registry = new RedisRegistry(redis.url);
  openRegistry = new RedisRegistry(redis.url, "open:");
  const pair = (i: 0 | 2, reg: RedisRegistry, prefix: string, open: boolean): RaceNodes => ({
    urls: [`ws://127.0.0.1:${nodes[i]!.broker.port}/`, `ws://127.0.0.1:${nodes[i + 1]!.broker.port}/`],
    api: (j, path, body) => call(nodes[i + j]!.api.url, "POST", path, { token, body }),
    // the CLI knows one prefix, the default: it writes only in the closed pair's rounds
    cliWhere: ["--redis", redis.url],
    register: async (key, role, comment) => void (await reg.add(key.public, { role: role as Role, comment })),
    snapshot: async () => new Map((await reg.list()).map((k) => [k.fingerprint, regOf(k)])),
    store: new RedisStore({ url: redis.url, wrapKey, node: "test", prefix }),
    window,
    open,
    dir,
    settleMs: 0,
  });
  race = pair(0, registry, "psimbols:", false);
  openRace = pair(2, openRegistry, "open:", true);
});
t.after(async () => {
  for (const n of nodes) {
    await n.api.close();
    await n.broker.close();
    await n.registry.close();
  }
  await registry?.close();
  await openRegistry?.close();
  await race?.store.close();
  await openRace?.store.close();
  await redis?.stop();
});

t("concurrent moves of one registered operator key from two nodes: exactly one wins, every loser is refused forbidden and changes nothing", async () => {
  for (let r = 0; r < ROUNDS; r++) await moveRound(race, SEED + r, false);
});

t("moves racing keys add (role change, block), keys remove, a taken target and a revocation, through both nodes' API and the CLI: the registry is a serial order of the writes", async () => {
  let won = 0;
  for (let r = 0; r < ROUNDS; r++) won += Number(await moveRound(race, SEED + 1000 + r, true));
  console.log(`  mixed rounds: ${won} of ${ROUNDS} with a winning move, the others with every move refused`);
});

t("concurrent moves of a key an open service does not know, from two nodes: exactly one wins, the kept pushes go to it only, every loser is refused forbidden", async () => {
  for (let r = 0; r < ROUNDS; r++) await moveRound(openRace, SEED + 3000 + r, false, false);
});

t("concurrent keys add and keys remove of distinct keys through both nodes' API and the CLI: no acknowledged write is lost", async () => {
  for (let r = 0; r < Math.ceil(ROUNDS / 2); r++) await addRemoveRound(race, SEED + 2000 + r);
});

t.run();
