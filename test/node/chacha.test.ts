/**
 * ChaCha20-Poly1305 traffic keys (PROTOCOL.md §6.3): RFC 8439 §2.8.2 on every engine
 * (libsodium through sodium-native, node:crypto), a differential property
 * between them in both directions with every single-bit flip refused, the
 * wipe, and the fallback: a process where sodium-native cannot be imported
 * runs the type on node:crypto with the same bytes, end to end against a
 * broker of its own.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { FrameKind, frameNonce, innerText } from "../../shared/channel.js";
import { b64u } from "../../shared/encoding.js";
import { ChannelType } from "../../shared/frames.js";
import { NodeTrafficKey } from "../../node/aead.js";
import { SodiumTrafficKey, loadSodium, sodiumLoaded } from "../../node/chacha.js";
import { chachaEngine, nodeChannelTypes, nodeEngineTrafficKey } from "../../node/engines.js";
import { connect, generateSigningKey } from "../../client/node.js";
import { startBroker } from "../helpers/broker.js";
import { HIDE_SODIUM } from "../helpers/hide-sodium-url.js";
import { outcome } from "../helpers/refusal.js";
import { skip } from "../helpers/skip.js";

const CC = ChannelType.chacha20poly1305;
const unhex = (s: string) => Uint8Array.from(s.replace(/[^0-9a-f]/g, "").match(/../g) ?? [], (x) => parseInt(x, 16));
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** sodium-native is on disk here (then it must load), or absent (a machine without the optional dependency). */
const installed = (() => {
  try {
    createRequire(import.meta.url).resolve("sodium-native");
    return true;
  } catch {
    return false;
  }
})();

assert.is(sodiumLoaded(), false, "sodium-native is loaded on first use, not when a module is imported");
await loadSodium();

type Engine = { name: string; make: (raw: Uint8Array) => NodeTrafficKey | SodiumTrafficKey };
const ENGINES: Engine[] = [
  { name: "node:crypto", make: (raw) => new NodeTrafficKey(raw, CC) },
  ...(sodiumLoaded() ? [{ name: "libsodium", make: (raw: Uint8Array) => new SodiumTrafficKey(raw) }] : []),
];

function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const c = new Uint8Array(b); // a copy (a Buffer's slice() would be a view)
  c[bit >> 3] = c[bit >> 3]! ^ (1 << (bit & 7));
  return c;
}

test("sodium-native loads where it is installed, and Node then prefers ChaCha20-Poly1305 on libsodium", () => {
  assert.is(sodiumLoaded(), installed);
  assert.is(chachaEngine(), installed ? "libsodium" : "node:crypto");
  assert.equal(nodeChannelTypes(), installed ? [CC, ChannelType.aes256gcm] : [ChannelType.aes256gcm, CC]);
  assert.is(nodeEngineTrafficKey(new Uint8Array(32), CC).constructor.name, installed ? "SodiumTrafficKey" : "NodeTrafficKey");
  assert.is(nodeEngineTrafficKey(new Uint8Array(32), ChannelType.aes256gcm).constructor.name, "NodeTrafficKey");
});

// RFC 8439 §2.8.2: the AEAD_CHACHA20_POLY1305 example.
const RFC = {
  key: unhex("80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f 90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f"),
  nonce: unhex("07 00 00 00 40 41 42 43 44 45 46 47"),
  aad: unhex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7"),
  plaintext: "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  ciphertext: unhex(`
    d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2 a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6
    3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b 1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36
    92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58 fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc
    3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b 61 16`),
  tag: unhex("1a e1 0b 59 4f 09 e2 6a 7e 90 2e cb d0 60 06 91"),
};

test("RFC 8439 §2.8.2: every engine seals the example to its ciphertext and tag, in both frame forms, and opens it", () => {
  const expected = hex(RFC.ciphertext) + hex(RFC.tag);
  for (const e of ENGINES) {
    const k = e.make(RFC.key);
    assert.is(hex(Buffer.from(k.seal(RFC.nonce, RFC.aad, RFC.plaintext), "base64url")), expected, e.name);
    const header = new Uint8Array([1, 2, 3]);
    assert.is(hex(k.sealBinary(RFC.nonce, RFC.aad, RFC.plaintext, header)), "010203" + expected, `${e.name} binary`);
    assert.is(innerText(k.open(RFC.nonce, RFC.aad, new Uint8Array([...RFC.ciphertext, ...RFC.tag]))), RFC.plaintext, e.name);
  }
});

const AGREE = "engines agree byte for byte and open each other's frames, both ways (random keys, nonces, AADs, lengths)";
// A run without sodium-native has one ChaCha20-Poly1305 engine: nothing to compare, and it says so.
if (ENGINES.length < 2) skip(test, AGREE, "one ChaCha20-Poly1305 engine: sodium-native is not loaded");
else test(AGREE, async () => {
  const [a, b] = ENGINES as [Engine, Engine];
  await fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 12, maxLength: 12 }),
      fc.oneof(fc.string({ maxLength: 40 }), fc.uint8Array({ maxLength: 64 })),
      fc.oneof(fc.string({ maxLength: 300 }), fc.string({ minLength: 1000, maxLength: 6000, unit: "grapheme" })),
      fc.uint8Array({ maxLength: 21 }),
      (raw, nonce, aad, text, header) => {
        const ka = a.make(raw);
        const kb = b.make(raw);
        const ta = ka.seal(nonce, aad, text);
        assert.is(kb.seal(nonce, aad, text), ta);
        const ba = ka.sealBinary(nonce, aad, text, header);
        const bb = kb.sealBinary(nonce, aad, text, header);
        assert.is(hex(bb), hex(ba));
        assert.is(b64u(ba.subarray(header.length)), ta, "the binary form carries the text form's bytes");
        assert.is(innerText(kb.open(nonce, aad, ta)), text);
        assert.is(innerText(ka.open(nonce, aad, bb.subarray(header.length))), text);
        ka.wipe();
        kb.wipe();
      },
    ),
    { numRuns: 300 },
  );
});

test("every single-bit flip of ciphertext, tag, nonce or AAD is refused with unauthorised, on every engine", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 12, maxLength: 12 }),
      fc.uint8Array({ minLength: 1, maxLength: 24 }),
      fc.string({ maxLength: 48 }),
      async (raw, nonce, aad, text) => {
        const sealer = ENGINES[0]!.make(raw);
        const ct = sealer.sealBinary(nonce, aad, text, new Uint8Array(0));
        for (const e of ENGINES) {
          const k = e.make(raw);
          for (let bit = 0; bit < ct.length * 8; bit++) assert.is(await outcome(() => k.open(nonce, aad, flipBit(ct, bit))), "unauthorised", `${e.name} ct bit ${bit}`);
          for (let bit = 0; bit < 96; bit++) assert.is(await outcome(() => k.open(flipBit(nonce, bit), aad, ct)), "unauthorised", `${e.name} nonce bit ${bit}`);
          for (let bit = 0; bit < aad.length * 8; bit++) assert.is(await outcome(() => k.open(nonce, flipBit(aad, bit), ct)), "unauthorised", `${e.name} aad bit ${bit}`);
          assert.is(await outcome(() => k.open(nonce, aad, ct.subarray(0, ct.length - 1))), "unauthorised", `${e.name} cut tag`);
          assert.is(innerText(k.open(nonce, aad, ct)), text, `${e.name} the untouched frame opens`);
        }
      },
    ),
    { numRuns: 25 },
  );
});

test("a ChaCha20-Poly1305 key opens nothing sealed under AES-256-GCM with the same key bytes, and the reverse", async () => {
  const raw = new Uint8Array(32).fill(7);
  const nonce = frameNonce(FrameKind.request, 1);
  const aes = new NodeTrafficKey(raw, ChannelType.aes256gcm);
  for (const e of ENGINES) {
    const k = e.make(raw);
    assert.is(await outcome(() => k.open(nonce, "chan", aes.seal(nonce, "chan", "{}"))), "unauthorised", e.name);
    assert.is(await outcome(() => aes.open(nonce, "chan", k.seal(nonce, "chan", "{}"))), "unauthorised", e.name);
  }
});

test("a wiped key seals nothing and opens nothing, on every engine", async () => {
  for (const e of ENGINES) {
    const k = e.make(new Uint8Array(32).fill(9));
    const nonce = frameNonce(FrameKind.push, 5);
    const ct = k.seal(nonce, "chan", "{}");
    k.wipe();
    assert.throws(() => k.seal(nonce, "chan", "{}"), /wiped/, e.name);
    assert.is(await outcome(() => k.open(nonce, "chan", ct)), "unauthorised", e.name);
    k.wipe(); // twice is harmless
  }
  assert.throws(() => ENGINES[0]!.make(new Uint8Array(31)), /32 bytes/);
});

async function until(ok: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.unreachable(`not within ${ms} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs `code` as an ES module in a child Node process; `hide` makes sodium-native unimportable there. */
function child(code: string, hide: boolean): Promise<string> {
  const args = [...(hide ? ["--import", HIDE_SODIUM] : []), "--input-type=module", "-e", code];
  return new Promise((resolve, reject) =>
    execFile(process.execPath, args, { cwd: fileURLToPath(new URL("../../", import.meta.url)) }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout.trim()))),
  );
}

test("with sodium-native hidden, Node runs ChaCha20-Poly1305 on node:crypto and seals the same bytes", async () => {
  const sealedHere = ENGINES[ENGINES.length - 1]!.make(RFC.key).seal(frameNonce(FrameKind.response, 3), "a channel", "é ✓ 😀 {}");
  const out = await child(
    `import { chachaEngine, nodeChannelTypes, nodeEngineTrafficKey } from "./node/engines.js";
     import { loadSodium } from "./node/chacha.js";
     await loadSodium();
     import { frameNonce } from "./shared/channel.js";
     const k = nodeEngineTrafficKey(new Uint8Array(${JSON.stringify([...RFC.key])}), "ChaCha20-Poly1305");
     console.log(JSON.stringify({ engine: chachaEngine(), types: nodeChannelTypes(), key: k.constructor.name, sealed: k.seal(frameNonce(2, 3), "a channel", "é ✓ 😀 {}") }));`,
    true,
  );
  const r = JSON.parse(out) as { engine: string; types: string[]; key: string; sealed: string };
  assert.is(r.engine, "node:crypto");
  assert.equal(r.types, [ChannelType.aes256gcm, CC], "without libsodium, AES-256-GCM (cheaper on node:crypto) comes first");
  assert.is(r.key, "NodeTrafficKey");
  assert.is(r.sealed, sealedHere, "the same bytes as this process's engine");
});

test("with sodium-native hidden in the broker, a client that offers ChaCha20-Poly1305 only gets it and works against it", async () => {
  const broker = await startBroker([], { env: { NODE_OPTIONS: `--import=${HIDE_SODIUM}` } });
  try {
    await until(() => /ChaCha20-Poly1305 on node:crypto/.test(broker.output()), 5000, broker.output);
    const c = await connect(broker.url, { key: await generateSigningKey(), serverKey: broker.fingerprint, channelTypes: [CC], knownServersFile: false });
    try {
      assert.is(c.channel?.channelType, CC);
      assert.equal(await c.request("echo", { x: "é".repeat(3000) }), { x: "é".repeat(3000) });
    } finally {
      await c.close();
    }
  } finally {
    await broker.stop();
  }
});

test.run();
