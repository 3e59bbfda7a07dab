/**
 * Binary channel frames (the `binary` feature, PROTOCOL.md §4.11) against a
 * real broker process: negotiation in the hello and in a resume, the frames
 * themselves, and every way a binary frame can be refused — each with the
 * exact error and a check that the channel is as it was.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../shared/crypto.js";
import { CloseCode } from "../../shared/errors.js";
import { BINARY_HEADER_BYTES, Feature, MAX_SEQ } from "../../shared/frames.js";
import { loadKey } from "../../client/node.js";
import { type RunningBroker, operatorKeys, startBroker } from "../helpers/broker.js";
import { Raw, type RawChannel, binaryRequestFrame, call, handshake, openPush, readResponse, requestFrame, resume } from "../helpers/raw.js";

const t = suite("binary channel frames");
let broker: RunningBroker;
let operatorKeyFile: string;
t.before(async () => {
  const op = await operatorKeys();
  operatorKeyFile = op.keyFile;
  broker = await startBroker(["--keys", op.keysFile, "--hellos-per-address", "1000"]);
});
t.after(async () => {
  await broker.stop();
});

const BINARY = { features: [Feature.binary] };

/** The channel still answers, from a fresh socket that resumes it: nothing about it changed. */
async function stillServed(ch: RawChannel, who: unknown): Promise<void> {
  const again = await Raw.open(broker.url);
  assert.is((await resume(again, ch)).type, "resumed");
  assert.equal(await call(again, ch, "whoami"), who);
  again.close();
}

t("with the feature agreed, requests, responses and pushes travel as binary frames", async () => {
  const raw = await Raw.open(broker.url);
  const key = await generateSigningKey();
  const ch = await handshake(raw, key, BINARY);
  raw.send(await binaryRequestFrame(ch, "echo", { n: 1 }));
  const r = await raw.next();
  assert.is(r.type, "response");
  assert.is(r.binary, true);
  assert.is(r.seq, ch.seq);
  assert.is(r.channel, ch.grant.channel);
  assert.instance(r.response, Uint8Array);
  raw.frames.unshift(r);
  assert.equal(await readResponse(raw, ch), { data: { n: 1 } });
  // A JSON request on the same binding is still accepted (and answered in binary).
  raw.send(await requestFrame(ch, "echo", "json"));
  const j = await raw.next();
  assert.is(j.binary, true);
  raw.frames.unshift(j);
  assert.equal(await readResponse(raw, ch), { data: "json" });
  // Pushes too.
  const op = await Raw.open(broker.url);
  const och = await handshake(op, await loadKey(operatorKeyFile));
  const sent = await call(op, och, "admin.push", { identity: key.public.fingerprint, message: { hi: "bin" } });
  const p = await raw.next();
  assert.is(p.type, "push");
  assert.is(p.binary, true);
  assert.equal(await openPush(ch, p), { message: { hi: "bin" }, id: sent.data.seq });
  raw.close();
  op.close();
});

t("without the feature, a binary frame gets bad_request and close 1003, and the channel is untouched", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey());
  const who = await call(raw, ch, "whoami");
  raw.send(await binaryRequestFrame(ch, "echo", 1));
  const e = await raw.next();
  assert.is(e.type, "error");
  assert.is(e.error.code, "bad_request");
  assert.is((await raw.closed).code, CloseCode.unsupportedData.code);
  await stillServed(ch, who);
});

t("a hello that offers features the node does not know gets only binary; the challenge lists exactly it", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey(), { features: ["x-unknown", Feature.binary, "y.2"] });
  raw.send(await binaryRequestFrame(ch, "echo", 2));
  const r = await raw.next();
  assert.is(r.binary, true);
  raw.close();
});

/** Malformed binary frames: [name, bytes from a good frame]. */
const malformed: [string, (good: Uint8Array) => Uint8Array][] = [
  ["shorter than header and tag", (g) => new Uint8Array(g).slice(0, BINARY_HEADER_BYTES + 15)],
  ["kind 0", (g) => withByte(g, 0, 0)],
  ["kind 2 (a response) from a client", (g) => withByte(g, 0, 2)],
  ["kind 3 (a push) from a client", (g) => withByte(g, 0, 3)],
  ["kind 255", (g) => withByte(g, 0, 255)],
  ["seq 0", (g) => withSeq(g, 0)],
  ["seq above MAX_SEQ", (g) => withSeq(g, MAX_SEQ + 1)],
  ["seq 2^32 − 1", (g) => withSeq(g, 2 ** 32 - 1)],
  ["empty", () => new Uint8Array(0)],
];

for (const [name, make] of malformed) {
  t(`malformed binary frame (${name}) gets bad_request and close 4000; the channel is untouched`, async () => {
    const raw = await Raw.open(broker.url);
    const ch = await handshake(raw, await generateSigningKey(), BINARY);
    const who = await call(raw, ch, "whoami");
    raw.send(make(await binaryRequestFrame(ch, "echo", 1)));
    const e = await raw.next();
    assert.is(e.type, "error");
    assert.is(e.error.code, "bad_request");
    assert.is((await raw.closed).code, CloseCode.badRequest.code);
    await stillServed(ch, who);
  });
}

t("every single-byte flip of a binary request is refused with unauthorised and consumes nothing", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey(), BINARY);
  const good = await binaryRequestFrame(ch, "echo", { n: 3 });
  // Byte 0 (the kind) and the seq's top byte (17) make the frame malformed, not forged: tested above.
  for (let i = 1; i < good.length; i++) {
    if (i === 17) continue;
    const bad = withByte(good, i, good[i]! ^ 0x80);
    raw.send(bad);
    const r = await raw.next();
    assert.is(r.error?.code, "unauthorised", `byte ${i}`);
  }
  raw.send(good);
  assert.equal(await readResponse(raw, ch), { data: { n: 3 } });
  raw.close();
});

t("a binary request replayed, as binary or as its JSON form, is refused", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey(), BINARY);
  const seq = ++ch.seq;
  const bin = await binaryRequestFrame(ch, "echo", "once", seq);
  const json = await requestFrame(ch, "echo", "once", seq);
  raw.send(bin);
  assert.equal(await readResponse(raw, ch), { data: "once" });
  raw.send(bin);
  const r1 = await raw.next();
  assert.is(r1.error.code, "unauthorised");
  assert.is(r1.seq, seq);
  raw.send(json);
  const r2 = await raw.next();
  assert.is(r2.error.code, "unauthorised");
  assert.equal(await call(raw, ch, "echo", "next"), { data: "next" });
  raw.close();
});

t("a resume agrees on binary only when it asks for it; unknown features are dropped", async () => {
  const first = await Raw.open(broker.url);
  const ch = await handshake(first, await generateSigningKey(), BINARY);
  const who = await call(first, ch, "whoami");
  first.close();

  const a = await Raw.open(broker.url);
  const ra = await resume(a, ch, ["nope", Feature.binary]);
  assert.equal(ra.features, [Feature.binary]);
  a.send(await binaryRequestFrame(ch, "whoami"));
  const r = await a.next();
  assert.is(r.binary, true);
  a.frames.unshift(r);
  assert.equal(await readResponse(a, ch), who);
  a.close();

  // Without features the resumed binding is JSON only: a binary frame is refused as without the feature.
  const b = await Raw.open(broker.url);
  const rb = await resume(b, ch);
  assert.is(rb.features, undefined);
  assert.equal(await call(b, ch, "whoami"), who);
  b.send(await binaryRequestFrame(ch, "whoami"));
  assert.is((await b.next()).error.code, "bad_request");
  assert.is((await b.closed).code, CloseCode.unsupportedData.code);
  await stillServed(ch, who);
});

// Copies made with `new Uint8Array(b)`: the node:crypto engine returns Buffers, whose slice() shares memory.
function withByte(b: Uint8Array, i: number, v: number): Uint8Array {
  const c = new Uint8Array(b);
  c[i] = v;
  return c;
}

function withSeq(b: Uint8Array, seq: number): Uint8Array {
  const c = new Uint8Array(b);
  new DataView(c.buffer).setUint32(17, seq, false);
  return c;
}

t.run();
