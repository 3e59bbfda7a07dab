/**
 * identity-move (PROTOCOL.md §5.7) through the pure handshake functions: the
 * hello and proof shapes, negotiation, and the new key's signature kept apart
 * from the old key's.
 */
import { rejectsWith } from "../helpers/refusal.js";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { fromB64u, fromUtf8, utf8 } from "../../shared/encoding.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type Challenge, Feature, type Hello, decodeClientFrame, decodeServerFrame } from "../../shared/frames.js";
import { acceptHello, answerChallenge, createHello, verifyMoveProof, verifyProof } from "../../shared/handshake.js";
import { LABEL_MOVE } from "../../shared/identity-move.js";

const t = suite("identity-move in the handshake");
const source = "wss://broker.example/";
let server: SigningKey;
let old: SigningKey;
let next: SigningKey;
t.before(async () => {
  server = await generateSigningKey();
  old = await generateSigningKey();
  next = await generateSigningKey();
});


t("both signatures verify over one transcript, and neither stands in for the other", async () => {
  const h = await createHello(old, { moveTo: next });
  assert.equal(h.hello.features, [Feature.identityMove]);
  const text = fromUtf8(h.bytes);
  assert.ok(text.endsWith(`"move_to":${JSON.stringify({ type: next.public.type, data: (h.hello.move_to ?? { data: "" }).data })}}`), "move_to follows features");
  const { challenge, pending } = await acceptHello(h.bytes, decodeClientFrame(text) as Hello, { key: server, source, moves: true });
  assert.equal(challenge.features, [Feature.identityMove]);
  assert.is(pending.moveTo?.fingerprint, next.public.fingerprint);
  const { proof } = await answerChallenge(h, decodeServerFrame(JSON.stringify(challenge)) as Challenge, () => {});
  const sigC = fromB64u(proof.signature, "signature");
  const sigMove = fromB64u(proof.move_signature, "move_signature");
  assert.ok(await verifyProof(pending, sigC));
  assert.ok(await verifyMoveProof(pending, sigMove));
  // label separation: sig_c is not a move signature, and sig_move is not a proof
  assert.not.ok(await verifyMoveProof(pending, sigC));
  assert.not.ok(await verifyProof(pending, sigMove));
  assert.is(LABEL_MOVE, "psimbols/1 identity move");
});

t("a move signature from another handshake does not verify", async () => {
  const a = await createHello(old, { moveTo: next });
  const b = await createHello(old, { moveTo: next });
  const sa = await acceptHello(a.bytes, decodeClientFrame(fromUtf8(a.bytes)) as Hello, { key: server, source, moves: true });
  const sb = await acceptHello(b.bytes, decodeClientFrame(fromUtf8(b.bytes)) as Hello, { key: server, source, moves: true });
  const pa = await answerChallenge(a, sa.challenge, () => {});
  assert.not.ok(await verifyMoveProof(sb.pending, fromB64u(pa.proof.move_signature, "move_signature")));
});

t("a server that does not move identities does not choose identity-move; the client stops before its proof: unsupported", async () => {
  const h = await createHello(old, { moveTo: next });
  const { challenge, pending } = await acceptHello(h.bytes, decodeClientFrame(fromUtf8(h.bytes)) as Hello, { key: server, source });
  assert.equal(challenge.features, []);
  assert.is(pending.moveTo, undefined);
  await rejectsWith(answerChallenge(h, challenge, () => {}), ErrorCode.unsupported, /does not move identities/);
});

const shapes: [string, (h: Hello) => Record<string, unknown>, RegExp][] = [
  ["move_to without identity-move", (h) => ({ ...h, features: [], move_to: h.move_to }), /go together/],
  ["identity-move without move_to", (h) => ({ ...h, move_to: undefined }), /go together/],
  ["move_to naming the hello's own key", (h) => ({ ...h, move_to: h.public_key }), /own public_key/],
  ["move_to that is not a key", (h) => ({ ...h, move_to: { type: "Ed25519", data: "AAAA" } }), /move_to/],
];
for (const [name, edit, message] of shapes) {
  t(`a hello with ${name} is refused: bad_request`, async () => {
    const h = await createHello(old, { moveTo: next });
    const bytes = utf8(JSON.stringify(edit(h.hello)));
    await rejectsWith(
      (async () => acceptHello(bytes, decodeClientFrame(fromUtf8(bytes)) as Hello, { key: server, source, moves: true }))(),
      ErrorCode.badRequest,
      message,
    );
  });
}

t("decoding refuses a move_to or move_signature of the wrong type", () => {
  for (const text of [
    JSON.stringify({ type: "proof", signature: "AAAA", move_signature: 5 }),
    JSON.stringify({ type: "proof", signature: "AAAA", move_signature: "a+b/" }),
    JSON.stringify({ type: "hello", version: 1, public_key: { type: "Ed25519", data: "AA" }, channel_types: ["AES-256-GCM"], kem: { type: "X25519", data: "AA" }, nonce: "A".repeat(22), features: ["identity-move"], move_to: "SHA256:x" }),
  ]) {
    try {
      decodeClientFrame(text);
      assert.unreachable(text);
    } catch (e) {
      assert.is((e as PsimbolsError).code, ErrorCode.badRequest, text);
    }
  }
});

t.run();
