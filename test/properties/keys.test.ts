/**
 * Properties of public keys and signatures (shared/crypto.ts, PROTOCOL.md §3):
 * any wire key either imports or is refused with bad_request / unsupported;
 * an imported key has one encoding and one fingerprint; any change to a key's
 * bytes gives another fingerprint or a refusal; signatures verify only for
 * their own key and message, and verify never throws.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { type KeyType, type SigningKey, KeyType as KT, fingerprint, generateSigningKey, importPublicKey, sign, verify } from "../../shared/crypto.js";
import { b64u } from "../../shared/encoding.js";
import { ErrorCode } from "../../shared/errors.js";
import { params, psimbolsError } from "./support.js";

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;
const keys: Record<KeyType, SigningKey[]> = { Ed25519: [], "ECDSA-P256": [], RSA: [] };

test.before(async () => {
  for (let i = 0; i < 3; i++) {
    keys.Ed25519.push(await generateSigningKey(KT.ed25519));
    keys["ECDSA-P256"].push(await generateSigningKey(KT.p256));
  }
  keys.RSA.push(await generateSigningKey(KT.rsa));
});

const keyType = fc.constantFrom<KeyType>(KT.ed25519, KT.p256, KT.rsa);
const pick = <T>(list: T[], i: number): T => list[i % list.length]!;

test("any {type, data} either imports or is refused with bad_request or unsupported", async () => {
  const wire = fc.oneof(
    fc.anything(),
    fc.record({ type: fc.oneof(keyType, fc.string({ maxLength: 12 })), data: fc.oneof(fc.string({ maxLength: 100 }), fc.uint8Array({ maxLength: 120 }).map(b64u)) }),
  );
  await fc.assert(
    fc.asyncProperty(wire, async (w) => {
      const e = await psimbolsError(() => importPublicKey(w));
      if (e) assert.ok(e.code === ErrorCode.badRequest || e.code === ErrorCode.unsupported, e.code);
    }),
    params(800),
  );
});

test("an imported key has the canonical SPKI given and the fingerprint SHA256:base64(SHA-256(SPKI))", async () => {
  await fc.assert(
    fc.asyncProperty(keyType, fc.nat(), async (t, i) => {
      const k = pick(keys[t], i).public;
      const got = await importPublicKey({ type: t, data: b64u(k.spki) });
      assert.ok(FINGERPRINT.test(got.fingerprint));
      assert.is(got.fingerprint, await fingerprint(k.spki));
      assert.is(got.fingerprint, k.fingerprint);
    }),
    params(100),
  );
});

test("any change to a key's bytes (bit flip, byte change, cut, extension, other type) gives another fingerprint or a refusal", async () => {
  const change = fc.oneof(
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("extend" as const), tail: fc.uint8Array({ minLength: 1, maxLength: 4 }) }),
  );
  await fc.assert(
    fc.asyncProperty(keyType, fc.nat(), change, fc.option(keyType, { nil: undefined }), async (t, i, c, asType) => {
      const k = pick(keys[t], i).public;
      let b = k.spki.slice();
      if (c.kind === "flip") b[c.at % b.length]! ^= 1 << c.bit;
      else if (c.kind === "set") b[c.at % b.length] = c.value;
      else if (c.kind === "cut") b = b.slice(0, c.at % b.length);
      else b = new Uint8Array([...b, ...c.tail]);
      const type = asType ?? t;
      const same = type === t && b.length === k.spki.length && b.every((x, j) => x === k.spki[j]);
      let got: Awaited<ReturnType<typeof importPublicKey>> | undefined;
      const e = await psimbolsError(async () => (got = await importPublicKey({ type, data: b64u(b) })));
      if (e) return assert.ok(e.code === ErrorCode.badRequest || e.code === ErrorCode.unsupported, e.code);
      if (same) return assert.is(got!.fingerprint, k.fingerprint);
      assert.is.not(got!.fingerprint, k.fingerprint, "another encoding of the same key was accepted");
      assert.is(got!.fingerprint, await fingerprint(b));
    }),
    params(1500),
  );
});

test("a signature verifies for its own key and message only", async () => {
  await fc.assert(
    fc.asyncProperty(keyType, fc.nat(), fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ minLength: 1, maxLength: 8 }), async (t, i, msg, tweak) => {
      const k = pick(keys[t], i);
      const other = t === KT.rsa ? keys.Ed25519[0]! : pick(keys[t], i + 1);
      const sig = await sign(k, msg);
      assert.ok(await verify(k.public, sig, msg));
      const msg2 = new Uint8Array([...msg, ...tweak]);
      assert.not.ok(await verify(k.public, sig, msg2), "verified for another message");
      assert.not.ok(await verify(other.public, sig, msg), "verified under another key");
    }),
    params(150),
  );
});

test("verify never throws: any bytes as a signature are just false", async () => {
  await fc.assert(
    fc.asyncProperty(keyType, fc.nat(), fc.uint8Array({ maxLength: 600 }), fc.uint8Array({ maxLength: 64 }), async (t, i, sig, msg) => {
      assert.not.ok(await verify(pick(keys[t], i).public, sig, msg));
    }),
    params(600),
  );
});

test("a flipped bit anywhere in a valid signature makes it fail", async () => {
  await fc.assert(
    fc.asyncProperty(keyType, fc.nat(), fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.integer({ min: 0, max: 7 }), async (t, i, msg, at, bit) => {
      const k = pick(keys[t], i);
      const sig = await sign(k, msg);
      sig[at % sig.length]! ^= 1 << bit;
      assert.not.ok(await verify(k.public, sig, msg));
    }),
    params(300),
  );
});

test.run();
