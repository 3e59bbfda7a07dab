/**
 * Concurrent registry writers for the race tests (DESIGN.md §11: a
 * registration is changed by one writer at a time): identity moves over raw
 * sockets, fired at one instant, and a checker that the registry after a
 * round equals some serial order of the writes that succeeded.
 */
import * as assert from "uvu/assert";
import { join } from "node:path";
import { KeyType, type SigningKey, generateSigningKey, wirePublicKey } from "../../shared/crypto.js";
import { fromUtf8 } from "../../shared/encoding.js";
import { CloseCode, ErrorCode } from "../../shared/errors.js";
import { type Challenge, decodeServerFrame } from "../../shared/frames.js";
import { answerChallenge, createHello } from "../../shared/handshake.js";
import { generateKeyFile } from "../../node/key-files.js";
import type { Store } from "../../server/store/store.js";
import { runCli } from "./broker.js";
import { Raw, handshake } from "./raw.js";

/** A move handshake up to (not including) its proof: send `fire()` to race. */
export interface ArmedMove {
  readonly to: string;
  /** Sends the proof; resolves with the answer and, for a refusal, the close code. */
  fire(): Promise<MoveOutcome>;
}

export interface MoveOutcome {
  readonly to: string;
  readonly established: boolean;
  /** The error code of a refusal. */
  readonly code?: string;
  /** The close code of a refusal. */
  readonly close?: number;
  readonly raw: Raw;
}

/** Opens a socket to `url`, sends a move hello (`from` to `to`), reads the challenge and prepares the proof. */
export async function armMove(url: string, from: SigningKey, to: SigningKey): Promise<ArmedMove> {
  const raw = await Raw.open(url);
  const h = await createHello(from, { moveTo: to });
  raw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
  if (c.type !== "challenge") throw new Error(`expected a challenge, got ${c.type}`);
  const { proof } = await answerChallenge(h, c, () => {});
  return {
    to: to.public.fingerprint,
    async fire() {
      raw.send(proof);
      const answer = await raw.next(10_000);
      if (answer.type === "established") return { to: to.public.fingerprint, established: true, raw };
      const closed = await raw.closed;
      return { to: to.public.fingerprint, established: false, code: answer.error?.code, close: closed.code, raw };
    },
  };
}

/** What the race tests compare of a registration. */
export interface Reg {
  role: string;
  comment: string;
  moved_from?: string;
}

/** One registry write as it ended. */
export type Write =
  | { kind: "add"; fp: string; role: string; comment: string }
  | { kind: "remove"; fp: string; removed: boolean }
  | { kind: "move"; from: string; to: string; ok: boolean };

/**
 * Applies `w` to `state` as the registry does when it runs alone: @returns
 * false when `w`'s recorded outcome is impossible at this point.
 * A move needs `from` registered (or, in an `open` service, unregistered: then
 * it writes nothing) and not blocked, and `to` unregistered; it re-keys the
 * entry (role, comment) with `moved_from`. An add of a registered key keeps
 * its `moved_from`.
 */
function apply(state: Map<string, Reg>, w: Write, open: boolean): boolean {
  switch (w.kind) {
    case "add": {
      // a change of a registration keeps its move's record (server/registry.ts entryFor)
      const moved = state.get(w.fp)?.moved_from;
      state.set(w.fp, { role: w.role, comment: w.comment, ...(moved ? { moved_from: moved } : {}) });
      return true;
    }
    case "remove":
      if (state.has(w.fp) !== w.removed) return false;
      state.delete(w.fp);
      return true;
    case "move": {
      const old = state.get(w.from);
      // an open service moves an unregistered key too, and then writes nothing here
      if (!old) return open && !state.has(w.to);
      if (old.role === "blocked" || state.has(w.to)) return false;
      state.set(w.to, { role: old.role, comment: old.comment, moved_from: w.from });
      state.delete(w.from);
      return true;
    }
  }
}

const same = (a: Map<string, Reg>, b: Map<string, Reg>): boolean =>
  a.size === b.size && [...a].every(([fp, r]) => {
    const o = b.get(fp);
    return o !== undefined && o.role === r.role && o.comment === r.comment && o.moved_from === r.moved_from;
  });

/**
 * A serial order of the writes that took effect (refused moves left out: they
 * must change nothing) that turns `before` into `after`, with every recorded
 * outcome possible at its place; undefined when there is none.
 */
export function serialOrder(before: Map<string, Reg>, writes: Write[], after: Map<string, Reg>, open = false): Write[] | undefined {
  const effective = writes.filter((w) => w.kind !== "move" || w.ok);
  const used = new Array<boolean>(effective.length).fill(false);
  const order: Write[] = [];
  // (writes applied, state) pairs already known to lead nowhere: writes of distinct keys commute,
  // so without this a lost write among ten would be tried in every one of 10! orders
  const dead = new Set<string>();
  const search = (state: Map<string, Reg>): boolean => {
    if (order.length === effective.length) return same(state, after);
    const memo = `${used.map(Number).join("")} ${JSON.stringify([...state].sort(([a], [b]) => (a < b ? -1 : 1)))}`;
    if (dead.has(memo)) return false;
    for (let i = 0; i < effective.length; i++) {
      if (used[i]) continue;
      const next = new Map(state);
      if (!apply(next, effective[i]!, open)) continue;
      used[i] = true;
      order.push(effective[i]!);
      if (search(next)) return true;
      order.pop();
      used[i] = false;
    }
    dead.add(memo);
    return false;
  };
  return search(new Map(before)) ? order : undefined;
}

/** A seeded generator of numbers in [0, 1) (mulberry32), so a failing round can be told by its seed. */
export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates with `rand`. */
export function shuffled<T>(items: T[], rand: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** A registration as the race tests compare it. */
export function regOf(k: { role: string; comment: string; moved_from?: string }): Reg {
  return { role: k.role, comment: k.comment, ...(k.moved_from ? { moved_from: k.moved_from } : {}) };
}

/** Rounds per test (PSIMBOLS_RACE_ROUNDS, default 6) and the first seed (PSIMBOLS_RACE_SEED, default from the clock; printed in the suite name). */
export const ROUNDS = Number(process.env.PSIMBOLS_RACE_ROUNDS ?? 6);
export const SEED = Number(process.env.PSIMBOLS_RACE_SEED ?? Date.now() % 100_000);

/** Two broker nodes sharing one registry and one store, as a race round sees them. */
export interface RaceNodes {
  /** The nodes' client URLs. */
  readonly urls: readonly [string, string];
  /** A POST to node `i`'s server API (bearer token included). */
  api(i: 0 | 1, path: string, body: unknown): Promise<{ status: number; json: Record<string, any> | undefined }>;
  /** Where the CLI `keys` finds the registry: `--redis URL` or `--file PATH`. */
  readonly cliWhere: readonly string[];
  /** Registers a key (the test's own write, before a round). */
  register(key: SigningKey, role: string, comment: string): Promise<void>;
  /** The registry as stored now. */
  snapshot(): Promise<Map<string, Reg>>;
  /** The shared store, to seed kept pushes and read channels and windows. */
  readonly store: Store;
  readonly window: { count: number; ageMs: number };
  /** An open service (else closed): a move of an unregistered key is made too. */
  readonly open: boolean;
  /** Where key files go. */
  readonly dir: string;
  /** Wait after the test's own writes until every node sees them (a keys file is re-read at most once a second). */
  readonly settleMs: number;
}

/** A writer of the mixed rounds: runs its write and records how it ended. */
type Writer = (w: Write[]) => Promise<void>;

function writers(n: RaceNodes, old: SigningKey, targets: SigningKey[], pem: string): Writer[] {
  const fp = old.public.fingerprint;
  const apiAdd = (i: 0 | 1, key: SigningKey, role: string, comment: string): Writer => async (w) => {
    const r = await n.api(i, "/v1/keys", { public_key: wirePublicKey(key.public), role, comment });
    assert.is(r.status, 201, JSON.stringify(r.json));
    w.push({ kind: "add", fp: key.public.fingerprint, role, comment });
  };
  const apiRemove = (i: 0 | 1, target: string): Writer => async (w) => {
    const r = await n.api(i, "/v1/keys/remove", { fingerprint: target });
    assert.ok(r.status === 200 || r.status === 404, JSON.stringify(r.json));
    w.push({ kind: "remove", fp: target, removed: r.status === 200 });
  };
  return [
    apiAdd(0, old, "blocked", "blocked by node a"),
    apiAdd(1, old, "client", "demoted by node b"),
    apiRemove(1, fp),
    apiRemove(0, fp),
    // a target registered or blocked meanwhile: a move to it must not take it over
    apiAdd(0, targets[0]!, "client", "target taken"),
    async (w) => {
      const fp1 = targets[1]!.public.fingerprint;
      const r = await n.api(1, "/v1/keys", { fingerprint: fp1, role: "blocked", comment: "target blocked" });
      assert.is(r.status, 201, JSON.stringify(r.json));
      w.push({ kind: "add", fp: fp1, role: "blocked", comment: "target blocked" });
    },
    async () => {
      const r = await n.api(1, "/v1/revoke", { identity: fp });
      assert.is(r.status, 200, JSON.stringify(r.json));
    },
    async (w) => {
      const r = await runCli(["keys", "add", pem, "--role", "blocked", "--comment", "blocked by the CLI", ...n.cliWhere]);
      assert.is(r.code, 0, r.stderr);
      w.push({ kind: "add", fp, role: "blocked", comment: "blocked by the CLI" });
    },
    async (w) => {
      const r = await runCli(["keys", "remove", fp, ...n.cliWhere]);
      w.push({ kind: "remove", fp, removed: r.code === 0 });
    },
  ];
}

/** Movers per node in a move round. */
export const MOVERS_PER_NODE = 3;

/**
 * One round of moves: a fresh operator key with kept pushes and a live
 * channel, moved to a fresh key by {@link MOVERS_PER_NODE} sockets on each
 * node at one instant (with `registered` false, a key the open service does
 * not know: the moves carry only its kept pushes); in a `mixed` round, four
 * of the other writers (keys add, remove, block, a taken or blocked target, a
 * revocation; API on both nodes, CLI)
 * race them. Checks every invariant of the round (DESIGN.md §11, PROTOCOL.md
 * §5.7). @returns whether a move won.
 */
export async function moveRound(n: RaceNodes, seed: number, mixed: boolean, registered = true): Promise<boolean> {
  const pem = join(n.dir, `old-${seed}.pem`);
  const old = await generateKeyFile(KeyType.ed25519, pem);
  const fp = old.public.fingerprint;
  const targets = await Promise.all(Array.from({ length: 2 * MOVERS_PER_NODE }, () => generateSigningKey()));
  if (registered) await n.register(old, "operator", `round ${seed}`);
  for (const m of ["p1", "p2", "p3"]) await n.store.push(fp, JSON.stringify(m), n.window);
  await new Promise((r) => setTimeout(r, n.settleMs));
  const standing = await Raw.open(n.urls[0]);
  await handshake(standing, old);
  const before = await n.snapshot();

  const armed = await Promise.all(targets.map((to, i) => armMove(n.urls[i % 2]!, old, to)));
  const rand = seeded(seed);
  const others = mixed ? shuffled(writers(n, old, targets, pem), rand).slice(0, 4) : [];
  const writes: Write[] = [];
  // the proofs at one instant (in a mixed round after a seeded 0 to 50 ms), in a seeded order; the
  // other writers each after a seeded 0 to 50 ms, so that some rounds see the moves land first and
  // others the writes they race
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const movesAfter = mixed ? Math.floor(rand() * 50) : 0;
  const fire = (a: ArmedMove) => async () => {
    if (movesAfter > 0) await sleep(movesAfter);
    return a.fire();
  };
  const later = (o: Writer) => async () => {
    await sleep(Math.floor(rand() * 50));
    await o(writes);
  };
  const racers: (() => Promise<unknown>)[] = shuffled([...armed.map(fire), ...others.map(later)], rand);
  const results = await Promise.all(racers.map((f) => f()));
  const moves = results.filter((r): r is MoveOutcome => typeof r === "object" && r !== null && "established" in r);
  for (const m of moves) writes.push({ kind: "move", from: fp, to: m.to, ok: m.established });
  const after = await n.snapshot();
  const context = `seed ${seed}, writes ${JSON.stringify(writes.map((w) => ({ ...w, fp: undefined, from: undefined })))}`;

  assert.ok(serialOrder(before, writes, after, n.open), `the registry is no serial order of the writes (${context})`);
  const winners = moves.filter((m) => m.established);
  assert.ok(winners.length <= 1, `${winners.length} moves of one key won (${context})`);
  if (!mixed) assert.is(winners.length, 1, `no move won (${context})`);
  for (const m of moves) {
    if (m.established) continue;
    assert.equal([m.code, m.close], [ErrorCode.forbidden, CloseCode.forbidden.code], `a losing move (${context})`);
    // a loser changed nothing: no channel, no pushes for its key (its registration is checked by the serial order)
    assert.is(await n.store.activeChannel(m.to), undefined, `a losing move's key holds a channel (${context})`);
    assert.is(await n.store.lastPush(m.to), 0, `a losing move's key got pushes (${context})`);
  }
  const winner = winners[0];
  if (winner) {
    // the registration went to the winner (unless a later `keys add` of that key replaced it: the serial order covers that)
    if (registered && !writes.some((w) => w.kind === "add" && w.fp === winner.to)) assert.is(after.get(winner.to)?.moved_from, fp, `the winner holds the moved registration (${context})`);
    assert.ok(await n.store.activeChannel(winner.to), "the winner holds a channel");
    const kept = await n.store.pushesSince(winner.to, 0);
    assert.ok(kept !== "gap");
    assert.equal(kept.map((k) => JSON.parse(k.data)), ["p1", "p2", "p3"], "the kept pushes went to the winner");
    assert.is(await n.store.activeChannel(fp), undefined, "the old key's channel ended with the move");
    assert.is((await standing.closed).code, CloseCode.revoked.code);
  }
  for (const m of moves) m.raw.close();
  standing.close();
  return winner !== undefined;
}

/**
 * One round of adds and removes only: `perNode` fresh keys added through each
 * node's API and two through the CLI, all at once, then all removed at once
 * the same way (each key by another writer than the one that added it). Every
 * acknowledged write must show: the registry is the serial order (no write
 * lost to another's read-modify-write).
 */
export async function addRemoveRound(n: RaceNodes, seed: number, perNode = 4): Promise<void> {
  const rand = seeded(seed);
  const keys = await Promise.all(Array.from({ length: 2 * perNode + 2 }, (_, i) => generateKeyFile(KeyType.ed25519, join(n.dir, `k-${seed}-${i}.pem`))));
  const via = (i: number): "cli" | 0 | 1 => (i >= 2 * perNode ? "cli" : ((i % 2) as 0 | 1));
  const before = await n.snapshot();
  const writes: Write[] = [];
  const add = async (key: SigningKey, i: number) => {
    const comment = `seed ${seed} key ${i}`;
    const w = via(i);
    if (w === "cli") {
      const r = await runCli(["keys", "add", join(n.dir, `k-${seed}-${i}.pem`), "--comment", comment, ...n.cliWhere]);
      assert.is(r.code, 0, r.stderr);
    } else {
      const r = await n.api(w, "/v1/keys", { public_key: wirePublicKey(key.public), comment });
      assert.is(r.status, 201, JSON.stringify(r.json));
    }
    writes.push({ kind: "add", fp: key.public.fingerprint, role: "client", comment });
  };
  await Promise.all(shuffled(keys.map((k, i) => () => add(k, i)), rand).map((f) => f()));
  const added = await n.snapshot();
  assert.ok(serialOrder(before, writes, added), `adds lost (seed ${seed}): ${keys.filter((k) => !added.has(k.public.fingerprint)).length} of ${keys.length} acknowledged keys missing`);
  const removes: Write[] = [];
  const remove = async (key: SigningKey, i: number) => {
    const fp = key.public.fingerprint;
    const w = via((i + 1) % keys.length);
    let removed: boolean;
    if (w === "cli") removed = (await runCli(["keys", "remove", fp, ...n.cliWhere])).code === 0;
    else {
      const r = await n.api(w, "/v1/keys/remove", { fingerprint: fp });
      assert.ok(r.status === 200 || r.status === 404, JSON.stringify(r.json));
      removed = r.status === 200;
    }
    removes.push({ kind: "remove", fp, removed });
  };
  await Promise.all(shuffled(keys.map((k, i) => () => remove(k, i)), rand).map((f) => f()));
  const after = await n.snapshot();
  assert.ok(serialOrder(added, removes, after), `removes lost (seed ${seed}): ${keys.filter((k) => after.has(k.public.fingerprint)).length} of ${keys.length} removed keys still registered`);
  assert.ok(removes.every((w) => w.kind === "remove" && w.removed), `a remove found its key missing (seed ${seed})`);
}
