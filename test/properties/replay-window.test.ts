/**
 * The replay window of a binding (server/connection.ts, PROTOCOL.md §6.4), as
 * a model-based property against a broker: for any sequence of request frames
 * (fresh, replayed, reordered, forged, sealed under another binding or
 * another channel, any seq), the server acts on a frame exactly when its seq
 * is above every seq it accepted on this binding and it authenticates; every
 * other frame gets `unauthorised` for its seq and changes nothing.
 *
 * Model: the highest accepted seq. Runs against an in-process broker (the
 * same Connection class `psimbols serve` runs) for speed; test/hostile covers
 * the real process.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { generateSigningKey, randomBytes } from "../../shared/crypto.js";
import { b64u } from "../../shared/encoding.js";
import { ErrorCode } from "../../shared/errors.js";
import { MAX_SEQ } from "../../shared/frames.js";
import type { Broker } from "../../server/index.js";
import { type Frame, Raw, type RawChannel, handshake, readResponse, requestFrame, resume } from "../helpers/raw.js";
import { inProcessBroker, params } from "./support.js";

interface Model {
  last: number;
}
interface Real {
  raw: Raw;
  ch: RawChannel;
  /** Every frame sealed on this binding so far (for replays). */
  sent: Frame[];
  /** A binding of another channel on another socket: its frames are foreign here. */
  foreign: RawChannel;
  /** The channel's previous binding (before a resume): its frames are stale here. */
  stale: Frame[];
  tag: number;
}

/** Sends `f` and checks the one answer against `accept`. */
async function expectAnswer(r: Real, f: Frame, accept: boolean): Promise<void> {
  r.raw.send(f);
  if (accept) {
    const got = await readResponse(r.raw, r.ch);
    assert.equal(got, { data: f.__tag }, `seq ${f.seq} should have been accepted`);
  } else {
    const e = await r.raw.next();
    assert.is(e.type, "error", `seq ${f.seq} should have been refused, got ${e.type}`);
    assert.is(e.error.code, ErrorCode.unauthorised);
    assert.is(e.seq, f.seq);
  }
}

/** A fresh request sealed with the binding's keys at `seq`. */
class Fresh implements fc.AsyncCommand<Model, Real> {
  readonly seq: number;
  constructor(seq: number) {
    this.seq = seq;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const tag = ++r.tag;
    const f = { ...(await requestFrame(r.ch, "echo", tag, this.seq)), __tag: tag };
    r.sent.push(f);
    const accept = this.seq > m.last;
    await expectAnswer(r, f, accept); // `__tag` rides along as an unknown member: the server ignores it
    if (accept) m.last = this.seq;
  }
  toString = () => `fresh(${this.seq})`;
}

/** One of the frames already sent on this binding, again. */
class Replay implements fc.AsyncCommand<Model, Real> {
  readonly pick: number;
  constructor(pick: number) {
    this.pick = pick;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    if (r.sent.length === 0) return;
    const f = r.sent[this.pick % r.sent.length]!;
    const accept = f.seq > m.last; // a frame refused when sent (seq not above) stays refused: m.last only grows
    await expectAnswer(r, f, accept);
    if (accept) m.last = f.seq;
  }
  toString = () => `replay(#${this.pick})`;
}

/** Random bytes as the ciphertext, any seq. */
class Forged implements fc.AsyncCommand<Model, Real> {
  readonly seq: number;
  readonly len: number;
  constructor(seq: number, len: number) {
    this.seq = seq;
    this.len = len;
  }
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    await expectAnswer(r, { type: "request", channel: r.ch.grant.channel, seq: this.seq, request: b64u(randomBytes(this.len)) }, false);
  }
  toString = () => `forged(${this.seq})`;
}

/** A valid frame of another channel's binding, presented under this channel's id. */
class Foreign implements fc.AsyncCommand<Model, Real> {
  readonly seq: number;
  constructor(seq: number) {
    this.seq = seq;
  }
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const f = await requestFrame(r.foreign, "echo", "foreign", this.seq);
    await expectAnswer(r, { ...f, channel: r.ch.grant.channel }, false);
  }
  toString = () => `foreign(${this.seq})`;
}

/** A frame sealed under this channel's previous binding (before the resume). */
class Stale implements fc.AsyncCommand<Model, Real> {
  readonly pick: number;
  constructor(pick: number) {
    this.pick = pick;
  }
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const f = r.stale[this.pick % r.stale.length]!;
    await expectAnswer(r, f, false);
  }
  toString = () => `stale(#${this.pick})`;
}

const seqArb = fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: MAX_SEQ }));
const commands = [
  seqArb.map((s) => new Fresh(s)),
  fc.nat().map((p) => new Replay(p)),
  fc.tuple(seqArb, fc.integer({ min: 16, max: 80 })).map(([s, l]) => new Forged(s, l)),
  seqArb.map((s) => new Foreign(s)),
  fc.nat().map((p) => new Stale(p)),
];

const t = suite("replay window");
let node: Awaited<ReturnType<typeof inProcessBroker>>;
let broker: Broker;
t.before(async () => {
  node = await inProcessBroker();
  broker = node.broker;
});
t.after(async () => {
  await broker.close();
});

t("the server acts on a request exactly when its seq is above every accepted seq of the binding and it authenticates", async () => {
  const foreignRaw = await Raw.open(node.url);
  const foreign = await handshake(foreignRaw, await generateSigningKey());
  await fc.assert(
    fc.asyncProperty(fc.commands(commands, { maxCommands: 25 }), async (cmds) => {
      // The channel is bound first by a handshake on one socket, then resumed on another:
      // the handshake binding's frames are the stale ones.
      const first = await Raw.open(node.url);
      const ch = await handshake(first, await generateSigningKey());
      const stale: Frame[] = [];
      for (let i = 0; i < 3; i++) {
        const f = await requestFrame(ch, "echo", `stale ${i}`);
        first.send(f);
        await readResponse(first, ch);
        stale.push(f);
      }
      const raw = await Raw.open(node.url);
      const rch: RawChannel = { ...ch };
      assert.is((await resume(raw, rch)).type, "resumed");
      // Activate the resumed binding with seq 1 (the model starts there).
      raw.send(await requestFrame(rch, "echo", 0, 1));
      assert.equal(await readResponse(raw, rch), { data: 0 });
      const real: Real = { raw, ch: rch, sent: [], foreign, stale, tag: 0 };
      try {
        await fc.asyncModelRun(() => ({ model: { last: 1 }, real }), cmds);
      } finally {
        raw.close();
        first.close();
      }
    }),
    params(150),
  );
  foreignRaw.close();
});

t.run();
