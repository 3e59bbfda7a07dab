/**
 * The node:crypto handshake engine (node/handshake-crypto.ts):
 * RFC 9180's published vectors for its HPKE code, and the engine against the
 * default one (WebCrypto and @hpke/core): the same bytes from the same
 * inputs, each opens and verifies what the other sealed and signed, and both
 * refuse the same keys with the same code and message. test/vectors runs the
 * protocol's own vectors on it (conformance.test.ts, child process).
 */
import { node, on, outcome, same, web } from "../helpers/engines.js";
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  type HandshakeCrypto,
  KeyType,
  type SigningKey,
  generateSigningKey,
  handshakeCrypto,
  importSpki,
  randomBytes,
  sign,
  verify,
} from "../../shared/crypto.js";
import { concat, utf8 } from "../../shared/encoding.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type Hello, KemType } from "../../shared/frames.js";
import { acceptHello, answerChallenge, createHello, openGrant, sealGrant, verifyProof } from "../../shared/handshake.js";
import {
  decapX25519,
  deriveKeyPairX25519,
  encapX25519,
  keyScheduleBase,
  openFirst,
  sealFirst,
  x25519PrivateKey,
} from "../../node/handshake-crypto.js";
import { createPublicKey } from "node:crypto";

const engines: [string, HandshakeCrypto][] = [
  ["webcrypto", web],
  ["node:crypto", node],
];

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));


// ------------------------------------------------------------- RFC 9180 A.1.1

/** RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, mode_base (the RFC's values). */
const A1 = {
  info: "4f6465206f6e2061204772656369616e2055726e",
  ikmE: "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
  pkEm: "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
  skEm: "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
  ikmR: "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
  pkRm: "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
  skRm: "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
  enc: "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
  sharedSecret: "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
  key: "4531685d41d65f03dc48f6b8302c05b0",
  baseNonce: "56d890e5accaaf011cff4b7d",
  // sequence 0
  pt: "4265617574792069732074727574682c20747275746820626561757479",
  aad: "436f756e742d30",
  ct: "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
};
const AES128GCM = 0x0001;
const x25519PublicOf = (raw: Uint8Array) => createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(raw).toString("base64url") }, format: "jwk" });

test("RFC 9180 A.1.1: DeriveKeyPair gives both published key pairs", () => {
  for (const [ikm, sk, pk] of [
    [A1.ikmE, A1.skEm, A1.pkEm],
    [A1.ikmR, A1.skRm, A1.pkRm],
  ] as const) {
    const pair = deriveKeyPairX25519(unhex(ikm));
    assert.is(hex(pair.publicKey), pk);
    assert.is(hex(Buffer.from(pair.privateKey.export({ format: "jwk" }).d!, "base64url")), sk);
  }
});

test("RFC 9180 A.1.1: Encap (ekm = ikmE) and Decap give the published enc and shared secret", () => {
  const pkRm = unhex(A1.pkRm);
  const { enc, shared } = encapX25519(x25519PublicOf(pkRm), pkRm, unhex(A1.ikmE));
  assert.is(hex(enc), A1.enc);
  assert.is(hex(shared), A1.sharedSecret);
  assert.is(hex(decapX25519(unhex(A1.enc), x25519PrivateKey(unhex(A1.skRm)), pkRm)), A1.sharedSecret);
});

test("RFC 9180 A.1.1: the key schedule gives the published key and base nonce, and sequence 0 seals to the published ciphertext", () => {
  const { key, baseNonce } = keyScheduleBase(Buffer.from(unhex(A1.sharedSecret)), unhex(A1.info), AES128GCM);
  assert.is(hex(key), A1.key);
  assert.is(hex(baseNonce), A1.baseNonce);
  assert.is(hex(sealFirst(AES128GCM, key, baseNonce, unhex(A1.pt), unhex(A1.aad))), A1.ct);
  assert.is(hex(key), "00".repeat(16), "the AEAD key is wiped after the seal");
});

test("RFC 9180 A.1.1: the recipient (skRm) opens the published ciphertext, and refuses it with another aad", () => {
  const pkRm = unhex(A1.pkRm);
  const skR = x25519PrivateKey(unhex(A1.skRm));
  const open = (aad: string) => {
    const { key, baseNonce } = keyScheduleBase(decapX25519(unhex(A1.enc), skR, pkRm), unhex(A1.info), AES128GCM);
    return openFirst(AES128GCM, key, baseNonce, unhex(A1.ct), unhex(aad));
  };
  assert.is(hex(open(A1.aad)), A1.pt);
  assert.throws(() => open("436f756e742d31"));
});

// ------------------------------------------------------------- differential

test("sha256 and hkdf: the same bytes on random inputs", async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 1, max: 255 }), async (ikm, salt, info, n) => {
      assert.is(hex(await node.sha256(ikm)), hex(await web.sha256(ikm)));
      assert.is(hex(await node.hkdf(ikm, salt, info, n)), hex(await web.hkdf(ikm, salt, info, n)));
    }),
    { numRuns: 200 },
  );
});

test("HPKE: the same ekm gives the same enc and ciphertext, and each engine opens what the other sealed (X25519 and P-256)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom<KemType>(KemType.x25519, KemType.x25519, KemType.p256),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 1, maxLength: 300 }),
      fc.uint8Array({ maxLength: 80 }),
      async (kem, ikmR, ekm, info, pt, aad) => {
        // the recipient's pair, derived alike on both engines
        const rWeb = await web.hpke.deriveKeyPair(kem, ikmR);
        const rNode = await node.hpke.deriveKeyPair(kem, ikmR);
        assert.is(hex(rNode.publicKey), hex(rWeb.publicKey), "DeriveKeyPair");
        const pkWeb = await web.hpke.importPublicKey(kem, rWeb.publicKey);
        const pkNode = await node.hpke.importPublicKey(kem, rWeb.publicKey);
        const sWeb = await web.hpke.createSender(pkWeb, info, ekm);
        const sNode = await node.hpke.createSender(pkNode, info, ekm);
        assert.is(hex(sNode.enc), hex(sWeb.enc), "enc");
        const ctWeb = await sWeb.seal(pt, aad);
        const ctNode = await sNode.seal(pt, aad);
        assert.is(hex(ctNode), hex(ctWeb), "ciphertext");
        // fresh ephemeral keys: each opens the other's
        const fNode = await node.hpke.createSender(pkNode, info);
        const fWeb = await web.hpke.createSender(pkWeb, info);
        assert.is(hex(await rWeb.open(fNode.enc, info, aad, await fNode.seal(pt, aad))), hex(pt), "default opens node's seal");
        assert.is(hex(await rNode.open(fWeb.enc, info, aad, await fWeb.seal(pt, aad))), hex(pt), "node opens default's seal");
        // a sender given the other engine's key handle imports it again from its bytes
        const cross = await node.hpke.createSender(pkWeb, info, ekm);
        assert.is(hex(cross.enc), hex(sWeb.enc), "cross-engine recipient key");
      },
    ),
    { numRuns: 60 },
  );
});

test("HPKE: fresh key pairs of each engine open the other engine's seal; a flipped bit or another aad does not open on either", async () => {
  for (const [gen, sender] of [
    [node, web],
    [web, node],
  ] as const) {
    const pair = await gen.hpke.generateKeyPair(KemType.x25519);
    const pk = await sender.hpke.importPublicKey(KemType.x25519, pair.publicKey);
    const info = randomBytes(32);
    const s = await sender.hpke.createSender(pk, info);
    const ct = await s.seal(utf8("grant"), utf8("aad"));
    assert.is(Buffer.from(await pair.open(s.enc, info, utf8("aad"), ct)).toString(), "grant");
    const flipped = ct.slice();
    flipped[3]! ^= 1;
    for (const [what, f] of [
      ["flipped bit", () => pair.open(s.enc, info, utf8("aad"), flipped)],
      ["other aad", () => pair.open(s.enc, info, utf8("AAD"), ct)],
      ["other info", () => pair.open(s.enc, randomBytes(32), utf8("aad"), ct)],
      ["cut tag", () => pair.open(s.enc, info, utf8("aad"), ct.slice(0, 15))],
    ] as const) {
      let threw = false;
      try {
        await f();
      } catch {
        threw = true;
      }
      assert.ok(threw, `${gen.name} pair, ${what}`);
    }
  }
});

test("HPKE: a sender context seals one message only, on both engines", async () => {
  for (const [name, e] of engines) {
    const pair = await e.hpke.generateKeyPair(KemType.x25519);
    const s = await e.hpke.createSender(await e.hpke.importPublicKey(KemType.x25519, pair.publicKey), new Uint8Array(0));
    await s.seal(utf8("one"), new Uint8Array(0));
    assert.is(await outcome(() => s.seal(utf8("two"), new Uint8Array(0))), "internal: this HPKE sender context has sealed its one message", name);
  }
});

test("node:crypto outputs are arrays of their own, not views into Node's shared Buffer pool (which .buffer would expose)", async () => {
  const own = (u: Uint8Array, what: string) => assert.ok(u.byteOffset === 0 && u.buffer.byteLength === u.length, what);
  const pair = await node.hpke.generateKeyPair(KemType.x25519);
  own(pair.publicKey, "KEM public key");
  own((await node.hpke.deriveKeyPair(KemType.x25519, randomBytes(32))).publicKey, "derived KEM public key");
  const s = await node.hpke.createSender(await node.hpke.importPublicKey(KemType.x25519, pair.publicKey), new Uint8Array(0));
  own(s.enc, "enc");
  const ct = await s.seal(utf8("grant"), new Uint8Array(0));
  own(ct, "ciphertext");
  own(await pair.open(s.enc, new Uint8Array(0), new Uint8Array(0), ct), "opened plaintext");
  own(await node.sha256(utf8("x")), "sha256");
  own(await node.hkdf(utf8("x"), utf8("s"), utf8("i"), 42), "hkdf");
  own(await node.sign(await generateSigningKey(), utf8("m")), "signature");
});

const keys: Partial<Record<KeyType, SigningKey>> = {};
async function signingKey(t: KeyType): Promise<SigningKey> {
  return (keys[t] ??= await generateSigningKey(t));
}

test("signatures: Ed25519 signatures are the same bytes; every type signed on one engine verifies on the other", async () => {
  for (const t of [KeyType.ed25519, KeyType.p256, KeyType.rsa]) {
    const k = await signingKey(t);
    const pubWeb = await on(web, () => importSpki(t, k.public.spki));
    const pubNode = await on(node, () => importSpki(t, k.public.spki));
    assert.is(pubNode.fingerprint, pubWeb.fingerprint, t);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), fc.nat(), async (msg, at) => {
        const a = await web.sign(k, msg);
        const b = await node.sign(k, msg);
        if (t === KeyType.ed25519) assert.is(hex(b), hex(a), "Ed25519 is deterministic");
        for (const pub of [pubWeb, pubNode, k.public]) {
          for (const [name, e] of engines) {
            assert.ok(await e.verify(pub, a, msg), `${t}: ${name} verifies the default's signature`);
            assert.ok(await e.verify(pub, b, msg), `${t}: ${name} verifies node's signature`);
          }
        }
        // a flipped bit fails on both
        const bad = b.slice();
        bad[at % bad.length]! ^= 1 << at % 8;
        for (const [name, e] of engines) assert.not.ok(await e.verify(pubNode, bad, msg), `${t}: ${name} refuses a flipped bit`);
      }),
      { numRuns: t === KeyType.rsa ? 10 : 60 },
    );
  }
});

test("signatures: both engines give the same verdict on malformed signatures (wrong length, empty, S ≥ L, all zero)", async () => {
  const k = await signingKey(KeyType.ed25519);
  const msg = utf8("message");
  const good = await web.sign(k, msg);
  const highS = good.slice();
  highS.set(new Uint8Array(32).fill(0xff), 32);
  for (const sig of [new Uint8Array(0), good.slice(0, 63), concat(good, new Uint8Array([0])), new Uint8Array(64), highS]) {
    // Refused by both (not merely alike): a verify that passed would be "internal: verified" on both.
    const verdict = await same(async () => {
      if (await verify(await importSpki(KeyType.ed25519, k.public.spki), sig, msg)) throw new PsimbolsError(ErrorCode.internal, "verified");
    }, `signature of ${sig.length} bytes`);
    assert.is(verdict, "none", `signature of ${sig.length} bytes`);
  }
});

test("signatures: neither engine signs with a public key posing as the private one", async () => {
  const k = await signingKey(KeyType.ed25519);
  const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])) as CryptoKeyPair;
  const posing: SigningKey = { public: k.public, privateKey: pair.publicKey };
  for (const [name, e] of engines) {
    let err: unknown;
    try {
      await e.sign(posing, utf8("m"));
    } catch (x) {
      err = x;
    }
    assert.is((err as Error | undefined)?.name, "InvalidAccessError", name);
  }
});

// ------------------------------------------------------------- rejections

const ED25519_PREFIX = unhex("302a300506032b6570032100");
/** libsodium's small-order blocklist (as shared/crypto.ts), each also with the sign bit set. */
const SMALL_ORDER = [
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "0000000000000000000000000000000000000000000000000000000000000000",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].flatMap((h) => {
  const b = unhex(h);
  const s = b.slice();
  s[31]! |= 0x80;
  return [b, s];
});

/** DER of an RSA SubjectPublicKeyInfo with the given modulus and exponent. */
function rsaSpki(n: Uint8Array, e: Uint8Array): Uint8Array {
  const len = (k: number) => (k < 128 ? new Uint8Array([k]) : k < 256 ? new Uint8Array([0x81, k]) : new Uint8Array([0x82, k >> 8, k & 255]));
  const tlv = (t: number, v: Uint8Array) => concat(new Uint8Array([t]), len(v.length), v);
  const int = (v: Uint8Array) => tlv(0x02, v[0]! & 0x80 ? concat(new Uint8Array([0]), v) : v);
  const alg = tlv(0x30, concat(tlv(0x06, unhex("2a864886f70d010101")), new Uint8Array([0x05, 0x00])));
  return tlv(0x30, concat(alg, tlv(0x03, concat(new Uint8Array([0]), tlv(0x30, concat(int(n), int(e)))))));
}
function modulus(bits: number): Uint8Array {
  const n = randomBytes(bits / 8);
  n[0]! |= 0x80;
  n[n.length - 1]! |= 1;
  return n;
}

test("keys: small-order Ed25519 points are refused alike (bad_request)", async () => {
  for (const point of SMALL_ORDER) {
    const r = await same(() => importSpki(KeyType.ed25519, concat(ED25519_PREFIX, point)), hex(point));
    assert.is(r, 'bad_request: "public_key" is a small-order Ed25519 point', hex(point));
  }
});

test("keys: non-canonical, mislabelled and wrong-length SPKIs and weak RSA keys are refused alike, with the same code and message", async () => {
  const ed = (await signingKey(KeyType.ed25519)).public.spki;
  const p256 = (await signingKey(KeyType.p256)).public.spki;
  const longForm = concat(unhex("30812a"), ed.subarray(2)); // the same key, length in long form
  const cases: [string, KeyType, Uint8Array, string][] = [
    ["Ed25519 SPKI, long-form DER length", KeyType.ed25519, longForm, "bad_request"],
    ["raw 32-byte Ed25519 key", KeyType.ed25519, ed.subarray(12), "bad_request"],
    ["Ed25519 SPKI one byte short", KeyType.ed25519, ed.subarray(0, 43), "bad_request"],
    ["Ed25519 SPKI with a trailing byte", KeyType.ed25519, concat(ed, new Uint8Array([0])), "bad_request"],
    ["P-256 SPKI labelled Ed25519", KeyType.ed25519, p256, "bad_request"],
    ["Ed25519 SPKI labelled ECDSA-P256", KeyType.p256, ed, "bad_request"],
    ["Ed25519 SPKI labelled RSA", KeyType.rsa, ed, "bad_request"],
    ["P-256 point off the curve", KeyType.p256, concat(p256.subarray(0, 27), randomBytes(64)), "bad_request"],
    ["RSA-1024", KeyType.rsa, rsaSpki(modulus(1024), unhex("010001")), "bad_request"],
    ["RSA-2048, e = 1", KeyType.rsa, rsaSpki(modulus(2048), unhex("01")), "bad_request"],
    ["RSA-2048, even e", KeyType.rsa, rsaSpki(modulus(2048), unhex("010000")), "bad_request"],
    ["RSA-2048, e = 65537 (accepted)", KeyType.rsa, rsaSpki(modulus(2048), unhex("010001")), "none"],
    ["a valid Ed25519 key (accepted)", KeyType.ed25519, ed, "none"],
  ];
  for (const [what, type, spki, code] of cases) {
    const r = await same(() => importSpki(type, spki), what);
    assert.is(r.split(":")[0], code, `${what}: ${r}`);
  }
});

test("keys: on random and mutated SPKIs both engines accept and refuse alike", async () => {
  const valid: [KeyType, Uint8Array][] = [];
  for (const t of [KeyType.ed25519, KeyType.p256, KeyType.rsa]) valid.push([t, (await signingKey(t)).public.spki]);
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        // any 32 bytes under the Ed25519 header: points and non-points alike
        fc.uint8Array({ minLength: 32, maxLength: 32 }).map((k) => [KeyType.ed25519, concat(ED25519_PREFIX, k)] as const),
        // a valid SPKI of some type with one byte changed, cut, or extended, imported as any type
        fc
          .tuple(fc.nat(2), fc.nat(), fc.integer({ min: 1, max: 255 }), fc.nat(2), fc.constantFrom("flip", "cut", "extend"))
          .map(([i, at, x, as, how]) => {
            const [, spki] = valid[i]!;
            let b: Uint8Array = spki.slice();
            if (how === "flip") b[at % b.length]! ^= x;
            else if (how === "cut") b = b.slice(0, at % b.length);
            else b = concat(b, new Uint8Array([x]));
            return [valid[as]![0], b] as const;
          }),
      ),
      async ([type, spki]) => {
        await same(() => importSpki(type, spki), `${type} ${hex(spki)}`);
      },
    ),
    { numRuns: 300 },
  );
});

test("KEM keys: wrong length, low-order X25519 and off-curve P-256 keys in a hello get the same error on both engines", async () => {
  const server = await signingKey(KeyType.ed25519);
  const offer = { key: server, source: "ws://127.0.0.1/" };
  const h = await createHello(await generateSigningKey());
  const withKem = (kem: string, data: Uint8Array) => {
    const o = { ...h.hello, kem: { type: kem, data: Buffer.from(data).toString("base64url") } } as Hello;
    return () => acceptHello(utf8(JSON.stringify(o)), o, offer);
  };
  const lowOrder = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000080", // bit 255 is ignored by X25519
  ];
  for (const l of lowOrder) assert.is(await same(withKem("X25519", unhex(l)), l), 'bad_request: "kem.data" is not a usable X25519 public key', l);
  assert.is(await same(withKem("X25519", randomBytes(31)), "31 bytes"), 'bad_request: "kem.data" expected 32 bytes for X25519');
  assert.is(await same(withKem("X25519", randomBytes(33)), "33 bytes"), 'bad_request: "kem.data" expected 32 bytes for X25519');
  const offCurve = await same(withKem("P-256", concat(new Uint8Array([4]), randomBytes(64))), "P-256 off the curve");
  assert.ok(offCurve.startsWith("bad_request:"), offCurve);
  assert.is(await same(withKem("X25519", (await web.hpke.generateKeyPair(KemType.x25519)).publicKey), "valid"), "none");
});

test("KEM keys: each engine's own sender and recipient refuse a low-order X25519 key (all-zero DH), without the handshake's blocklist", async () => {
  for (const [name, e] of engines) {
    const pk = await e.hpke.importPublicKey(KemType.x25519, new Uint8Array(32));
    let threw = false;
    try {
      await e.hpke.createSender(pk, new Uint8Array(0));
    } catch {
      threw = true;
    }
    assert.ok(threw, `${name}: sender to an all-zero key`);
    // The recipient must fail at decap, before the AEAD: its error differs from the AEAD failure of a
    // usable enc with the same bogus ciphertext (which would refuse either way).
    const pair = await e.hpke.generateKeyPair(KemType.x25519);
    const failure = async (enc: Uint8Array) => {
      try {
        await pair.open(enc, new Uint8Array(0), new Uint8Array(0), new Uint8Array(32));
        return "none";
      } catch (x) {
        return `${(x as Error).name}: ${(x as Error).message}`;
      }
    };
    const zero = await failure(new Uint8Array(32));
    assert.is.not(zero, "none", `${name}: recipient of an all-zero enc`);
    assert.is.not(zero, await failure(new Uint8Array(32).fill(9)), `${name}: an all-zero enc fails at decap, not at the AEAD`);
  }
});

// ------------------------------------------------------------- whole handshakes

test("a handshake with the client on one engine and the server on the other completes, both ways (every identity type, both KEMs)", async () => {
  const server = await signingKey(KeyType.ed25519);
  for (const t of [KeyType.ed25519, KeyType.p256, KeyType.rsa]) {
    for (const kem of [KemType.x25519, KemType.p256]) {
      for (const [client, srv] of [
        [web, node],
        [node, web],
      ] as const) {
        const what = `${t}, ${kem}, client ${client.name}, server ${srv.name}`;
        const id = await signingKey(t);
        const h = await on(client, () => createHello(id, { kem }));
        const { challenge, pending } = await on(srv, () => acceptHello(h.bytes, h.hello, { key: server, source: "ws://x/" }));
        const { proof, state } = await on(client, () => answerChallenge(h, challenge, () => {}));
        const sig = Buffer.from(proof.signature, "base64url");
        assert.ok(await on(srv, () => verifyProof(pending, sig)), what);
        const key = randomBytes(32);
        const grant = { channel: "AAAAAAAAAAAAAAAAAAAAAA", key: { type: "AES-256-GCM" as const, data: Buffer.from(key).toString("base64url") }, valid_until: "2030-01-01T00:00:00.000Z", ttl: 60 };
        const est = await on(srv, () => sealGrant(pending, sig, grant, "ws://x/"));
        const opened = await on(client, () => openGrant(state, est));
        assert.is(hex(opened.channelKey), hex(key), what);
        // and the proof of another identity does not verify on either
        const other = await on(client, async () => sign(await signingKey(t === KeyType.ed25519 ? KeyType.p256 : KeyType.ed25519), sig));
        assert.not.ok(await on(srv, () => verifyProof(pending, other)), what);
      }
    }
  }
});

// ------------------------------------------------------------- installation

test("importing a module installs no engine; Broker.start and the Node connect select node:crypto explicitly", () => {
  assert.is(handshakeCrypto(), web, "this file installs nothing");
  const dist = fileURLToPath(new URL("../../", import.meta.url));
  const probe = (script: string) =>
    execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env: { ...process.env, PSIMBOLS_LOG_LEVEL: "error" } }).trim();
  const engine = `const { handshakeCrypto } = await import(${JSON.stringify(`${dist}shared/crypto.js`)}); const { trafficKey } = await import(${JSON.stringify(`${dist}shared/channel.js`)});`;
  const show = `console.log(handshakeCrypto().name, (await trafficKey(new Uint8Array(32))).constructor.name);`;
  for (const entry of ["client/node.js", "server/index.js", "cli/main.js", "node/key-files.js"]) {
    assert.is(probe(`await import(${JSON.stringify(`${dist}${entry}`)}); ${engine} ${show}`), "webcrypto Object", entry);
  }
  const started = probe(
    `const { Broker } = await import(${JSON.stringify(`${dist}server/index.js`)}); const { generateSigningKey } = await import(${JSON.stringify(`${dist}shared/crypto.js`)}); ${engine}` +
      ` const b = await Broker.start({ serverKey: await generateSigningKey(), config: { port: 0 } }); ${show} await b.close();`,
  );
  assert.is(started, "node:crypto NodeTrafficKey", "after Broker.start");
});

test.run();
