/**
 * The rotation statement (PROTOCOL.md §5.6) through the pure handshake
 * functions: negotiated by `server-key-next`, verified under the presented
 * key for the challenge's source, and inside the transcript.
 */
import { rejectsWith } from "../helpers/refusal.js";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { KeyType, generateSigningKey, type SigningKey, verify } from "../../shared/crypto.js";
import { acceptHello, answerChallenge, createHello, type ServerOffer } from "../../shared/handshake.js";
import { type Challenge, Feature, type Hello, decodeClientFrame, decodeNextKey, decodeServerFrame } from "../../shared/frames.js";
import { fromB64u, fromUtf8 } from "../../shared/encoding.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { LABEL_NEXT_KEY, signNextKey, verifyNextKey } from "../../shared/server-key-next.js";

const t = suite("server key rotation statement");
const source = "wss://broker.example/";
const NB = "2027-01-31T00:00:00Z";

async function challengeFor(offer: ServerOffer, features: string[] = [Feature.binary, Feature.serverKeyNext]) {
  const id = await generateSigningKey();
  const h = await createHello(id, { features });
  const hello = decodeClientFrame(fromUtf8(h.bytes)) as Hello;
  const { challenge } = await acceptHello(h.bytes, hello, { features: [Feature.binary], ...offer });
  // through the wire decoder, as a client gets it
  return { h, c: decodeServerFrame(JSON.stringify(challenge)) as Challenge };
}


let current: SigningKey;
let next: SigningKey;
t.before(async () => {
  current = await generateSigningKey(KeyType.ed25519);
  next = await generateSigningKey(KeyType.ed25519);
});

t("a client offering server-key-next learns the next key, verified, with its not-before", async () => {
  const statement = await signNextKey(current, next.public, source, NB);
  const { h, c } = await challengeFor({ key: current, source, next: statement });
  assert.equal(c.features, [Feature.binary, Feature.serverKeyNext]);
  assert.equal(c.next_key, statement);
  const { state } = await answerChallenge(h, c, () => {});
  assert.is(state.nextKey?.fingerprint, next.public.fingerprint);
  assert.is(state.nextKey?.notBefore, NB);
});

t("a v1 client (no server-key-next) gets no statement and an unchanged handshake", async () => {
  const statement = await signNextKey(current, next.public, source, NB);
  const { h, c } = await challengeFor({ key: current, source, next: statement }, [Feature.binary]);
  assert.equal(c.features, [Feature.binary]);
  assert.is(c.next_key, undefined);
  const { state } = await answerChallenge(h, c, () => {});
  assert.is(state.nextKey, undefined);
});

t("a server with no next key does not choose server-key-next", async () => {
  const { h, c } = await challengeFor({ key: current, source });
  assert.equal(c.features, [Feature.binary]);
  assert.is((await answerChallenge(h, c, () => {})).state.nextKey, undefined);
});

t("a statement signed by another key (forged) is refused: protocol", async () => {
  const forger = await generateSigningKey();
  const forged = await signNextKey(forger, next.public, source, NB);
  const { h, c } = await challengeFor({ key: current, source, next: forged });
  await rejectsWith(answerChallenge(h, c, () => {}), ErrorCode.protocol, /does not verify/);
});

t("a statement made for another source is refused: protocol", async () => {
  const other = await signNextKey(current, next.public, "wss://other.example/", NB);
  const { h, c } = await challengeFor({ key: current, source, next: other });
  await rejectsWith(answerChallenge(h, c, () => {}), ErrorCode.protocol, /does not verify/);
});

t("a statement naming the current key itself is refused", async () => {
  await rejectsWith(verifyNextKey(current.public, source, { ...(await signNextKey(current, next.public, source, NB)), key: { type: "Ed25519", data: (await signNextKey(next, current.public, source, NB)).key.data } }), ErrorCode.protocol, /is the current one/);
  try {
    await signNextKey(current, current.public, source, NB);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, RangeError);
  }
});

t("the statement is in the transcript: a changed not_before or next key breaks the challenge signature", async () => {
  const statement = await signNextKey(current, next.public, source, NB);
  const other = await generateSigningKey();
  const swapped = await signNextKey(current, other.public, source, NB); // a genuine statement from another handshake
  for (const nk of [{ ...statement, not_before: "2027-02-01T00:00:00Z" }, swapped]) {
    const { h, c } = await challengeFor({ key: current, source, next: statement });
    await rejectsWith(answerChallenge(h, { ...c, next_key: nk }, () => {}), ErrorCode.protocol, /server signature over the challenge/);
  }
});

t("server-key-next chosen without a statement is refused: protocol", async () => {
  const statement = await signNextKey(current, next.public, source, NB);
  const { h, c } = await challengeFor({ key: current, source, next: statement });
  const { next_key: _, ...bare } = c;
  await rejectsWith(answerChallenge(h, bare, () => {}), ErrorCode.protocol, /without a next_key/);
});

t("a statement the client did not ask for is ignored (not in the transcript)", async () => {
  const statement = await signNextKey(current, next.public, source, NB);
  const { h, c } = await challengeFor({ key: current, source }, [Feature.binary]);
  const { state } = await answerChallenge(h, { ...c, next_key: statement }, () => {});
  assert.is(state.nextKey, undefined);
});

t("signNextKey refuses a malformed not-before", async () => {
  for (const nb of ["2027-01-31", "2027-01-31T00:00:00+01:00", "yesterday", ""]) {
    try {
      await signNextKey(current, next.public, source, nb);
      assert.unreachable(nb);
    } catch (e) {
      assert.instance(e, RangeError, nb);
    }
  }
  assert.is((await signNextKey(current, next.public, source, new Date(Date.UTC(2027, 0, 31, 0, 0, 0, 123)))).not_before, "2027-01-31T00:00:00Z");
});

t("the statement signs the documented bytes (label first): LP(label) || LP(source) || LP(current SPKI) || LP(next SPKI) || LP(not_before)", async () => {
  assert.is(LABEL_NEXT_KEY, "psimbols/1 next server key");
  // Built here by hand from PROTOCOL.md §5.6: LP(x) is x's length as 4 bytes big-endian, then x.
  const lpOf = (x: Uint8Array | string) => {
    const b = typeof x === "string" ? Buffer.from(x, "utf8") : Buffer.from(x);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const statement = (label: string, src: string, cur: Uint8Array, nxt: Uint8Array, nb: string) =>
    new Uint8Array(Buffer.concat([lpOf(label), lpOf(src), lpOf(cur), lpOf(nxt), lpOf(nb)]));
  const w = await signNextKey(current, next.public, source, NB);
  const sig = fromB64u(w.signature, "signature");
  assert.ok(await verify(current.public, sig, statement("psimbols/1 next server key", source, current.public.spki, next.public.spki, NB)), "the signature covers the documented bytes");
  // Each field in its place: any other order or value does not verify.
  for (const [what, bytes] of [
    ["source and label swapped", statement(source, "psimbols/1 next server key", current.public.spki, next.public.spki, NB)],
    ["current and next swapped", statement("psimbols/1 next server key", source, next.public.spki, current.public.spki, NB)],
    ["another not_before", statement("psimbols/1 next server key", source, current.public.spki, next.public.spki, "2027-01-31T00:00:01Z")],
    ["another source", statement("psimbols/1 next server key", "wss://other.example/", current.public.spki, next.public.spki, NB)],
  ] as const) {
    assert.not.ok(await verify(current.public, sig, bytes), what);
  }
});

const hostile: [string, unknown, RegExp][] = [
  ["not an object", "x", /next_key/],
  ["array", [], /next_key/],
  ["key missing", { not_before: NB, signature: "AA" }, /next_key\.key/],
  ["key.type a number", { key: { type: 1, data: "AA" }, not_before: NB, signature: "AA" }, /next_key\.key\.type/],
  ["not_before not UTC", { key: { type: "Ed25519", data: "AA" }, not_before: "2027-01-31T00:00:00+00:00", signature: "AA" }, /not_before/],
  ["not_before absurd", { key: { type: "Ed25519", data: "AA" }, not_before: "2027-13-45T99:99:99Z", signature: "AA" }, /not_before/],
  ["not_before too long", { key: { type: "Ed25519", data: "AA" }, not_before: "2".repeat(100), signature: "AA" }, /not_before/],
  ["signature not base64url", { key: { type: "Ed25519", data: "AA" }, not_before: NB, signature: "a+b/" }, /next_key\.signature/],
  ["signature empty", { key: { type: "Ed25519", data: "AA" }, not_before: NB, signature: "" }, /next_key\.signature/],
  ["signature too long", { key: { type: "Ed25519", data: "AA" }, not_before: NB, signature: "A".repeat(2000) }, /next_key\.signature/],
];
for (const [name, input, field] of hostile) {
  t(`decodeNextKey refuses ${name}: bad_request naming the field`, () => {
    try {
      decodeNextKey(input);
      assert.unreachable();
    } catch (e) {
      assert.instance(e, PsimbolsError);
      assert.is((e as PsimbolsError).code, ErrorCode.badRequest);
      assert.match((e as PsimbolsError).message, field);
    }
  });
}

t("a challenge carrying a malformed next_key does not decode", async () => {
  const statement = await signNextKey(current, next.public, source, NB);
  const { c } = await challengeFor({ key: current, source, next: statement });
  try {
    decodeServerFrame(JSON.stringify({ ...c, next_key: { ...statement, not_before: 5 } }));
    assert.unreachable();
  } catch (e) {
    assert.is((e as PsimbolsError).code, ErrorCode.badRequest);
  }
});

t("an unusable next key (garbage SPKI) is refused: protocol", async () => {
  const statement = await signNextKey(current, next.public, source, NB);
  await rejectsWith(verifyNextKey(current.public, source, { ...statement, key: { type: "Ed25519", data: "AAAA" } }), ErrorCode.protocol, /not a usable key/);
});

t.run();
