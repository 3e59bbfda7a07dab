/**
 * Properties of the handshake transcript (shared/handshake.ts, PROTOCOL.md §5):
 * for any offer the four frames complete and both sides agree on the channel
 * key; the choice is the first acceptable offer and the feature intersection;
 * any change to the hello bytes or to any signed field of the challenge makes
 * the client refuse; a proof is good for its own handshake only; the grant
 * opens under its own transcript only.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { type SigningKey, KeyType, generateSigningKey, randomBytes } from "../../shared/crypto.js";
import { b64u, fromB64u, fromUtf8, utf8 } from "../../shared/encoding.js";
import { ErrorCode } from "../../shared/errors.js";
import { type Challenge, type Established, type Grant, type Hello, type KemType, channelTypeFor, decodeClientFrame, decodeServerFrame } from "../../shared/frames.js";
import { acceptHello, answerChallenge, createHello, openGrant, sealGrant, verifyProof } from "../../shared/handshake.js";
import { params, psimbolsError } from "./support.js";

const SOURCE = "ws://127.0.0.1:9393/";
let server: SigningKey;
let other: SigningKey;
const ids: SigningKey[] = [];

test.before(async () => {
  server = await generateSigningKey();
  other = await generateSigningKey();
  ids.push(await generateSigningKey(KeyType.ed25519), await generateSigningKey(KeyType.p256), await generateSigningKey(KeyType.ed25519));
});

/** The client's pin: the test server's fingerprint, nothing else. */
const pinned = (k: { fingerprint: string }) => {
  if (k.fingerprint !== server.public.fingerprint) throw Object.assign(new Error("pin"), { code: "server_key_mismatch" });
};

const FEATURES = ["compact", "xwing", "hide-id", "v2.ext", "a_b"];
const offer = fc.record({
  id: fc.nat(),
  kem: fc.constantFrom<KemType>("X25519", "P-256", "X-Wing"),
  // Junk and weak types around at least one acceptable one, in any order.
  channelTypes: fc
    .tuple(fc.array(fc.constantFrom("DES", "3DES", "AES-128-CBC", "RC4", "toString", "aes", "AES-256-ECB"), { maxLength: 5 }), fc.constantFrom("AES", "AES-256-GCM"), fc.array(fc.constantFrom("AES", "AES-256-GCM", "DES"), { maxLength: 3 }), fc.nat())
    .map(([junk, good, tail, at]) => {
      const list = [...junk, ...tail];
      list.splice(at % (list.length + 1), 0, good);
      return list.slice(0, 16);
    }),
  clientFeatures: fc.uniqueArray(fc.constantFrom(...FEATURES), { maxLength: 5 }),
  serverFeatures: fc.uniqueArray(fc.constantFrom(...FEATURES), { maxLength: 5 }),
});

interface Run {
  h: Awaited<ReturnType<typeof createHello>>;
  challenge: Challenge;
  pending: Awaited<ReturnType<typeof acceptHello>>["pending"];
}
async function begin(id: SigningKey, o: { kem: KemType; channelTypes: string[]; clientFeatures: string[]; serverFeatures: string[] }): Promise<Run> {
  const h = await createHello(id, { kem: o.kem, channelTypes: o.channelTypes, features: o.clientFeatures });
  const hello = decodeClientFrame(fromUtf8(h.bytes)) as Hello;
  const { challenge, pending } = await acceptHello(h.bytes, hello, { key: server, source: SOURCE, features: o.serverFeatures });
  return { h, challenge: decodeServerFrame(JSON.stringify(challenge)) as Challenge, pending };
}

const grantFor = (): { grant: Grant; key: Uint8Array } => {
  const key = randomBytes(32);
  return { key, grant: { channel: b64u(randomBytes(16)), key: { type: "AES-256-GCM", data: b64u(key) }, valid_until: new Date(Date.now() + 60_000).toISOString(), ttl: 60 } };
};

test("for any offer the handshake completes and both sides hold the same channel key; the choices are the first acceptable type and the feature intersection", async () => {
  await fc.assert(
    fc.asyncProperty(offer, async (o) => {
      const id = ids[o.id % ids.length]!;
      const r = await begin(id, o);
      assert.is(r.challenge.channel_type, channelTypeFor(o.channelTypes.find((t) => channelTypeFor(t) !== undefined)!));
      assert.equal(r.challenge.features, o.clientFeatures.filter((f) => o.serverFeatures.includes(f)));
      const { proof, state } = await answerChallenge(r.h, r.challenge, pinned);
      const sig = fromB64u(proof.signature, "signature");
      assert.ok(await verifyProof(r.pending, sig));
      const { grant, key } = grantFor();
      const est = await sealGrant(r.pending, sig, grant, SOURCE);
      const got = await openGrant(state, decodeServerFrame(JSON.stringify(est)) as Established);
      assert.equal(got.grant, grant);
      assert.equal(got.channelKey, key);
    }),
    params(40),
  );
});

test("the server gets other hello bytes than the client sent (any byte changed, still a valid hello): the client refuses the challenge", async () => {
  await fc.assert(
    fc.asyncProperty(offer, fc.nat(), fc.integer({ min: 1, max: 255 }), async (o, at, x) => {
      const id = ids[o.id % ids.length]!;
      const h = await createHello(id, { kem: o.kem, channelTypes: o.channelTypes, features: o.clientFeatures });
      const bytes = h.bytes.slice();
      bytes[at % bytes.length]! ^= x;
      let hello: Hello;
      try {
        hello = decodeClientFrame(fromUtf8(bytes)) as Hello;
        fc.pre(hello.type === "hello");
      } catch {
        return; // the change broke the frame: nothing to answer
      }
      let challenge: Challenge;
      try {
        challenge = (await acceptHello(bytes, hello, { key: server, source: SOURCE, features: o.serverFeatures })).challenge;
      } catch {
        return; // the server refused the changed hello
      }
      const e = await psimbolsError(() => answerChallenge(h, decodeServerFrame(JSON.stringify(challenge)) as Challenge, pinned));
      assert.ok(e, "the client accepted a challenge over other hello bytes");
      assert.is(e.code, ErrorCode.protocol);
    }),
    params(60),
  );
});

test("any change to a signed field of the challenge (nonce, enc, features, source, signature) makes the client refuse", async () => {
  const field = fc.constantFrom("nonce", "enc", "signature", "source", "features");
  await fc.assert(
    fc.asyncProperty(offer, field, fc.nat(), fc.integer({ min: 1, max: 255 }), async (o, f, at, x) => {
      const r = await begin(ids[o.id % ids.length]!, { ...o, clientFeatures: FEATURES, serverFeatures: ["compact", "xwing"] });
      const c: Challenge = { ...r.challenge };
      if (f === "features") c.features = c.features.length > 1 ? c.features.slice(1) : [];
      else if (f === "source") c.source = `${c.source}x`;
      else {
        const b = fromB64u(c[f], f);
        b[at % b.length]! ^= x;
        c[f] = b64u(b);
      }
      const e = await psimbolsError(() => answerChallenge(r.h, c, pinned));
      assert.ok(e, `a changed ${f} was accepted`);
      assert.is(e.code, ErrorCode.protocol);
    }),
    params(60),
  );
});

test("a challenge signed by any other server key is refused before a proof is made (pinning)", async () => {
  await fc.assert(
    fc.asyncProperty(offer, async (o) => {
      const h = await createHello(ids[o.id % ids.length]!, { kem: o.kem, channelTypes: o.channelTypes });
      const { challenge } = await acceptHello(h.bytes, h.hello, { key: other, source: SOURCE });
      let proofMade = false;
      try {
        await answerChallenge(h, challenge, (k) => {
          pinned(k);
          proofMade = true;
        });
      } catch (e) {
        assert.is((e as { code?: string }).code, "server_key_mismatch");
      }
      assert.not.ok(proofMade);
    }),
    params(20),
  );
});

test("a proof is good for its own handshake only: never for another connection's, even with the same hello bytes", async () => {
  await fc.assert(
    fc.asyncProperty(offer, fc.boolean(), async (o, sameHello) => {
      const id = ids[o.id % ids.length]!;
      const a = await begin(id, o);
      const b = sameHello
        ? await (async () => {
            const { challenge, pending } = await acceptHello(a.h.bytes, a.h.hello, { key: server, source: SOURCE, features: o.serverFeatures });
            return { h: a.h, challenge, pending };
          })()
        : await begin(id, o);
      const { proof } = await answerChallenge(a.h, a.challenge, pinned);
      const sig = fromB64u(proof.signature, "signature");
      assert.ok(await verifyProof(a.pending, sig));
      assert.not.ok(await verifyProof(b.pending, sig), "a proof verified on another handshake");
    }),
    params(40),
  );
});

test("the grant opens only under its own transcript: another handshake's state or a changed ciphertext fail with protocol", async () => {
  await fc.assert(
    fc.asyncProperty(offer, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.constantFrom("state", "ciphertext"), async (o, at, x, what) => {
      const id = ids[o.id % ids.length]!;
      const a = await begin(id, o);
      const { proof, state } = await answerChallenge(a.h, a.challenge, pinned);
      const sig = fromB64u(proof.signature, "signature");
      const est = await sealGrant(a.pending, sig, grantFor().grant, SOURCE);
      let e;
      if (what === "state") {
        const b = await begin(id, o);
        const other = (await answerChallenge(b.h, b.challenge, pinned)).state;
        e = await psimbolsError(() => openGrant(other, est));
      } else {
        const ct = fromB64u(est.response, "response");
        ct[at % ct.length]! ^= x;
        e = await psimbolsError(() => openGrant(state, { ...est, response: b64u(ct) }));
      }
      assert.is(e?.code, ErrorCode.protocol);
    }),
    params(40),
  );
});

test("hellos are never re-serialised: the server signs the exact bytes, whatever their spacing or member order", async () => {
  await fc.assert(
    fc.asyncProperty(offer, fc.boolean(), async (o, reorder) => {
      const id = ids[o.id % ids.length]!;
      const h = await createHello(id, { kem: o.kem, channelTypes: o.channelTypes });
      const obj = JSON.parse(fromUtf8(h.bytes)) as Record<string, unknown>;
      const text = reorder ? JSON.stringify(Object.fromEntries(Object.entries(obj).reverse()), null, 1) : ` ${fromUtf8(h.bytes)}\n`;
      const bytes = utf8(text);
      const hello = decodeClientFrame(text) as Hello;
      const { challenge, pending } = await acceptHello(bytes, hello, { key: server, source: SOURCE });
      // The client that really sent these bytes completes; one that believes it sent the compact form does not.
      const { proof } = await answerChallenge({ ...h, bytes }, challenge, pinned);
      assert.ok(await verifyProof(pending, fromB64u(proof.signature, "signature")));
      assert.ok(await psimbolsError(() => answerChallenge(h, challenge, pinned)));
    }),
    params(20),
  );
});

test.run();
