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
 * pushes went to the winner only.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { generateSigningKey, type SigningKey, wirePublicKey } from "../../shared/crypto.js";
import { CloseCode, ErrorCode } from "../../shared/errors.js";
import { Broker } from "../../server/broker.js";
import { RedisRegistry, Role } from "../../server/registry.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { createLogger } from "../../server/log.js";
import { ApiServer } from "../../server/api/server.js";
import { FileTokenStore, newToken } from "../../server/api/tokens.js";
import { KeyType } from "../../shared/crypto.js";
import { generateKeyFile } from "../../node/key-files.js";
import { runCli, tempDir } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";
import { Raw, handshake } from "../helpers/raw.js";
import { type MoveOutcome, type Reg, type Write, armMove, seeded, serialOrder, shuffled } from "../helpers/registry-race.js";
import { call } from "../helpers/api.js";

const ROUNDS = Number(process.env.PSIMBOLS_RACE_ROUNDS ?? 6);
const MOVERS_PER_NODE = 3;
const SEED = Number(process.env.PSIMBOLS_RACE_SEED ?? Date.now() % 100_000);

const t = suite(`registry races on two nodes sharing one Redis (seed ${SEED}, ${ROUNDS} rounds)`);
const log = createLogger({ level: "error" });
let redis: TestRedis;
let token: string;
const dir = tempDir();
interface Node {
  broker: Broker;
  api: ApiServer;
  registry: RedisRegistry;
  store: RedisStore;
}
const nodes: Node[] = [];
/** The test's own view of the shared state. */
let registry: RedisRegistry;
let store: RedisStore;
const wrapKey = randomBytes(32);
const window = { count: 100, ageMs: 3600_000 };

t.before(async () => {
  redis = await startRedis();
  const serverKey = await generateSigningKey();
  const tokens = new FileTokenStore(join(dir, "api-tokens.json"));
  const made = newToken("race test");
  await tokens.add(made.entry);
  token = made.token;
  for (const node of ["a", "b"]) {
    const nodeStore = new RedisStore({ url: redis.url, wrapKey, node });
    const nodeRegistry = new RedisRegistry(redis.url);
    const config = { port: 0, node, closed: true, pushWindow: window, limits: { hellosPerAddress: 100_000 } };
    const broker = await Broker.start({ config, serverKey, store: nodeStore, registry: nodeRegistry, logger: log });
    const api = await ApiServer.start({ broker, registry: nodeRegistry, tokens, host: "127.0.0.1", port: 0, logger: log, failuresPerAddress: 1000 });
    nodes.push({ broker, api, registry: nodeRegistry, store: nodeStore });
  }
  registry = new RedisRegistry(redis.url);
  store = new RedisStore({ url: redis.url, wrapKey, node: "test" });
});
t.after(async () => {
  for (const n of nodes) {
    await n.api.close();
    await n.broker.close();
    await n.registry.close();
  }
  await registry?.close();
  await store?.close();
  await redis?.stop();
});

const url = (n: Node) => `ws://127.0.0.1:${n.broker.port}/`;
const api = (n: Node, path: string, body: unknown) => call(n.api.url, "POST", path, { token, body });

async function snapshot(): Promise<Map<string, Reg>> {
  const m = new Map<string, Reg>();
  for (const k of await registry.list()) m.set(k.fingerprint, { role: k.role, comment: k.comment, ...(k.moved_from ? { moved_from: k.moved_from } : {}) });
  return m;
}

/** A writer of the mixed rounds: runs its write and records how it ended. */
type Writer = (w: Write[]) => Promise<void>;

function writers(old: SigningKey, targets: SigningKey[], pem: string): Writer[] {
  const fp = old.public.fingerprint;
  const [na, nb] = [nodes[0]!, nodes[1]!];
  const apiAdd = (n: Node, key: SigningKey, role: string, comment: string): Writer => async (w) => {
    const r = await api(n, "/v1/keys", { public_key: wirePublicKey(key.public), role, comment });
    assert.is(r.status, 201, JSON.stringify(r.json));
    w.push({ kind: "add", fp: key.public.fingerprint, role, comment });
  };
  const apiRemove = (n: Node, target: string): Writer => async (w) => {
    const r = await api(n, "/v1/keys/remove", { fingerprint: target });
    assert.ok(r.status === 200 || r.status === 404, JSON.stringify(r.json));
    w.push({ kind: "remove", fp: target, removed: r.status === 200 });
  };
  return [
    apiAdd(na, old, Role.blocked, "blocked by node a"),
    apiAdd(nb, old, Role.client, "demoted by node b"),
    apiRemove(nb, fp),
    apiRemove(na, fp),
    // a target registered meanwhile: a move to it must not take it over
    apiAdd(na, targets[0]!, Role.client, "target taken"),
    async () => {
      const r = await api(nb, "/v1/revoke", { identity: fp });
      assert.is(r.status, 200, JSON.stringify(r.json));
    },
    async (w) => {
      const r = await runCli(["keys", "add", pem, "--role", "blocked", "--comment", "blocked by the CLI", "--redis", redis.url]);
      assert.is(r.code, 0, r.stderr);
      w.push({ kind: "add", fp, role: Role.blocked, comment: "blocked by the CLI" });
    },
    async (w) => {
      const r = await runCli(["keys", "remove", fp, "--redis", redis.url]);
      w.push({ kind: "remove", fp, removed: r.code === 0 });
    },
  ];
}

/**
 * One round: a fresh operator key with kept pushes and a live channel, moved
 * by MOVERS_PER_NODE sockets on each node at once, with `others` racing them.
 * Checks every invariant of the round.
 */
async function round(seed: number, mixed: boolean): Promise<boolean> {
  const pem = join(dir, `old-${seed}.pem`);
  const old = await generateKeyFile(KeyType.ed25519, pem);
  const fp = old.public.fingerprint;
  const targets = await Promise.all(Array.from({ length: 2 * MOVERS_PER_NODE }, () => generateSigningKey()));
  await registry.add(old.public, { role: Role.operator, comment: `round ${seed}` });
  for (const m of ["p1", "p2", "p3"]) await store.push(fp, JSON.stringify(m), window);
  const standing = await Raw.open(url(nodes[0]!));
  await handshake(standing, old);
  const before = await snapshot();

  const armed = await Promise.all(targets.map((to, i) => armMove(url(nodes[i % 2]!), old, to)));
  const rand = seeded(seed);
  const others = mixed ? shuffled(writers(old, targets, pem), rand).slice(0, 4) : [];
  const writes: Write[] = [];
  // the proofs at one instant, in a seeded order; the other writers each after a seeded 0 to 30 ms,
  // so that some rounds see the moves land first and others the writes they race
  const later = (o: Writer) => async () => {
    await new Promise((r) => setTimeout(r, Math.floor(rand() * 30)));
    await o(writes);
  };
  const racers: (() => Promise<unknown>)[] = shuffled([...armed.map((a) => () => a.fire()), ...others.map(later)], rand);
  const results = await Promise.all(racers.map((f) => f()));
  const moves = results.filter((r): r is MoveOutcome => typeof r === "object" && r !== null && "established" in r);
  for (const m of moves) writes.push({ kind: "move", from: fp, to: m.to, ok: m.established });
  const after = await snapshot();
  const context = `seed ${seed}, writes ${JSON.stringify(writes.map((w) => ({ ...w, fp: undefined, from: undefined })))}`;

  const order = serialOrder(before, writes, after);
  assert.ok(order, `the registry is no serial order of the writes (${context})`);
  const winners = moves.filter((m) => m.established);
  assert.ok(winners.length <= 1, `${winners.length} moves of one key won (${context})`);
  if (!mixed) assert.is(winners.length, 1, `no move won (${context})`);
  for (const m of moves) {
    if (m.established) continue;
    assert.equal([m.code, m.close], [ErrorCode.forbidden, CloseCode.forbidden.code], `a losing move (${context})`);
    // a loser changed nothing: no channel, no pushes for its key (its registration is checked by the serial order)
    assert.is(await store.activeChannel(m.to), undefined, `a losing move's key holds a channel (${context})`);
    assert.is(await store.lastPush(m.to), 0, `a losing move's key got pushes (${context})`);
  }
  const winner = winners[0];
  if (winner) {
    // the registration went to the winner (unless a later `keys add` of that key replaced it: the serial order covers that)
    if (!writes.some((w) => w.kind === "add" && w.fp === winner.to)) assert.is(after.get(winner.to)?.moved_from, fp, `the winner holds the moved registration (${context})`);
    assert.ok(await store.activeChannel(winner.to), "the winner holds a channel");
    const kept = await store.pushesSince(winner.to, 0);
    assert.ok(kept !== "gap");
    assert.equal(kept.map((k) => JSON.parse(k.data)), ["p1", "p2", "p3"], "the kept pushes went to the winner");
    assert.is(await store.activeChannel(fp), undefined, "the old key's channel ended with the move");
    assert.is((await standing.closed).code, CloseCode.revoked.code);
  }
  for (const m of moves) m.raw.close();
  standing.close();
  return winner !== undefined;
}

t("concurrent moves of one registered operator key from two nodes: exactly one wins, every loser is refused forbidden and changes nothing", async () => {
  for (let r = 0; r < ROUNDS; r++) await round(SEED + r, false);
});

t("moves racing keys add (role change, block), keys remove, a taken target and a revocation, through both nodes' API and the CLI: the registry is a serial order of the writes", async () => {
  let won = 0;
  for (let r = 0; r < ROUNDS; r++) won += Number(await round(SEED + 1000 + r, true));
  console.log(`  mixed rounds: ${won} of ${ROUNDS} with a winning move, the others with every move refused`);
});

t.run();
