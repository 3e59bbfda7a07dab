/**
 * Concurrent registry writers for the race tests (DESIGN.md §11: a
 * registration is changed by one writer at a time): identity moves over raw
 * sockets, fired at one instant, and a checker that the registry after a
 * round equals some serial order of the writes that succeeded.
 */
import { type SigningKey } from "../../shared/crypto.js";
import { fromUtf8 } from "../../shared/encoding.js";
import { type Challenge, decodeServerFrame } from "../../shared/frames.js";
import { answerChallenge, createHello } from "../../shared/handshake.js";
import { Raw } from "./raw.js";

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
 * A move (closed service) needs `from` registered and not blocked and `to`
 * unregistered; it re-keys the entry (role, comment) with `moved_from`.
 */
function apply(state: Map<string, Reg>, w: Write): boolean {
  switch (w.kind) {
    case "add":
      state.set(w.fp, { role: w.role, comment: w.comment });
      return true;
    case "remove":
      if (state.has(w.fp) !== w.removed) return false;
      state.delete(w.fp);
      return true;
    case "move": {
      const old = state.get(w.from);
      if (!old || old.role === "blocked" || state.has(w.to)) return false;
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
export function serialOrder(before: Map<string, Reg>, writes: Write[], after: Map<string, Reg>): Write[] | undefined {
  const effective = writes.filter((w) => w.kind !== "move" || w.ok);
  const used = new Array<boolean>(effective.length).fill(false);
  const order: Write[] = [];
  const search = (state: Map<string, Reg>): boolean => {
    if (order.length === effective.length) return same(state, after);
    for (let i = 0; i < effective.length; i++) {
      if (used[i]) continue;
      const next = new Map(state);
      if (!apply(next, effective[i]!)) continue;
      used[i] = true;
      order.push(effective[i]!);
      if (search(next)) return true;
      order.pop();
      used[i] = false;
    }
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
