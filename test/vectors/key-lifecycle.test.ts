/**
 * Conformance of the key lifecycle vectors (test/vectors/key-lifecycle.json,
 * docs/PROTOCOL.md §5.6, §5.7): rebuilt byte for byte from their fixed inputs,
 * and checked from the file alone, as another implementation would.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { KeyType, importPkcs8, importPublicKey } from "../../shared/crypto.js";
import { fromB64u, utf8 } from "../../shared/encoding.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type Challenge, type Hello, decodeClientFrame, decodeServerFrame } from "../../shared/frames.js";
import { acceptHello, verifyMoveProof, verifyProof } from "../../shared/handshake.js";
import { nextKeyStatement, verifyNextKey } from "../../shared/server-key-next.js";
import { KEY_LIFECYCLE_PATH, type KeyLifecycleVectors, buildKeyLifecycleVectors } from "./key-lifecycle.js";

const v = JSON.parse(readFileSync(KEY_LIFECYCLE_PATH, "utf8")) as KeyLifecycleVectors;
const hexOf = (h: string) => new Uint8Array(Buffer.from(h, "hex"));
const pub = (name: string) => importPublicKey({ type: "Ed25519", data: v.keys[name]!.spki });

test("the vectors are what the code builds from the fixed inputs (byte for byte)", async () => {
  assert.equal(await buildKeyLifecycleVectors(), v);
});

test("the statement bytes and its signature verify under the current key for the source", async () => {
  const s = v.server_key_next;
  const [current, next] = [await pub(s.current), await pub(s.next)];
  assert.is(Buffer.from(nextKeyStatement(s.source, current, next, s.not_before)).toString("hex"), s.statement_hex);
  const got = await verifyNextKey(current, s.source, s.next_key);
  assert.is(got.fingerprint, v.keys[s.next]!.fingerprint);
  const sig = fromB64u(s.next_key.signature, "signature");
  for (let i = 0; i < sig.length; i++) {
    const bad = sig.slice();
    bad[i]! ^= 1;
    try {
      await verifyNextKey(current, s.source, { ...s.next_key, signature: Buffer.from(bad).toString("base64url") });
      assert.unreachable(`byte ${i}`);
    } catch (e) {
      assert.is((e as PsimbolsError).code, ErrorCode.protocol);
    }
  }
});

test("the server-key-next challenge carries the statement and its signature covers it", async () => {
  const h = v.server_key_next.handshake;
  const c = decodeServerFrame(h.challenge) as Challenge;
  assert.equal(c.features, ["server-key-next"]);
  assert.equal(c.next_key, v.server_key_next.next_key);
  // the server side, from the file's inputs: the same challenge
  const server = await importPkcs8(KeyType.ed25519, fromB64u(v.keys[v.server_key_next.current]!.pkcs8, "pkcs8"));
  const { challenge } = await acceptHello(utf8(h.hello), decodeClientFrame(h.hello) as Hello, { key: server, source: v.server_key_next.source, features: [], next: v.server_key_next.next_key }, { nonceS: hexOf(h.nonce_s_hex), ekm: hexOf(h.ekm_hex) });
  assert.is(JSON.stringify(challenge), h.challenge);
});

test("the identity-move proof carries both signatures over one transcript", async () => {
  const m = v.identity_move;
  const h = m.handshake;
  const hello = decodeClientFrame(h.hello) as Hello;
  assert.is(hello.move_to?.data, v.keys[m.move_to]!.spki);
  const server = await importPkcs8(KeyType.ed25519, fromB64u(v.keys[m.server_key]!.pkcs8, "pkcs8"));
  const { challenge, pending } = await acceptHello(utf8(h.hello), hello, { key: server, source: m.source, features: [], moves: true }, { nonceS: hexOf(h.nonce_s_hex), ekm: hexOf(h.ekm_hex) });
  assert.is(JSON.stringify(challenge), h.challenge);
  const proof = decodeClientFrame(h.proof) as { signature: string; move_signature?: string };
  assert.ok(await verifyProof(pending, fromB64u(proof.signature, "signature")));
  assert.ok(await verifyMoveProof(pending, fromB64u(proof.move_signature, "move_signature")));
  assert.not.ok(await verifyMoveProof(pending, fromB64u(proof.signature, "signature")));
});

test.run();
