/**
 * Registry writes are atomic (DESIGN.md §11, PROTOCOL.md §5.7) on a keys
 * file: two broker processes (`psimbols serve --closed --keys FILE`, the store
 * in one real Redis) share one keys file with their server API and the CLI
 * `keys`, each a writer in its own process. The same rounds as on Redis
 * (registry-race.test.ts): concurrent moves from both nodes, moves racing
 * keys add/remove, blocks, a taken target and a revocation, and concurrent
 * adds and removes of distinct keys, each checked against a serial order.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { generateSigningKey } from "../../shared/crypto.js";
import { type Role, addKey, readKeysFile } from "../../server/registry.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { parseWrapKey } from "../../server/store/wrap.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";
import { type RaceNodes, ROUNDS, SEED, addRemoveRound, moveRound, regOf } from "../helpers/registry-race.js";
import { call } from "../helpers/api.js";

const t = suite(`registry races on two broker processes sharing one keys file (seed ${SEED}, ${ROUNDS} rounds)`);
let redis: TestRedis;
const brokers: RunningBroker[] = [];
let race: RaceNodes;
const dir = tempDir();
const keysFile = join(dir, "keys.json");

t.before(async () => {
  redis = await startRedis();
  const wrapKey = randomBytes(32).toString("base64url");
  const created = await runCli(["api-token", "create", "--file", join(dir, "api-tokens.json"), "--comment", "race test", "--scope", "all"]);
  assert.is(created.code, 0, created.stderr);
  const token = created.stdout.trim();
  const window = { count: 100, ageMs: 3600_000 };
  // a closed service needs its keys file; this bystander must outlive every round
  await addKey(keysFile, (await generateSigningKey()).public, { comment: "bystander" });
  const args = ["--closed", "--keys", keysFile, "--redis", redis.url, "--api-listen", "127.0.0.1:0", "--hellos-per-address", "100000", "--push-window-count", String(window.count)];
  // both nodes share one server key (the first makes it in the shared data dir)
  for (const node of ["a", "b"]) brokers.push(await startBroker([...args, "--node", node], { dataDir: dir, env: { PSIMBOLS_WRAP_KEY: wrapKey } }));
  const apiUrl = (b: RunningBroker) => {
    const m = b.output().match(/server API listening on (http:\/\/\S+)/);
    if (!m) throw new Error(`no server API line in:\n${b.output()}`);
    return m[1]!;
  };
  const apis = brokers.map(apiUrl);
  race = {
    urls: [brokers[0]!.url, brokers[1]!.url],
    api: (i, path, body) => call(apis[i]!, "POST", path, { token, body }),
    cliWhere: ["--file", keysFile],
    register: async (key, role, comment) => void (await addKey(keysFile, key.public, { role: role as Role, comment })),
    snapshot: async () => new Map(readKeysFile(keysFile).map((k) => [k.fingerprint, regOf(k)])),
    store: new RedisStore({ url: redis.url, wrapKey: parseWrapKey(wrapKey), node: "test" }),
    window: { count: window.count, ageMs: 600_000 },
    open: false,
    dir,
    // a node re-reads the keys file at most once a second
    settleMs: 1100,
  };
});
t.after(async () => {
  await Promise.all(brokers.map((b) => b.stop()));
  await race?.store.close();
  await redis?.stop();
});

t("concurrent moves of one registered operator key from two processes: exactly one wins, every loser is refused forbidden and changes nothing", async () => {
  for (let r = 0; r < ROUNDS; r++) await moveRound(race, SEED + r, false);
});

t("moves racing keys add (role change, block), keys remove, a taken target and a revocation, through both processes' API and the CLI: the file is a serial order of the writes", async () => {
  let won = 0;
  for (let r = 0; r < ROUNDS; r++) won += Number(await moveRound(race, SEED + 1000 + r, true));
  console.log(`  mixed rounds: ${won} of ${ROUNDS} with a winning move, the others with every move refused`);
});

t("concurrent keys add and keys remove of distinct keys through both processes' API and the CLI: no acknowledged write is lost, no lock or temporary file is left", async () => {
  for (let r = 0; r < Math.ceil(ROUNDS / 2); r++) await addRemoveRound(race, SEED + 2000 + r);
  assert.equal(readdirSync(dir).filter((f) => f.startsWith("keys.json.")), []);
});

t.run();
