/**
 * X-Wing (PROTOCOL.md §5.3.1): the draft's own vectors
 * (draft-connolly-cfrg-xwing-kem-06 Appendix C, test/vectors/xwing-draft06.json)
 * through three implementations — the node:crypto engine's (node/xwing.ts),
 * the default engine's `@hpke/hybridkem-x-wing`, and `@noble/post-quantum`'s
 * `ml_kem768_x25519` (an independent ML-KEM, X25519 and SHA-3) — then the
 * three against each other on random seeds, the two HPKE engines against each
 * other, and the keys and ciphertexts a hostile peer can send.
 */
import { node, on, outcome, same, web } from "../helpers/engines.js";
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { XWing } from "@hpke/hybridkem-x-wing";
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { KeyType, generateSigningKey, randomBytes } from "../../shared/crypto.js";
import { concat, utf8 } from "../../shared/encoding.js";
import { type Hello, KemType, MAX_ENC_BYTES } from "../../shared/frames.js";
import { acceptHello, answerChallenge, createHello, openGrant, sealGrant, verifyProof } from "../../shared/handshake.js";
import { KEM_PUBLIC_BYTES, XWING_ENC_BYTES, hpkeSuite, loadHpkeSuite } from "../../shared/hpke.js";
import { KEM_XWING, XWING_PUBLIC_BYTES, xwingDecap, xwingEncap, xwingPublicKey } from "../../node/xwing.js";

const hex = (b: Uint8Array | ArrayBuffer) => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString("hex");
const unhex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
type AB = Uint8Array<ArrayBuffer>;

interface DraftVector {
  seed: string;
  sk: string;
  pk: string;
  eseed: string;
  ct: string;
  ss: string;
}
const DRAFT = JSON.parse(readFileSync(fileURLToPath(new URL("../../../test/vectors/xwing-draft06.json", import.meta.url)), "utf8")) as {
  hpke_kem_id: number;
  vectors: DraftVector[];
};


/** The three X-Wing implementations, as (seed) → pk, (pk, eseed) → (ct, ss), (ct, sk) → ss. */
const impls = {
  "node:crypto (node/xwing.ts)": {
    pk: (seed: Uint8Array) => xwingPublicKey(seed),
    encap: async (pk: Uint8Array, eseed: Uint8Array) => {
      const { enc, shared } = await xwingEncap(pk, eseed);
      return { ct: enc, ss: new Uint8Array(shared) };
    },
    decap: async (ct: Uint8Array, sk: Uint8Array) => new Uint8Array(await xwingDecap(ct, sk)),
  },
  "@hpke/hybridkem-x-wing": {
    pk: async (seed: Uint8Array) => {
      const k = new XWing();
      return new Uint8Array(await k.serializePublicKey((await k.generateKeyPairDerand(seed)).publicKey));
    },
    encap: async (pk: Uint8Array, eseed: Uint8Array) => {
      const k = new XWing();
      const r = await k.encap({ recipientPublicKey: await k.deserializePublicKey(pk as AB), ekm: eseed as AB });
      return { ct: new Uint8Array(r.enc), ss: new Uint8Array(r.sharedSecret) };
    },
    decap: async (ct: Uint8Array, sk: Uint8Array) => {
      const k = new XWing();
      return new Uint8Array(await k.decap({ enc: ct as AB, recipientKey: await k.deserializePrivateKey(sk as AB) }));
    },
  },
  "@noble/post-quantum": {
    pk: (seed: Uint8Array) => ml_kem768_x25519.keygen(seed).publicKey,
    encap: (pk: Uint8Array, eseed: Uint8Array) => {
      const r = ml_kem768_x25519.encapsulate(pk, eseed);
      return { ct: r.cipherText, ss: r.sharedSecret };
    },
    decap: (ct: Uint8Array, sk: Uint8Array) => ml_kem768_x25519.decapsulate(ct, sk),
  },
};

// ------------------------------------------------------------- the draft's vectors

test("sizes and ids: X-Wing is HPKE KEM 0x647a, public key 1216 bytes, enc 1120 bytes, on both engines and in the frame bounds", async () => {
  assert.is(DRAFT.hpke_kem_id, 0x647a);
  assert.is(KEM_XWING, 0x647a);
  const s = await loadHpkeSuite(KemType.xwing);
  assert.is(s.kem.id, 0x647a);
  assert.is(hpkeSuite(KemType.xwing), s, "loaded once, then synchronous");
  assert.equal([s.kdf.id, s.aead.id], [0x0001, 0x0002], "HKDF-SHA256, AES-256-GCM as the other suites");
  assert.is(KEM_PUBLIC_BYTES["X-Wing"], 1216);
  assert.is(XWING_PUBLIC_BYTES, 1216);
  assert.is(XWING_ENC_BYTES, 1120);
  assert.is(MAX_ENC_BYTES, 1120);
});

for (const [name, x] of Object.entries(impls)) {
  test(`draft-connolly-cfrg-xwing-kem-06 Appendix C: ${name} gives the published pk, ct and ss for each of the ${DRAFT.vectors.length} vectors`, async () => {
    for (const [i, v] of DRAFT.vectors.entries()) {
      assert.is(v.sk, v.seed, "the draft's sk is the seed");
      assert.is(hex(await x.pk(unhex(v.seed))), v.pk, `vector ${i}: pk`);
      const e = await x.encap(unhex(v.pk), unhex(v.eseed));
      assert.is(hex(e.ct), v.ct, `vector ${i}: ct`);
      assert.is(hex(e.ss), v.ss, `vector ${i}: ss (encapsulate)`);
      assert.is(hex(await x.decap(unhex(v.ct), unhex(v.sk))), v.ss, `vector ${i}: ss (decapsulate)`);
    }
  });
}

test("differential: the three implementations agree on pk, ct and ss for random seeds, and each decapsulates what another encapsulated", async () => {
  const list = Object.entries(impls);
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), async (seed, eseed) => {
      const [first, ...rest] = list;
      const pk = await first![1].pk(seed);
      const e = await first![1].encap(pk, eseed);
      for (const [name, x] of rest) {
        assert.is(hex(await x.pk(seed)), hex(pk), `${name}: pk`);
        const f = await x.encap(pk, eseed);
        assert.is(hex(f.ct), hex(e.ct), `${name}: ct`);
        assert.is(hex(f.ss), hex(e.ss), `${name}: ss`);
      }
      for (const [name, x] of list) assert.is(hex(await x.decap(e.ct, seed)), hex(e.ss), `${name}: decap`);
    }),
    { numRuns: 12 },
  );
});

test("a flipped bit anywhere in the ciphertext gives another shared secret on every implementation, the same one on each (ML-KEM's implicit rejection; no throw)", async () => {
  const v = DRAFT.vectors[0]!;
  // bytes in ct_M (ML-KEM) and in ct_X (X25519): first, middle, last of each
  for (const i of [0, 544, 1087, 1088, 1100, 1119]) {
    const ct = unhex(v.ct);
    ct[i]! ^= 0x01;
    const got = await Promise.all(Object.values(impls).map(async (x) => hex(await x.decap(ct, unhex(v.sk)))));
    assert.is.not(got[0], v.ss, `byte ${i}`);
    assert.equal(got, [got[0], got[0], got[0]], `byte ${i}: implementations agree`);
  }
});

// ------------------------------------------------------------- HPKE on both engines

test("HPKE with X-Wing: the same ikm and eseed give the same key, enc and ciphertext on both engines, and each opens what the other sealed", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 64, maxLength: 64 }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 1, maxLength: 300 }),
      fc.uint8Array({ maxLength: 80 }),
      async (ikmR, ekm, info, pt, aad) => {
        const rWeb = await web.hpke.deriveKeyPair(KemType.xwing, ikmR);
        const rNode = await node.hpke.deriveKeyPair(KemType.xwing, ikmR);
        assert.is(hex(rNode.publicKey), hex(rWeb.publicKey), "DeriveKeyPair");
        const pkWeb = await web.hpke.importPublicKey(KemType.xwing, rWeb.publicKey);
        const pkNode = await node.hpke.importPublicKey(KemType.xwing, rWeb.publicKey);
        const sWeb = await web.hpke.createSender(pkWeb, info, ekm);
        const sNode = await node.hpke.createSender(pkNode, info, ekm);
        assert.is(hex(sNode.enc), hex(sWeb.enc), "enc");
        const ctWeb = await sWeb.seal(pt, aad);
        assert.is(hex(await sNode.seal(pt, aad)), hex(ctWeb), "ciphertext");
        const fNode = await node.hpke.createSender(pkNode, info);
        const fWeb = await web.hpke.createSender(pkWeb, info);
        assert.is(hex(await rWeb.open(fNode.enc, info, aad, await fNode.seal(pt, aad))), hex(pt), "default opens node's seal");
        assert.is(hex(await rNode.open(fWeb.enc, info, aad, await fWeb.seal(pt, aad))), hex(pt), "node opens default's seal");
        // a flipped enc bit or another aad does not open, on either
        const bad = sWeb.enc.slice();
        bad[7]! ^= 0x80;
        for (const [n, r] of [
          ["default", rWeb],
          ["node", rNode],
        ] as const) {
          assert.is.not(await outcome(() => r.open(bad, info, aad, ctWeb)), "none", `${n}: flipped enc`);
          assert.is.not(await outcome(() => r.open(sWeb.enc, info, concat(aad, new Uint8Array([0])), ctWeb)), "none", `${n}: other aad`);
        }
      },
    ),
    { numRuns: 8 },
  );
});

// ------------------------------------------------------------- hostile keys in a hello

/** An X-Wing public key whose first ML-KEM coefficient is 4095 ≥ q = 3329 (FIPS 203 §7.2 modulus check). */
function offModulus(): Uint8Array {
  const pk = unhex(DRAFT.vectors[0]!.pk);
  pk[0] = 0xff;
  pk[1] = pk[1]! | 0x0f;
  return pk;
}

test("X-Wing keys in a hello: wrong length, an ML-KEM key that fails the modulus check and a small-order X25519 share get bad_request, the same on both engines", async () => {
  const server = await generateSigningKey(KeyType.ed25519);
  const offer = { key: server, source: "ws://127.0.0.1/" };
  const h = await createHello(await generateSigningKey());
  const withKem = (data: Uint8Array) => {
    const o = { ...h.hello, kem: { type: "X-Wing", data: Buffer.from(data).toString("base64url") } } as Hello;
    return () => acceptHello(utf8(JSON.stringify(o)), o, offer);
  };
  const good = unhex(DRAFT.vectors[1]!.pk);
  assert.is(await same(withKem(good), "the draft's key"), "none");
  assert.is(await same(withKem(good.subarray(0, 1215)), "1215 bytes"), 'bad_request: "kem.data" expected 1216 bytes for X-Wing');
  assert.is(await same(withKem(concat(good, new Uint8Array(1))), "1217 bytes"), 'bad_request: "kem.data" expected at most 1216 bytes');
  assert.is(await same(withKem(new Uint8Array(0)), "empty"), 'bad_request: "kem.data" expected 1216 bytes for X-Wing');
  assert.is(await same(withKem(offModulus()), "coefficient ≥ q"), 'bad_request: "kem.data" is not a usable X-Wing public key');
  for (const low of ["0000000000000000000000000000000000000000000000000000000000000000", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"]) {
    assert.is(await same(withKem(concat(good.subarray(0, 1184), unhex(low))), low), 'bad_request: "kem.data" is not a usable X-Wing public key', low);
  }
  // the X25519 blocklist applies to X-Wing's X25519 share only, not to a key that merely ends like one elsewhere
  const tricky = good.slice();
  tricky.set(new Uint8Array(32), 1000);
  assert.is(await same(withKem(tricky), "zeros inside the ML-KEM key"), "none");
});

test("an over-long X-Wing kem.data (beyond 1216 bytes of base64url) is refused before any KEM work", async () => {
  const server = await generateSigningKey(KeyType.ed25519);
  const h = await createHello(await generateSigningKey());
  const o = { ...h.hello, kem: { type: "X-Wing", data: Buffer.from(randomBytes(1500)).toString("base64url") } } as Hello;
  const r = await outcome(() => acceptHello(utf8(JSON.stringify(o)), o, { key: server, source: "ws://x/" }));
  assert.is(r, 'bad_request: "kem.data" expected at most 1216 bytes');
});

// ------------------------------------------------------------- whole handshakes

test("an X-Wing handshake with the client on one engine and the server on the other completes, both ways", async () => {
  const server = await generateSigningKey(KeyType.ed25519);
  for (const [client, srv] of [
    [web, node],
    [node, web],
    [node, node],
  ] as const) {
    const what = `client ${client.name}, server ${srv.name}`;
    const id = await generateSigningKey(KeyType.ed25519);
    const h = await on(client, () => createHello(id, { kem: KemType.xwing }));
    assert.is(h.hello.kem.type, "X-Wing");
    assert.is(Buffer.from(h.hello.kem.data, "base64url").length, 1216, what);
    const { challenge, pending } = await on(srv, () => acceptHello(h.bytes, h.hello, { key: server, source: "ws://x/" }));
    assert.is(Buffer.from(challenge.enc, "base64url").length, 1120, what);
    const { proof, state } = await on(client, () => answerChallenge(h, challenge, () => {}));
    const sig = Buffer.from(proof.signature, "base64url");
    assert.ok(await on(srv, () => verifyProof(pending, sig)), what);
    const key = randomBytes(32);
    const grant = { channel: "AAAAAAAAAAAAAAAAAAAAAA", key: { type: "AES-256-GCM" as const, data: Buffer.from(key).toString("base64url") }, valid_until: "2030-01-01T00:00:00.000Z", ttl: 60 };
    const est = await on(srv, () => sealGrant(pending, sig, grant, "ws://x/"));
    assert.is(hex((await on(client, () => openGrant(state, est))).channelKey), hex(key), what);
  }
});
test.run();
