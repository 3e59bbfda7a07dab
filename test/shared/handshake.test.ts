import { test } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey, KeyType, type KeyType as KT } from "../../shared/crypto.js";
import { acceptHello, answerChallenge, createHello, sealGrant, verifyProof } from "../../shared/handshake.js";
import { decodeClientFrame, decodeServerFrame, type Hello, type Challenge, type Established, type Grant, type KemType } from "../../shared/frames.js";
import { b64u, fromB64u, fromUtf8 } from "../../shared/encoding.js";
import { handshakeCrypto, randomBytes } from "../../shared/crypto.js";
import { openGrant } from "../../shared/handshake.js";
import { ErrorCode } from "../../shared/errors.js";

const source = "ws://127.0.0.1:9393/";

async function run(type: KT, kem: KemType = "X25519") {
  const server = await generateSigningKey(KeyType.ed25519);
  const id = await generateSigningKey(type);
  const h = await createHello(id, { kem });
  const hello = decodeClientFrame(fromUtf8(h.bytes)) as Hello;
  const { challenge, pending } = await acceptHello(h.bytes, hello, { key: server, source });
  const c = decodeServerFrame(JSON.stringify(challenge)) as Challenge;
  const { proof, state } = await answerChallenge(h, c, () => {});
  const sig = fromB64u(proof.signature, "signature");
  assert.ok(await verifyProof(pending, sig));
  const key = randomBytes(32);
  const grant: Grant = { channel: b64u(randomBytes(16)), key: { type: "AES-256-GCM", data: b64u(key) }, valid_until: new Date().toISOString(), ttl: 60 };
  const est = await sealGrant(pending, sig, grant, source);
  const got = await openGrant(state, decodeServerFrame(JSON.stringify(est)) as Established);
  assert.equal(got.grant, grant);
  assert.equal(got.channelKey, key);
}

for (const t of [KeyType.ed25519, KeyType.p256, KeyType.rsa]) {
  test(`completes a handshake with a ${t} identity key`, () => run(t));
}
test("completes a handshake with a P-256 ephemeral key", () => run(KeyType.ed25519, "P-256"));
test("completes a handshake with an X-Wing ephemeral key (PROTOCOL.md §5.3.1)", () => run(KeyType.ed25519, "X-Wing"));

test("a server whose offer leaves X-Wing out answers an X-Wing hello with unsupported, naming what it accepts", async () => {
  const server = await generateSigningKey();
  const h = await createHello(await generateSigningKey(), { kem: "X-Wing" });
  try {
    await acceptHello(h.bytes, h.hello, { key: server, source, kems: ["X25519", "P-256"] });
    assert.unreachable();
  } catch (e: any) {
    assert.is(e.code, ErrorCode.unsupported);
    assert.is(e.message, "kem.type not supported; accepted: X25519, P-256");
  }
});

test("a proof made by another key does not verify", async () => {
  const server = await generateSigningKey();
  const victim = await generateSigningKey();
  const attacker = await generateSigningKey();
  const h = await createHello(victim);
  const { challenge, pending } = await acceptHello(h.bytes, h.hello, { key: server, source });
  // the attacker holds only the victim's public key: it signs with its own
  const fake = { ...h, identity: attacker };
  const { proof } = await answerChallenge(fake, challenge, () => {});
  assert.not.ok(await verifyProof(pending, fromB64u(proof.signature, "signature")));
});

test("DES-only offer is unsupported and names what is accepted", async () => {
  const server = await generateSigningKey();
  const h = await createHello(await generateSigningKey(), { channelTypes: ["DES", "3DES", "AES-256-CBC"] });
  try {
    await acceptHello(h.bytes, h.hello, { key: server, source });
    assert.unreachable();
  } catch (e: any) {
    assert.is(e.code, ErrorCode.unsupported);
    assert.match(e.message, "AES-256-GCM");
  }
});

test("createHello refuses hello options that name a feature twice (bad_request), which a server would refuse", async () => {
  try {
    await createHello(await generateSigningKey(), { features: ["binary", "x", "binary"] });
    assert.unreachable();
  } catch (e: any) {
    assert.is(e.code, ErrorCode.badRequest);
    assert.match(e.message, "features");
  }
  // a repeated channel type is allowed (the server takes the first it accepts)
  const h = await createHello(await generateSigningKey(), { channelTypes: ["AES", "AES"] });
  assert.equal((decodeClientFrame(fromUtf8(h.bytes)) as Hello).channel_types, ["AES", "AES"]);
});

test("forward secrecy: both long-term private keys and every frame do not open the grant without the dropped ephemeral key", async () => {
  const server = await generateSigningKey(KeyType.ed25519);
  const id = await generateSigningKey();
  const h = await createHello(id);
  const { challenge, pending } = await acceptHello(h.bytes, h.hello, { key: server, source });
  const { proof, state } = await answerChallenge(h, challenge, () => {});
  const sig = fromB64u(proof.signature, "signature");
  const key = randomBytes(32);
  const grant: Grant = { channel: b64u(randomBytes(16)), key: { type: "AES-256-GCM", data: b64u(key) }, valid_until: new Date().toISOString(), ttl: 60 };
  const est = await sealGrant(pending, sig, grant, source);
  // A later attacker holds the identity key and the server key and recorded every frame, so it can
  // recompute the whole transcript (answerChallenge with the real identity key gives the same AAD and
  // info) — but the client's ephemeral KEM key is gone: any other key fails to open the grant.
  const replay = await answerChallenge({ ...h, kemPair: await handshakeCrypto().hpke.generateKeyPair("X25519") }, challenge, () => {});
  assert.equal(replay.state.aad, state.aad);
  try {
    await openGrant(replay.state, est);
    assert.unreachable("the grant opened without the ephemeral key");
  } catch (e: any) {
    assert.is(e.code, ErrorCode.protocol);
  }
  assert.equal((await openGrant(state, est)).channelKey, key);
});

test.run();
