/**
 * Channel messages against real broker processes: tamper, replay, resume,
 * expiry, revocation, close, malformed and oversized frames. DESIGN.md §4–5, §7.
 */
import { MAX_PUSH_BYTES } from "../../server/broker.js";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../shared/crypto.js";
import { b64u, fromB64u } from "../../shared/encoding.js";
import { CloseCode } from "../../shared/errors.js";
import { loadKey } from "../../client/node.js";
import { type RunningBroker, operatorKeys, startBroker } from "../helpers/broker.js";
import { Raw, call, handshake, openPush, readResponse, requestFrame, resume } from "../helpers/raw.js";

// ---------------------------------------------------------------- messages
const m = suite("channel messages");
let broker: RunningBroker;
let operatorKeyFile: string;
m.before(async () => {
  const op = await operatorKeys();
  operatorKeyFile = op.keyFile;
  broker = await startBroker(["--keys", op.keysFile, "--hellos-per-address", "1000"]);
});
m.after(async () => {
  await broker.stop();
});

m("every single-byte flip of an encrypted request is refused and changes nothing", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey());
  const good = await requestFrame(ch, "echo", { n: 1 });
  const ct = fromB64u(good.request, "request");
  for (let i = 0; i < ct.length; i++) {
    const bad = ct.slice();
    bad[i]! ^= 0x01;
    raw.send({ ...good, request: b64u(bad) });
    const r = await raw.next();
    assert.is(r.error?.code, "unauthorised", `byte ${i}`);
    assert.is(r.seq, good.seq);
  }
  // The genuine frame with the same seq is still accepted: a forgery consumed nothing.
  raw.send(good);
  assert.equal(await readResponse(raw, ch), { data: { n: 1 } });
  raw.close();
});

m("a request replayed on the same connection is refused", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey());
  const f = await requestFrame(ch, "echo", "once");
  raw.send(f);
  assert.equal(await readResponse(raw, ch), { data: "once" });
  raw.send(f);
  const r = await raw.next();
  assert.is(r.error.code, "unauthorised");
  assert.is(r.seq, f.seq);
  // An older seq is a replay too.
  const g = await requestFrame(ch, "echo", 2);
  raw.send(g);
  assert.equal(await readResponse(raw, ch), { data: 2 });
  raw.send(f);
  assert.is((await raw.next()).error.code, "unauthorised");
  assert.equal(await call(raw, ch, "echo", 3), { data: 3 });
  raw.close();
});

m("a request replayed on a new connection is refused, before and after a resume", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey());
  const f = await requestFrame(ch, "echo", "once");
  raw.send(f);
  assert.equal(await readResponse(raw, ch), { data: "once" });
  const other = await Raw.open(broker.url);
  other.send(f);
  assert.is((await other.next()).error.code, "unauthorised");
  // Even on a connection that resumed the same channel, the old frame does not authenticate.
  const again = await Raw.open(broker.url);
  assert.is((await resume(again, ch)).type, "resumed");
  again.send(f);
  assert.is((await again.next()).error.code, "unauthorised");
  assert.equal(await call(again, ch, "echo", "new binding"), { data: "new binding" });
  raw.close();
  other.close();
  again.close();
});

m("resume after a dropped socket keeps the channel, needs no handshake, and retires the old binding", async () => {
  const id = await generateSigningKey();
  const first = await Raw.open(broker.url);
  const ch = await handshake(first, id);
  const who = await call(first, ch, "whoami");
  const second = await Raw.open(broker.url);
  const ch2 = { ...ch };
  const resumed = await resume(second, ch2);
  assert.is(resumed.type, "resumed");
  assert.is(resumed.channel, ch.grant.channel);
  // Not yet active: the old socket still works until the first authenticated frame on the new one.
  assert.equal(await call(first, ch, "whoami"), who);
  assert.equal(await call(second, ch2, "whoami"), who);
  assert.is((await first.closed).code, CloseCode.replaced.code);
  second.close();
});

m("a forged or replayed resume cannot push the real client off its channel", async () => {
  const real = await Raw.open(broker.url);
  const ch = await handshake(real, await generateSigningKey());
  const attacker = await Raw.open(broker.url);
  const frame = { type: "resume", channel: ch.grant.channel, nonce: b64u(new Uint8Array(32).fill(7)) };
  attacker.send(frame);
  const r = await attacker.next();
  assert.is(r.type, "resumed");
  // Without the channel key the attacker cannot produce an authenticated first frame.
  attacker.send({ type: "request", channel: ch.grant.channel, seq: 1, request: b64u(new Uint8Array(40)) });
  assert.is((await attacker.next()).error.code, "unauthorised");
  assert.equal(await call(real, ch, "echo", "still mine"), { data: "still mine" });
  real.close();
  attacker.close();
});

m("resume of an unknown channel looks like any resume, its first request gets unauthorised, and the socket can still handshake", async () => {
  const raw = await Raw.open(broker.url);
  raw.send({ type: "resume", channel: b64u(new Uint8Array(16)), nonce: b64u(new Uint8Array(32)) });
  assert.is((await raw.next()).type, "resumed");
  raw.send({ type: "request", channel: b64u(new Uint8Array(16)), seq: 1, request: b64u(new Uint8Array(40)) });
  const r = await raw.next();
  assert.is(r.error.code, "unauthorised");
  const ch = await handshake(raw, await generateSigningKey());
  assert.equal(await call(raw, ch, "echo", 1), { data: 1 });
  raw.close();
});

/** Resumes a retired channel: the first authenticated request gets `unauthorised` and the missed notice. */
async function resumeRetired(ch: Awaited<ReturnType<typeof handshake>>): Promise<{ error: string; notice: unknown; close: number }> {
  const again = await Raw.open(broker.url);
  assert.is((await resume(again, ch)).type, "resumed");
  again.send(await requestFrame(ch, "echo", 1));
  const frames = [await again.next(), await again.next()];
  const error = frames.find((f) => f.type === "error")!.error.code;
  const notice = await openPush(ch, frames.find((f) => f.type === "push")!);
  return { error, notice, close: (await again.closed).code };
}

m("after the client closes its channel, requests get unauthorised and a resume is told `closed`", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey());
  assert.equal(await call(raw, ch, "channel.close"), { data: { closed: true } });
  assert.is((await call(raw, ch, "echo", 1)).error.code, "unauthorised");
  assert.equal(await resumeRetired(ch), { error: "unauthorised", notice: { notice: "closed" }, close: CloseCode.normal.code });
  raw.close();
});

m("revocation by an operator: the notice arrives, the socket closes 4005, requests get unauthorised", async () => {
  const victim = await Raw.open(broker.url);
  const vch = await handshake(victim, await generateSigningKey());
  const op = await Raw.open(broker.url);
  const och = await handshake(op, await loadKey(operatorKeyFile));
  assert.equal(await call(op, och, "admin.revoke", { channel: vch.grant.channel }), { data: { revoked: [vch.grant.channel] } });
  const n = await victim.next();
  assert.equal(await openPush(vch, n), { notice: "revoked" });
  assert.is((await victim.closed).code, CloseCode.revoked.code);
  assert.equal(await resumeRetired(vch), { error: "unauthorised", notice: { notice: "revoked" }, close: CloseCode.revoked.code });
  op.close();
});

m("operator ops are forbidden to other identities, after their proof", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey());
  const r = await call(raw, ch, "admin.revoke", { channel: ch.grant.channel });
  assert.is(r.error.code, "forbidden");
  assert.equal(await call(raw, ch, "echo", 1), { data: 1 });
  raw.close();
});

m("an operator push reaches the client, encrypted", async () => {
  const client = await Raw.open(broker.url);
  const key = await generateSigningKey();
  const ch = await handshake(client, key);
  const op = await Raw.open(broker.url);
  const och = await handshake(op, await loadKey(operatorKeyFile));
  const r = await call(op, och, "admin.push", { identity: key.public.fingerprint, message: { hello: "you" } });
  assert.is(typeof r.data.seq, "number");
  const p = await client.next();
  assert.is(p.type, "push");
  assert.not.match(JSON.stringify(p), "hello");
  assert.equal(await openPush(ch, p), { message: { hello: "you" }, id: r.data.seq });
  client.close();
  op.close();
});

m("an operator push over the size limit gets bad_request and consumes no push number", async () => {
  const client = await Raw.open(broker.url);
  const key = await generateSigningKey();
  const ch = await handshake(client, key);
  const op = await Raw.open(broker.url);
  const och = await handshake(op, await loadKey(operatorKeyFile));
  const first = await call(op, och, "admin.push", { identity: key.public.fingerprint, message: 1 });
  const big = await call(op, och, "admin.push", { identity: key.public.fingerprint, message: "x".repeat(MAX_PUSH_BYTES) });
  assert.is(big.error?.code, "bad_request");
  const second = await call(op, och, "admin.push", { identity: key.public.fingerprint, message: 2 });
  assert.is(second.data.seq, first.data.seq + 1, "the refused push took no number");
  assert.equal(await openPush(ch, await client.next()), { message: 1, id: first.data.seq });
  assert.equal(await openPush(ch, await client.next()), { message: 2, id: second.data.seq });
  client.close();
  op.close();
});

m("unknown op gets not_found inside the encrypted response", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey());
  assert.is((await call(raw, ch, "no.such.op")).error.code, "not_found");
  raw.close();
});

m("malformed, binary and oversized frames get their documented error and others keep being served", async () => {
  const bystander = await Raw.open(broker.url);
  const bch = await handshake(bystander, await generateSigningKey());
  const cases: [string, (r: Raw) => void, number, string | undefined][] = [
    ["bad JSON", (r) => r.send("{not json"), CloseCode.badRequest.code, "bad_request"],
    ["no type", (r) => r.send({ hello: 1 }), CloseCode.badRequest.code, "bad_request"],
    ["unknown type", (r) => r.send({ type: "grant" }), CloseCode.badRequest.code, "bad_request"],
    ["wrong field type", (r) => r.send({ type: "request", channel: 5, seq: 1, request: "" }), CloseCode.badRequest.code, "bad_request"],
    ["bad base64url", (r) => r.send({ type: "resume", channel: "x".repeat(22), nonce: "+/+/+/+/+/+/+/+/+/+/+/==" }), CloseCode.badRequest.code, "bad_request"],
    ["binary frame", (r) => r.ws.send(new Uint8Array([1, 2, 3])), CloseCode.unsupportedData.code, "bad_request"],
    ["oversized frame", (r) => r.send("x".repeat(64 * 1024 + 1)), 1009, undefined],
  ];
  for (const [name, send, close, code] of cases) {
    const r = await Raw.open(broker.url);
    send(r);
    if (code) assert.is((await r.next()).error.code, code, name);
    assert.is((await r.closed).code, close, name);
    assert.equal(await call(bystander, bch, "echo", name), { data: name });
  }
  bystander.close();
});

m.run();

// ---------------------------------------------------------------- expiry
const e = suite("channel expiry");
let short: RunningBroker;
e.before(async () => {
  short = await startBroker(["--channel-ttl", "3", "--expiring-before", "2"]);
});
e.after(async () => {
  await short.stop();
});

e("pushes expiring then expired, and afterwards requests get unauthorised", async () => {
  const raw = await Raw.open(short.url);
  const ch = await handshake(raw, await generateSigningKey());
  assert.is(ch.grant.ttl, 3);
  const first = await openPush(ch, await raw.next(2500));
  assert.is(first.notice, "expiring");
  assert.is(first.valid_until, ch.grant.valid_until);
  assert.equal(await openPush(ch, await raw.next(3500)), { notice: "expired" });
  assert.is((await call(raw, ch, "echo", 1)).error.code, "unauthorised");
  // The same socket can get a new channel.
  const next = await handshake(raw, await generateSigningKey());
  assert.equal(await call(raw, next, "echo", 2), { data: 2 });
  raw.close();
});

e.run();

// ---------------------------------------------------------------- liveness
const l = suite("liveness");
let pinging: RunningBroker;
l.before(async () => {
  pinging = await startBroker(["--ping-interval", "300"]);
});
l.after(async () => {
  await pinging.stop();
});

l("a peer that stops answering pings is cut off, and one that answers stays", async () => {
  const silent = await Raw.open(pinging.url, { autoPong: false });
  const lively = await Raw.open(pinging.url);
  const ch = await handshake(lively, await generateSigningKey());
  await handshake(silent, await generateSigningKey());
  const started = Date.now();
  const closed = await silent.closed;
  assert.is(closed.code, 1006); // terminated without a close frame: the peer is presumed gone
  assert.ok(Date.now() - started < 2000, `cut off after ${Date.now() - started} ms`);
  await new Promise((r) => setTimeout(r, 700)); // more ping rounds
  assert.equal(await call(lively, ch, "echo", "alive"), { data: "alive" });
  lively.close();
});

l.run();
