/**
 * The handshake against a real broker process over real sockets, driven by a
 * raw protocol peer: DESIGN.md §3 properties.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey, KeyType } from "../../shared/crypto.js";
import { fromUtf8, utf8 } from "../../shared/encoding.js";
import { CloseCode } from "../../shared/errors.js";
import { answerChallenge, createHello, openGrant } from "../../shared/handshake.js";
import { decodeServerFrame, type Challenge, type Established } from "../../shared/frames.js";
import { type RunningBroker, startBroker } from "../helpers/broker.js";
import { Raw, call, handshake, openPush, rawChannel, readResponse, requestFrame } from "../helpers/raw.js";

const t = suite("handshake");
let broker: RunningBroker;

t.before(async () => {
  broker = await startBroker(["--hellos-per-address", "1000"]);
});
t.after(async () => {
  await broker.stop();
});

for (const type of [KeyType.ed25519, KeyType.p256, KeyType.rsa]) {
  t(`grants a channel to a ${type} identity and answers echo`, async () => {
    const raw = await Raw.open(broker.url);
    const ch = await handshake(raw, await generateSigningKey(type));
    assert.is(ch.grant.channel.length, 22);
    assert.is(ch.grant.key.type, "AES-256-GCM");
    assert.ok(Date.parse(ch.grant.valid_until) > Date.now());
    assert.equal(await call(raw, ch, "echo", { hi: 1 }), { data: { hi: 1 } });
    raw.close();
  });
}

t("grants a channel with a P-256 ephemeral KEM key", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey(), { kem: "P-256" });
  assert.equal(await call(raw, ch, "echo", "x"), { data: "x" });
  raw.close();
});

t("accepts the original design's `AES` alias and skips DES in the offer", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, await generateSigningKey(), { channelTypes: ["DES", "AES"] });
  assert.is(ch.grant.key.type, "AES-256-GCM");
  raw.close();
});

for (const offer of [["DES"], ["DES", "3DES", "AES-128-CBC", "AES-256-ECB", "rot13"], []]) {
  t(`answers an offer of [${offer.join(", ")}] with unsupported naming AES-256-GCM, and the socket stays usable`, async () => {
    const raw = await Raw.open(broker.url);
    const id = await generateSigningKey();
    const h = await createHello(id, { channelTypes: offer });
    raw.send(fromUtf8(h.bytes));
    const f = await raw.next();
    assert.is(f.type, "error");
    assert.is(f.error.code, "unsupported");
    assert.match(f.error.message, "AES-256-GCM");
    const ch = await handshake(raw, id);
    assert.is((await call(raw, ch, "ping")).data.pong, true);
    raw.close();
  });
}

t("hijack: a hello with the victim's key changes nothing and cannot be completed", async () => {
  const victimKey = await generateSigningKey();
  const victim = await Raw.open(broker.url);
  const vch = await handshake(victim, victimKey);
  const before = await call(victim, vch, "whoami");
  // The victim also has a handshake pending on a second connection.
  const pendingRaw = await Raw.open(broker.url);
  const ph = await createHello(victimKey);
  pendingRaw.send(fromUtf8(ph.bytes));
  const pc = decodeServerFrame(JSON.stringify(await pendingRaw.next())) as Challenge;

  // The attacker knows only the public key: it gets a challenge, nothing more.
  const attacker = await Raw.open(broker.url);
  const attackerKey = await generateSigningKey();
  const ah = await createHello(victimKey);
  attacker.send(fromUtf8(ah.bytes));
  const ac = decodeServerFrame(JSON.stringify(await attacker.next())) as Challenge;
  assert.is(ac.type, "challenge");
  assert.equal(Object.keys(ac).sort(), ["channel_type", "enc", "features", "nonce", "server_key", "signature", "source", "type"]);
  // It signs with its own key (the best it can do) and is refused.
  const { proof } = await answerChallenge({ ...ah, identity: attackerKey }, ac, () => {});
  attacker.send(proof);
  const refused = await attacker.next();
  assert.is(refused.error.code, "unauthorised");
  assert.is((await attacker.closed).code, CloseCode.badRequest.code);

  // The victim's channel is untouched...
  assert.equal(await call(victim, vch, "whoami"), before);
  // ...and the victim's pending handshake still completes (and then replaces the old channel).
  const { proof: vp, state } = await answerChallenge(ph, pc, () => {});
  pendingRaw.send(vp);
  const est = await pendingRaw.next();
  assert.is(est.type, "established");
  void state;
  const notice = await victim.next();
  assert.is(notice.type, "push");
  assert.equal(await openPush(vch, notice), { notice: "replaced" });
  assert.is((await victim.closed).code, CloseCode.replaced.code);
  pendingRaw.close();
});

t("a proof replayed onto another connection is refused", async () => {
  const id = await generateSigningKey();
  const a = await Raw.open(broker.url);
  const h = await createHello(id);
  a.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await a.next())) as Challenge;
  const { proof } = await answerChallenge(h, c, () => {});
  // An eavesdropper replays the same hello bytes and the captured proof elsewhere.
  const b = await Raw.open(broker.url);
  b.send(fromUtf8(h.bytes));
  const c2 = await b.next();
  assert.is(c2.type, "challenge");
  assert.is.not(c2.nonce, c.nonce);
  b.send(proof);
  assert.is((await b.next()).error.code, "unauthorised");
  assert.is((await b.closed).code, CloseCode.badRequest.code);
  // A proof with no hello at all is a protocol violation.
  const d = await Raw.open(broker.url);
  d.send(proof);
  assert.is((await d.next()).error.code, "bad_request");
  assert.is((await d.closed).code, CloseCode.badRequest.code);
  // The real client is unaffected.
  a.send(proof);
  assert.is((await a.next()).type, "established");
  a.close();
});

t("a flood of hellos carrying the victim's key does not lock the victim out", async () => {
  const victimKey = await generateSigningKey();
  const attacker = await Raw.open(broker.url);
  for (let i = 0; i < 40; i++) {
    // One pending handshake per connection: the attacker needs a socket per hello.
    const r = i === 0 ? attacker : await Raw.open(broker.url);
    const h = await createHello(victimKey);
    r.send(fromUtf8(h.bytes));
    assert.is((await r.next()).type, "challenge");
    if (r !== attacker) r.close();
  }
  // 40 hellos > 30 proven handshakes per identity per minute: only proofs count.
  const victim = await Raw.open(broker.url, { localAddress: "127.0.0.2" });
  const ch = await handshake(victim, victimKey);
  assert.equal(await call(victim, ch, "echo", 1), { data: 1 });
  victim.close();
  attacker.close();
});

t("a second hello while one is pending is a protocol violation", async () => {
  const raw = await Raw.open(broker.url);
  const h = await createHello(await generateSigningKey());
  raw.send(fromUtf8(h.bytes));
  assert.is((await raw.next()).type, "challenge");
  raw.send(fromUtf8(h.bytes));
  assert.is((await raw.next()).error.code, "bad_request");
  assert.is((await raw.closed).code, CloseCode.badRequest.code);
});

t("whoami answers {identity, channel, node}: the proven key's fingerprint and the channel id (PROTOCOL.md §6.2)", async () => {
  const raw = await Raw.open(broker.url);
  const id = await generateSigningKey();
  const ch = await handshake(raw, id);
  const who = await call(raw, ch, "whoami");
  assert.equal(Object.keys(who.data), ["identity", "channel", "node"]);
  assert.is(who.data.identity, id.public.fingerprint);
  assert.is(who.data.channel, ch.grant.channel);
  assert.type(who.data.node, "string");
  raw.close();
});

t("an admin.* operation from an identity without the operator role is forbidden and changes nothing (PROTOCOL.md §6.6)", async () => {
  const raw = await Raw.open(broker.url);
  const id = await generateSigningKey();
  const ch = await handshake(raw, id);
  for (const [op, data] of [
    ["admin.revoke", { identity: id.public.fingerprint }],
    ["admin.push", { identity: id.public.fingerprint, message: "x" }],
    ["admin.channels", undefined],
  ] as const) {
    const r = await call(raw, ch, op, data);
    assert.is(r.error?.code, "forbidden", op);
  }
  // the channel is not revoked, and nothing was pushed
  assert.equal(await call(raw, ch, "echo", "still"), { data: "still" });
  assert.ok(await raw.silent(200), "a push arrived");
  raw.close();
});

t("integers are taken by value: a hello with version 1e0 completes over its exact bytes, a request with seq 1.0 is answered, seq 2.5 is bad_request", async () => {
  const raw = await Raw.open(broker.url);
  const sent = await createHello(await generateSigningKey());
  const text = fromUtf8(sent.bytes);
  assert.ok(text.includes('"version":1,'));
  // The client signs the bytes it sent, whatever they spell (PROTOCOL.md §2.1, §5.2).
  const h = { ...sent, bytes: utf8(text.replace('"version":1,', '"version":1e0,')) };
  raw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
  assert.is(c.type, "challenge");
  const { proof, state } = await answerChallenge(h, c, () => {});
  raw.send(proof);
  const e = (await raw.next()) as Established;
  assert.is(e.type, "established");
  const { grant, channelKey } = await openGrant(state, e);
  const ch = await rawChannel(grant, channelKey, h.nonceC, state.nonceS);
  const one = JSON.stringify(await requestFrame(ch, "echo", "by value"));
  raw.send(one.replace('"seq":1,', '"seq":1.0,'));
  assert.equal(await readResponse(raw, ch), { data: "by value" });
  const two = JSON.stringify(await requestFrame(ch, "echo", "half"));
  raw.send(two.replace('"seq":2,', '"seq":2.5,'));
  const refused = await raw.next();
  assert.is(refused.type, "error");
  assert.is(refused.error.code, "bad_request");
  assert.match(refused.error.message, '"seq"');
  assert.is((await raw.closed).code, CloseCode.badRequest.code);
});

t.run();
