/**
 * Properties of channel frame protection (shared/channel.ts, PROTOCOL.md §6):
 * the AEAD nonce is injective in (kind, seq) and only defined on 1..MAX_WIRE_SEQ;
 * a sealed frame opens under exactly its own key, kind, seq and channel id,
 * for both channel types (AES-256-GCM and ChaCha20-Poly1305, on the Node engines too);
 * every binding (fresh nonces) has its own keys.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { randomBytes } from "../../shared/crypto.js";
import { b64u, fromB64u } from "../../shared/encoding.js";
import { ErrorCode } from "../../shared/errors.js";
import { FrameKind, deriveTrafficKeys, frameNonce, openFrame, sealFrame, trafficKey, type TrafficKey } from "../../shared/channel.js";
import { ChannelType, MAX_SEQ, MAX_WIRE_SEQ } from "../../shared/frames.js";
import { nodeEngineTrafficKey } from "../../node/engines.js";
import { params, psimbolsError } from "./support.js";

const kind = fc.constantFrom<FrameKind>(FrameKind.request, FrameKind.response, FrameKind.push);
const seq = fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: MAX_SEQ }), fc.integer({ min: 1, max: MAX_WIRE_SEQ }));
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("frameNonce is injective in (kind, seq): distinct frames never share a nonce", () => {
  fc.assert(
    fc.property(kind, seq, kind, seq, (k1, s1, k2, s2) => {
      assert.is(hex(frameNonce(k1, s1)) === hex(frameNonce(k2, s2)), k1 === k2 && s1 === s2);
    }),
    params(5000),
  );
});

test("frameNonce refuses seq outside 1..MAX_WIRE_SEQ with RangeError", () => {
  const bad = fc.oneof(fc.integer({ max: 0 }), fc.double({ min: MAX_WIRE_SEQ + 1, max: 2 ** 60 }).map(Math.floor), fc.double().filter((d) => !Number.isInteger(d)), fc.constant(Number.NaN));
  fc.assert(
    fc.property(kind, bad, (k, s) => {
      assert.throws(() => frameNonce(k, s), RangeError);
    }),
    params(1000),
  );
});

/** The engines of each type in this process: WebCrypto's AES-256-GCM, and the Node engines' two types (libsodium's ChaCha20-Poly1305 where it loads). */
const ENGINES: [string, (raw: Uint8Array) => Promise<TrafficKey> | TrafficKey][] = [
  ["AES-256-GCM (WebCrypto)", (raw) => trafficKey(raw)],
  ["AES-256-GCM (node)", (raw) => nodeEngineTrafficKey(raw, ChannelType.aes256gcm)],
  ["ChaCha20-Poly1305 (node)", (raw) => nodeEngineTrafficKey(raw, ChannelType.chacha20poly1305)],
];

for (const [name, make] of ENGINES)
test(`${name}: a sealed frame opens under its own key, kind, seq and channel only; anything else is unauthorised`, async () => {
  const keyA = await make(randomBytes(32));
  const keyB = await make(randomBytes(32));
  const channel = fc.uint8Array({ minLength: 16, maxLength: 16 }).map(b64u);
  await fc.assert(
    fc.asyncProperty(
      kind,
      seq,
      channel,
      fc.string({ maxLength: 200 }),
      fc.constantFrom("key", "kind", "seq", "channel", "bit", "cut"),
      fc.nat(),
      async (k, s, ch, text, change, at) => {
        const ct = await sealFrame(keyA, k, s, ch, text);
        assert.is(await openFrame(keyA, k, s, ch, ct), text);
        let args: [TrafficKey, FrameKind, number, string, string] = [keyA, k, s, ch, ct];
        if (change === "key") args = [keyB, k, s, ch, ct];
        else if (change === "kind") args = [keyA, k === FrameKind.request ? FrameKind.response : FrameKind.request, s, ch, ct];
        else if (change === "seq") args = [keyA, k, s === MAX_WIRE_SEQ ? s - 1 : s + 1, ch, ct];
        else if (change === "channel") args = [keyA, k, s, b64u(randomBytes(16)), ct];
        else {
          const b = fromB64u(ct, "ct");
          const changed = change === "bit" ? (b[at % b.length]! ^= 1 << (at % 8), b) : b.slice(0, at % b.length);
          args = [keyA, k, s, ch, b64u(changed)];
        }
        const e = await psimbolsError(() => openFrame(...args));
        assert.ok(e, `opened after changing the ${change}`);
        // A cut below the tag's length is malformed rather than forged; both refuse.
        assert.ok(e.code === ErrorCode.unauthorised || (change === "cut" && e.code === ErrorCode.badRequest), e.code);
      },
    ),
    params(500),
  );
});

test("every binding has its own traffic keys: other nonces on either side, or another channel id, give other keys", async () => {
  const nonce = fc.uint8Array({ minLength: 16, maxLength: 64 });
  await fc.assert(
    fc.asyncProperty(nonce, nonce, nonce, fc.boolean(), async (nc, ns, other, clientSide) => {
      fc.pre(hex(other) !== hex(clientSide ? nc : ns));
      const key = randomBytes(32);
      const ch = b64u(randomBytes(16));
      const a = await deriveTrafficKeys(key, ch, nc, ns);
      const b = await deriveTrafficKeys(key, ch, clientSide ? other : nc, clientSide ? ns : other);
      const c = await deriveTrafficKeys(key, b64u(randomBytes(16)), nc, ns);
      assert.is.not(hex(a.c2s), hex(a.s2c), "the two directions share a key");
      for (const x of [b, c]) {
        assert.is.not(hex(a.c2s), hex(x.c2s));
        assert.is.not(hex(a.s2c), hex(x.s2c));
      }
      // LP salt: moving a byte from one nonce to the other changes the keys too.
      if (nc.length > 16) {
        const moved = await deriveTrafficKeys(key, ch, nc.slice(0, -1), new Uint8Array([nc.at(-1)!, ...ns]));
        assert.is.not(hex(a.c2s), hex(moved.c2s));
      }
    }),
    params(300),
  );
});

test.run();
