/**
 * The node:crypto engine for traffic keys against the WebCrypto one: the same
 * bytes on the wire, each opens what the other sealed, and both refuse the
 * same forgeries with the same codes.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { FrameKind, frameNonce, innerText, webCryptoTrafficKey } from "../../shared/channel.js";
import { randomBytes } from "../../shared/crypto.js";
import { b64u, fromB64u } from "../../shared/encoding.js";
import { NodeTrafficKey, nodeTrafficKey } from "../../node/aead.js";
import { outcome } from "../helpers/refusal.js";

test("node:crypto and WebCrypto seal to the same bytes and open each other's frames", async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 1, max: 2 ** 24 }), fc.string({ maxLength: 300 }), async (raw, seq, text) => {
      const web = await webCryptoTrafficKey(raw);
      const node = nodeTrafficKey(raw);
      const nonce = frameNonce(FrameKind.request, seq);
      const a = await web.seal(nonce, "chan", text);
      const b = await node.seal(nonce, "chan", text);
      assert.is(b, a);
      assert.is(innerText(await node.open(nonce, "chan", a)), text);
      assert.is(innerText(await web.open(nonce, "chan", b)), text);
    }),
    { numRuns: 200 },
  );
});

test("binary frames: both engines seal header || ciphertext || tag alike, the same ciphertext as the text form, and open each other's bytes", async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 1, max: 2 ** 24 }), fc.string({ maxLength: 300 }), fc.uint8Array({ maxLength: 21 }), async (raw, seq, text, header) => {
      const web = await webCryptoTrafficKey(raw);
      const node = nodeTrafficKey(raw);
      const nonce = frameNonce(FrameKind.push, seq);
      const a = await web.sealBinary(nonce, "chan", text, header);
      const b = await node.sealBinary(nonce, "chan", text, header);
      assert.equal([...b], [...a]);
      assert.equal([...a.subarray(0, header.length)], [...header]);
      const ct = a.subarray(header.length);
      assert.is(b64u(ct), await web.seal(nonce, "chan", text));
      assert.is(innerText(await node.open(nonce, "chan", ct)), text);
      assert.is(innerText(await web.open(nonce, "chan", new Uint8Array(b).subarray(header.length))), text);
    }),
    { numRuns: 200 },
  );
});

test("both engines refuse a flipped bit, another nonce, another AAD and a cut tag alike", async () => {
  const raw = randomBytes(32);
  const web = await webCryptoTrafficKey(raw);
  const node = nodeTrafficKey(raw);
  const nonce = frameNonce(FrameKind.response, 7);
  const ct = await node.seal(nonce, "chan", '{"data":1}');
  const bytes = fromB64u(ct, "ct");
  const cases: [string, Uint8Array, string, string][] = [
    ["flipped bit", nonce, "chan", b64u(bytes.map((x, i) => (i === 3 ? x ^ 1 : x)))],
    ["other nonce", frameNonce(FrameKind.push, 7), "chan", ct],
    ["other AAD", nonce, "other", ct],
    ["cut tag", nonce, "chan", b64u(bytes.slice(0, bytes.length - 1))],
    ["shorter than a tag", nonce, "chan", b64u(bytes.slice(0, 8))],
    ["padding", nonce, "chan", ct + "="],
  ];
  for (const [name, n, aad, c] of cases) {
    const w = await outcome(() => web.open(n, aad, c));
    const d = await outcome(() => node.open(n, aad, c));
    assert.is.not(d, "none", name);
    assert.is(d, w, name);
    // the same ciphertext as bytes (a binary frame) is refused alike
    if (name === "padding") continue;
    const bin = fromB64u(c, "ct");
    const wb = await outcome(() => web.open(n, aad, bin));
    const db = await outcome(() => node.open(n, aad, bin));
    assert.is.not(db, "none", `${name} (bytes)`);
    assert.is(db, wb, `${name} (bytes)`);
  }
});

test("a key must be 32 bytes", () => {
  assert.throws(() => nodeTrafficKey(new Uint8Array(16)), /32 bytes/);
});

test("a wiped key seals nothing and opens nothing (unauthorised), even what it sealed before", async () => {
  const raw = randomBytes(32);
  const key = new NodeTrafficKey(raw);
  raw.fill(0); // the key has its own copy
  const nonce = frameNonce(FrameKind.push, 3);
  const ct = key.seal(nonce, "chan", "hello");
  assert.is(innerText(key.open(nonce, "chan", ct)), "hello");
  key.wipe();
  key.wipe();
  assert.throws(() => key.seal(nonce, "chan", "hello"), /wiped/);
  assert.is(await outcome(() => key.open(nonce, "chan", ct)), "unauthorised");
});

test.run();
