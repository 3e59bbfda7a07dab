/**
 * The hostile-frame matrix (SECURITY.md): one row per attack, each with what is
 * sent, the error code and close code expected, and the store-visible changes
 * the row may make through its own legitimate handshakes. The harness in
 * env.ts runs every row against a real broker process and then checks that
 * nothing else changed: the broker lives, the victim's channel and socket are
 * the same, a bystander is still served, the node's bound channels are back
 * to what they were, and `handshakes.established` / `resumes.ok` /
 * `handshakes.forbidden` moved only by what the row declares.
 *
 * `rows` and `limitRows` run in `bin/test_psimbols.sh` (matrix.test.ts,
 * limits.test.ts). `regressionRows` are the bugs this matrix found, now fixed
 * (regressions.test.ts runs them; each row's `bug` says what was wrong).
 * Replays onto *another node* need Redis and several nodes: they are not rows
 * here; test/server/nodes.test.ts covers them (SECURITY.md §4).
 */
import { connect as netConnect } from "node:net";
import { generateKeyPairSync, randomBytes as nodeRandom } from "node:crypto";
import { WebSocket } from "ws";
import { connect } from "../../client/node.js";
import * as assert from "uvu/assert";
import { type SigningKey, KeyType, generateSigningKey, randomBytes, sha256, sign, wirePublicKey } from "../../shared/crypto.js";
import { b64u, concat, fromB64u, fromUtf8, lp } from "../../shared/encoding.js";
import { CloseCode, ErrorCode } from "../../shared/errors.js";
import { FrameKind, deriveBinding, openFrame, sealFrame } from "../../shared/channel.js";
import { type Challenge, type Established, Feature, MAX_FRAME_BYTES, MAX_SEQ_BY_TYPE, MAX_WIRE_SEQ, decodeServerFrame } from "../../shared/frames.js";
import { type ClientHello, LABEL_CLIENT_SIG, LABEL_SERVER_SIG, answerChallenge, createHello, openGrant } from "../../shared/handshake.js";
import { type Frame, Raw, type RawChannel, binaryRequestFrame, call, handshake, openPush, rawChannel, readResponse, requestFrame, resume, sealRequestBytes } from "../helpers/raw.js";
import { type Ctx, type Expect, type Outcome, type Row, TIGHT, alignWindow, sleep, within } from "./env.js";
import { floodFailedFrames } from "../../bench/failed-frames.js";

// ------------------------------------------------------------------ expectations

const C = {
  bad: CloseCode.badRequest.code,
  timeout: CloseCode.handshakeTimeout.code,
  tooMany: CloseCode.tooMany.code,
  slow: CloseCode.slowConsumer.code,
  replaced: CloseCode.replaced.code,
  revoked: CloseCode.revoked.code,
  binary: CloseCode.unsupportedData.code,
  tooBig: CloseCode.tooBig.code,
} as const;
/** bad_request, then close 4000. */
const BAD: Expect = { reply: "error", error: ErrorCode.badRequest, close: C.bad };
/** unsupported, the socket stays open and can still handshake. */
const UNSUPPORTED: Expect = { reply: "error", error: ErrorCode.unsupported, close: null };
/** A proof that does not verify: unauthorised, close 4000. */
const BAD_PROOF: Expect = { reply: "error", error: ErrorCode.unauthorised, close: C.bad };
/** The one channel failure answer; the socket stays open. */
const UNAUTHORISED: Expect = { reply: "error", error: ErrorCode.unauthorised, close: null };

// ------------------------------------------------------------------ helpers

type Obj = Record<string, unknown>;

/** A hello as an object (fresh identity unless given), for patching. */
async function helloObject(key?: SigningKey): Promise<{ h: ClientHello; o: Obj }> {
  const h = await createHello(key ?? (await generateSigningKey()));
  return { h, o: JSON.parse(fromUtf8(h.bytes)) as Obj };
}

/** Sends `frame` (text, object, or bytes as a binary message) on a fresh socket and reads the outcome. */
async function sendOne(x: Ctx, frame: string | Obj | Uint8Array): Promise<Outcome> {
  const raw = await x.open();
  if (frame instanceof Uint8Array) raw.ws.send(frame);
  else raw.send(frame);
  return x.outcome(raw);
}

/** After an answer that leaves the socket open: prove it is still usable by a full handshake and a request. */
async function stillUsable(raw: Raw, o: Outcome): Promise<Outcome> {
  if (o.close !== null) return o;
  try {
    const ch = await handshake(raw, await generateSigningKey());
    assert.equal(await call(raw, ch, "echo", "usable"), { data: "usable" });
    return o;
  } catch {
    const c = await Promise.race([raw.closed, sleep(500).then(() => undefined)]);
    return { ...o, close: c?.code ?? -1 };
  }
}

/** A row sending one frame on a fresh socket. */
function frameRow(name: string, sent: string, make: () => string | Obj | Uint8Array | Promise<string | Obj | Uint8Array>, expect: Expect): Row {
  return { name, sent, broker: "main", expect, run: async (x) => sendOne(x, await make()) };
}

/** A row sending a valid hello with `patch` applied; `unsupported` rows then show the socket still works. */
function helloRow(name: string, sent: string, patch: (o: Obj) => void, expect: Expect): Row {
  const usable = expect.error === ErrorCode.unsupported;
  return {
    name,
    sent,
    broker: "main",
    expect,
    changes: usable ? { established: 1 } : {},
    run: async (x) => {
      const { o } = await helloObject();
      patch(o);
      const raw = await x.open();
      raw.send(JSON.stringify(o));
      const got = await x.outcome(raw);
      return usable ? stillUsable(raw, got) : got;
    },
  };
}

/** A row with a hello whose `public_key` is `key`. */
function keyRow(name: string, sent: string, key: (x: Ctx) => Obj | Promise<Obj>, expect: Expect): Row {
  return {
    name,
    sent,
    broker: "main",
    expect,
    changes: expect.error === ErrorCode.unsupported ? { established: 1 } : {},
    run: async (x) => {
      const { o } = await helloObject();
      o.public_key = await key(x);
      const raw = await x.open();
      raw.send(JSON.stringify(o));
      const got = await x.outcome(raw);
      return expect.error === ErrorCode.unsupported ? stillUsable(raw, got) : got;
    },
  };
}

/** Everything a raw handshake exchanged, for replays and reflections. */
interface Captured {
  h: ClientHello;
  challenge: Frame;
  proof: Frame;
  established: Frame;
  ch: RawChannel;
}
async function capturedHandshake(raw: Raw, key: SigningKey): Promise<Captured> {
  const h = await createHello(key);
  raw.send(fromUtf8(h.bytes));
  const challenge = await raw.next();
  const c = decodeServerFrame(JSON.stringify(challenge)) as Challenge;
  const { proof, state } = await answerChallenge(h, c, () => {});
  raw.send(proof);
  const established = await raw.next();
  assert.is(established.type, "established");
  const { grant, channelKey } = await openGrant(state, established as Established);
  return { h, challenge, proof, established, ch: await rawChannel(grant, channelKey, h.nonceC, state.nonceS) };
}

/** Sends a hello and returns the challenge (decoded) with the hello state. */
async function challengeFor(raw: Raw, key: SigningKey): Promise<{ h: ClientHello; c: Challenge }> {
  const h = await createHello(key);
  raw.send(fromUtf8(h.bytes));
  const f = await raw.next();
  assert.is(f.type, "challenge", JSON.stringify(f));
  return { h, c: decodeServerFrame(JSON.stringify(f)) as Challenge };
}

/** T_chal of PROTOCOL.md §5.2 recomputed from the hello bytes and the challenge. */
function tChal(h: ClientHello, c: Challenge): Uint8Array {
  const tInfo = lp(h.bytes, c.source, fromB64u(c.server_key.data, "server_key"), c.channel_type, fromB64u(c.nonce, "nonce"), c.features.join(","));
  return concat(tInfo, lp(fromB64u(c.enc, "enc")));
}

/** An encrypted request with an arbitrary inner text (bypassing JSON.stringify). */
async function sealedText(ch: RawChannel, text: string, seq = ++ch.seq): Promise<Frame> {
  const request = await sealFrame(ch.keys.c2s, FrameKind.request, seq, ch.grant.channel, text);
  return { type: "request", channel: ch.grant.channel, seq, request };
}

/** A request-shaped frame with random ciphertext for `channel`. */
function forged(channel: string, seq = 1, bytes = 48): Frame {
  return { type: "request", channel, seq, request: b64u(randomBytes(bytes)) };
}

const someChannel = () => b64u(randomBytes(16));

/**
 * A retired channel cannot be used again through a resume: either the resume
 * itself gets `unauthorised`, or (a tombstone) the resume is answered but its
 * first authenticated request gets `unauthorised` and never a response.
 */
async function resumeRefused(x: Ctx, ch: RawChannel): Promise<boolean> {
  const raw = await x.open();
  const c: RawChannel = { ...ch };
  const f = await resume(raw, c);
  if (f.type === "error") return f.error?.code === ErrorCode.unauthorised;
  if (f.type !== "resumed") return false;
  raw.send(await requestFrame(c, "whoami"));
  for (;;) {
    const r = await raw.next(3000).catch(() => undefined);
    if (!r || r.type === "response") return false;
    if (r.type === "error") return r.error?.code === ErrorCode.unauthorised;
  }
}

/** ECDSA P1363 `r || s` to DER (RFC 3279): the encoding psimbols does not accept. */
function p1363ToDer(sig: Uint8Array): Uint8Array {
  const int = (v: Uint8Array) => {
    let i = 0;
    while (i < v.length - 1 && v[i] === 0) i++;
    let x: Uint8Array = v.slice(i);
    if (x[0]! & 0x80) x = concat(new Uint8Array([0]), x);
    return concat(new Uint8Array([0x02, x.length]), x);
  };
  const body = concat(int(sig.slice(0, 32)), int(sig.slice(32)));
  return concat(new Uint8Array([0x30, body.length]), body);
}

/** DER of an RSA SubjectPublicKeyInfo with the given modulus and exponent (no private key exists). */
function rsaSpki(n: Uint8Array, e: Uint8Array): Uint8Array {
  const len = (k: number) => (k < 128 ? new Uint8Array([k]) : k < 256 ? new Uint8Array([0x81, k]) : new Uint8Array([0x82, k >> 8, k & 255]));
  const tlv = (t: number, v: Uint8Array) => concat(new Uint8Array([t]), len(v.length), v);
  const int = (v: Uint8Array) => tlv(0x02, v[0]! & 0x80 ? concat(new Uint8Array([0]), v) : v);
  const alg = tlv(0x30, concat(tlv(0x06, new Uint8Array([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01])), new Uint8Array([0x05, 0x00])));
  return tlv(0x30, concat(alg, tlv(0x03, concat(new Uint8Array([0]), tlv(0x30, concat(int(n), int(e)))))));
}

/** RSA-PSS (SHA-256, MGF1-SHA-256, salt 32) encoding of `msg` for a modulus of `modBits` (RFC 8017 §9.1.1). */
async function pssEncode(msg: Uint8Array, modBits: number): Promise<Uint8Array> {
  const emBits = modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  const mHash = await sha256(msg);
  const salt = randomBytes(32);
  const H = await sha256(concat(new Uint8Array(8), mHash, salt));
  const db = concat(new Uint8Array(emLen - 32 - 32 - 2), new Uint8Array([1]), salt);
  let mask: Uint8Array = new Uint8Array(0);
  for (let c = 0; mask.length < db.length; c++) mask = concat(mask, await sha256(concat(H, new Uint8Array([c >>> 24, (c >>> 16) & 255, (c >>> 8) & 255, c & 255]))));
  for (let i = 0; i < db.length; i++) db[i]! ^= mask[i]!;
  db[0]! &= 0xff >> (8 * emLen - emBits);
  return concat(db, H, new Uint8Array([0xbc]));
}

/** The identity point of edwards25519 (order 1): every "signature" R = identity, S = 0 verifies under it without RFC 8032 §5.1.7's cofactor checks. */
const ED25519_IDENTITY_SPKI = concat(new Uint8Array([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x01]), new Uint8Array(31));

/** A hello for a public key we hold no private key for, answered with a signature we can make anyway. */
async function weakKeyHandshake(x: Ctx, publicKey: Obj, forge: (message: Uint8Array) => Promise<Uint8Array>): Promise<Outcome> {
  const { h, o } = await helloObject();
  o.public_key = publicKey;
  const text = JSON.stringify(o);
  const raw = await x.open();
  raw.send(text);
  const f = await raw.next();
  if (f.type !== "challenge") return { reply: f.type, error: f.error?.code ?? null, close: (await raw.closed).code };
  const c = decodeServerFrame(JSON.stringify(f)) as Challenge;
  const hb = { ...h, bytes: new TextEncoder().encode(text) };
  const t = tChal(hb, c);
  const msg = concat(lp(LABEL_CLIENT_SIG), await sha256(concat(t, lp(fromB64u(c.signature, "signature")))));
  raw.send({ type: "proof", signature: b64u(await forge(msg)) });
  return x.outcome(raw);
}

/** A socket that speaks the WebSocket handshake by hand (for slowloris rows). */
async function rawTcp(x: Ctx, localAddress: string): Promise<{ write(b: Uint8Array | string): void; closed: Promise<Uint8Array>; upgraded: Promise<void> }> {
  const s = netConnect({ port: x.port, host: "127.0.0.1", localAddress });
  x.track(() => s.destroy());
  s.on("error", () => {});
  await new Promise<void>((r) => s.once("connect", () => r()));
  let data: Uint8Array = new Uint8Array(0);
  let upgradedResolve!: () => void;
  const upgraded = new Promise<void>((r) => (upgradedResolve = r));
  s.on("data", (d: Buffer) => {
    data = concat(data, new Uint8Array(d));
    if (Buffer.from(data).includes("\r\n\r\n")) upgradedResolve();
  });
  const closed = new Promise<Uint8Array>((r) => s.once("close", () => r(data)));
  return { write: (b) => void s.write(b), closed, upgraded };
}
const UPGRADE = (port: number) =>
  `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${nodeRandom(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

/** The close code in the first close frame (opcode 8) after the HTTP response, or null. */
function closeCodeIn(bytes: Uint8Array): number | null {
  const text = Buffer.from(bytes);
  const at = text.indexOf("\r\n\r\n");
  if (at < 0) return null;
  for (let i = at + 4; i + 3 < bytes.length; ) {
    const op = bytes[i]! & 0x0f;
    let n = bytes[i + 1]! & 0x7f;
    let h = 2;
    if (n === 126) (n = (bytes[i + 2]! << 8) | bytes[i + 3]!), (h = 4);
    else if (n === 127) return null;
    if (op === 8) return n >= 2 ? (bytes[i + h]! << 8) | bytes[i + h + 1]! : 1005;
    i += h + n;
  }
  return null;
}

/** The HTTP status of a refused upgrade, from ws's "Unexpected server response: 429". */
function httpStatus(e: unknown): number {
  const m = /Unexpected server response: (\d+)/.exec(e instanceof Error ? e.message : String(e));
  return m ? Number(m[1]) : -1;
}

// ------------------------------------------------------------------ rows

export const rows: Row[] = [
  // ---------------------------------------------------------------- shape and encoding
  frameRow("malformed JSON gets bad_request and close 4000", "`{not json`", () => "{not json", BAD),
  frameRow("a JSON array instead of an object gets bad_request and close 4000", "`[]`", () => "[]", BAD),
  frameRow("JSON null gets bad_request and close 4000", "`null`", () => "null", BAD),
  frameRow("a JSON string gets bad_request and close 4000", '`"hello"`', () => '"hello"', BAD),
  frameRow("a JSON number gets bad_request and close 4000", "`42`", () => "42", BAD),
  frameRow("an empty text message gets bad_request and close 4000", "empty text message", () => "", BAD),
  frameRow("an object without `type` gets bad_request and close 4000", "`{}`", () => ({}), BAD),
  frameRow("a numeric `type` gets bad_request and close 4000", '`{"type":1}`', () => ({ type: 1 }), BAD),
  frameRow("an unknown frame type gets bad_request and close 4000", '`{"type":"grant"}`', () => ({ type: "grant" }), BAD),
  frameRow("frame types are case-sensitive: `Hello` gets bad_request and close 4000", "a valid hello with `type: Hello`", async () => ({ ...(await helloObject()).o, type: "Hello" }), BAD),
  frameRow(
    "20 000 nested arrays (40 KB) get bad_request and close 4000, and the parser survives",
    "`[[[[…]]]]`, 20 000 deep",
    () => "[".repeat(20_000) + "]".repeat(20_000),
    BAD,
  ),
  frameRow(
    "duplicate keys: the last `type` wins, so hello-then-proof is a proof without a hello: bad_request, close 4000",
    '`{"type":"hello","type":"proof","signature":…}`',
    () => `{"type":"hello","type":"proof","signature":"${b64u(randomBytes(64))}"}`,
    BAD,
  ),
  frameRow(
    "a `__proto__` member does not supply a missing field (no prototype pollution): bad_request, close 4000",
    'a hello without `version`, plus `"__proto__":{"version":1}`',
    async () => {
      const { o } = await helloObject();
      delete o.version;
      return JSON.stringify(o).replace(/^\{/, '{"__proto__":{"version":1},');
    },
    BAD,
  ),
  {
    name: "a text message that is not UTF-8 is refused by the WebSocket layer with close 1007",
    sent: "text frame with bytes 7b ff fe 7d",
    broker: "main",
    expect: { reply: null, error: null, close: 1007 },
    run: async (x) => {
      const raw = await x.open();
      raw.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
      return x.outcome(raw);
    },
  },
  frameRow("a binary message gets bad_request and close 1003", "binary message 01 02 03", () => new Uint8Array([1, 2, 3]), {
    reply: "error",
    error: ErrorCode.badRequest,
    close: C.binary,
  }),
  frameRow("an empty binary message gets bad_request and close 1003", "empty binary message", () => new Uint8Array(0), {
    reply: "error",
    error: ErrorCode.badRequest,
    close: C.binary,
  }),
  frameRow("a binary message holding a valid hello is still refused with 1003", "a valid hello's bytes as a binary message", async () => (await helloObject()).h.bytes, {
    reply: "error",
    error: ErrorCode.badRequest,
    close: C.binary,
  }),
  frameRow(`a message of ${MAX_FRAME_BYTES + 1} bytes is refused with close 1009 before it is parsed`, "64 KiB + 1 byte of text", () => "x".repeat(MAX_FRAME_BYTES + 1), {
    reply: null,
    error: null,
    close: C.tooBig,
  }),
  frameRow(
    `a message of exactly ${MAX_FRAME_BYTES} bytes is within the limit: parsed, and refused as bad_request, close 4000`,
    "64 KiB of JSON with an unknown type",
    () => {
      const head = '{"type":"x","pad":"';
      return head + "a".repeat(MAX_FRAME_BYTES - head.length - 2) + '"}';
    },
    BAD,
  ),

  // ---------------------------------------------------------------- hello fields
  helloRow("a hello without `public_key` gets bad_request and close 4000", "hello minus `public_key`", (o) => delete o.public_key, BAD),
  helloRow("a hello whose `public_key` is a string gets bad_request and close 4000", "`public_key: \"Ed25519\"`", (o) => (o.public_key = "Ed25519"), BAD),
  helloRow("a hello whose `public_key` has no `data` gets bad_request and close 4000", "`public_key: {type}`", (o) => (o.public_key = { type: "Ed25519" }), BAD),
  helloRow('a hello with `version: "1"` (a string) gets bad_request and close 4000', '`version: "1"`', (o) => (o.version = "1"), BAD),
  helloRow("a hello with `version: 2` gets unsupported and the socket can still handshake", "`version: 2`", (o) => (o.version = 2), UNSUPPORTED),
  helloRow("a hello whose `channel_types` is a string gets bad_request and close 4000", '`channel_types: "AES-256-GCM"`', (o) => (o.channel_types = "AES-256-GCM"), BAD),
  helloRow("a hello whose `channel_types` holds a number gets bad_request and close 4000", "`channel_types: [1]`", (o) => (o.channel_types = [1]), BAD),
  helloRow("a hello offering 17 channel types gets bad_request and close 4000", "17 × `AES-256-GCM`", (o) => (o.channel_types = Array(17).fill("AES-256-GCM")), BAD),
  helloRow('a hello offering an empty channel type gets bad_request and close 4000', '`channel_types: [""]`', (o) => (o.channel_types = [""]), BAD),
  helloRow("a DES-only offer gets unsupported and the socket can still handshake", '`channel_types: ["DES"]`', (o) => (o.channel_types = ["DES"]), UNSUPPORTED),
  helloRow("an empty `channel_types` gets unsupported and the socket can still handshake", "`channel_types: []`", (o) => (o.channel_types = []), UNSUPPORTED),
  helloRow(
    "an offer of only weak or unauthenticated ciphers gets unsupported and the socket can still handshake",
    '`["DES","3DES","AES-128-CBC","AES-256-ECB","RC4","NULL"]`',
    (o) => (o.channel_types = ["DES", "3DES", "AES-128-CBC", "AES-256-ECB", "RC4", "NULL"]),
    UNSUPPORTED,
  ),
  helloRow("a channel type naming an Object.prototype member (`toString`) gets unsupported", '`channel_types: ["toString"]`', (o) => (o.channel_types = ["toString"]), UNSUPPORTED),
  helloRow("a channel type `__proto__` gets unsupported, not an internal error", '`channel_types: ["__proto__"]`', (o) => (o.channel_types = ["__proto__"]), UNSUPPORTED),
  helloRow("a hello nonce of 15 bytes gets bad_request and close 4000", "`nonce`: 15 bytes", (o) => (o.nonce = b64u(randomBytes(15))), BAD),
  helloRow("a hello nonce of 65 bytes gets bad_request and close 4000", "`nonce`: 65 bytes", (o) => (o.nonce = b64u(randomBytes(65))), BAD),
  helloRow("a hello nonce with base64 padding gets bad_request and close 4000", "`nonce` + `=`", (o) => (o.nonce = `${String(o.nonce)}=`), BAD),
  helloRow("a hello nonce in the standard base64 alphabet gets bad_request and close 4000", "`nonce` with `+` and `/`", (o) => (o.nonce = "+/+/" + String(o.nonce).slice(4)), BAD),
  helloRow(
    "a hello nonce with non-zero trailing bits (non-canonical base64url) gets bad_request and close 4000",
    "16-byte nonce ending in `B` instead of `A`",
    (o) => (o.nonce = b64u(new Uint8Array(16)).slice(0, -1) + "B"),
    BAD,
  ),
  helloRow("a hello without `kem` gets bad_request and close 4000", "hello minus `kem`", (o) => delete o.kem, BAD),
  helloRow("a hello with an unknown KEM type gets unsupported and the socket can still handshake", "`kem: {type: X448, …56 bytes}`", (o) => (o.kem = { type: "X448", data: b64u(randomBytes(56)) }), UNSUPPORTED),
  helloRow("an X25519 KEM key of 31 bytes gets bad_request and close 4000", "`kem.data`: 31 bytes", (o) => (o.kem = { type: "X25519", data: b64u(randomBytes(31)) }), BAD),
  helloRow(
    "an all-zero (low-order) X25519 KEM key gets bad_request and close 4000 (RFC 9180 §7.1.4)",
    "`kem.data`: 32 zero bytes",
    (o) => (o.kem = { type: "X25519", data: b64u(new Uint8Array(32)) }),
    BAD,
  ),
  helloRow(
    "a P-256 KEM point off the curve gets bad_request and close 4000",
    "`kem: {type: P-256, data: 04 || 64 random bytes}`",
    (o) => (o.kem = { type: "P-256", data: b64u(concat(new Uint8Array([4]), randomBytes(64))) }),
    BAD,
  ),
  // X-Wing (PROTOCOL.md §5.3.1): ML-KEM-768's 1184-byte encapsulation key || a 32-byte X25519 share
  helloRow("an X-Wing KEM key of 1215 bytes gets bad_request and close 4000", "`kem: {type: X-Wing, data: 1215 random bytes}`", (o) => (o.kem = { type: "X-Wing", data: b64u(randomBytes(1215)) }), BAD),
  helloRow("an X25519-sized key labelled X-Wing gets bad_request and close 4000", "`kem: {type: X-Wing, data: 32 bytes}`", (o) => (o.kem = { type: "X-Wing", data: (o.kem as Obj).data }), BAD),
  helloRow("an X-Wing KEM key past the longest KEM key gets bad_request and close 4000, before any KEM work", "`kem: {type: X-Wing, data: 1500 random bytes}`", (o) => (o.kem = { type: "X-Wing", data: b64u(randomBytes(1500)) }), BAD),
  helloRow(
    "an X-Wing KEM key whose ML-KEM part fails FIPS 203's modulus check gets bad_request and close 4000",
    "`kem.data`: 1184 bytes 0xff (coefficients 4095 ≥ q) || 32 random bytes",
    (o) => (o.kem = { type: "X-Wing", data: b64u(concat(new Uint8Array(1184).fill(0xff), randomBytes(32))) }),
    BAD,
  ),
  helloRow(
    "an X-Wing KEM key whose X25519 share is of low order gets bad_request and close 4000",
    "`kem.data`: 1184 zero bytes (a valid ML-KEM key) || 32 zero bytes",
    (o) => (o.kem = { type: "X-Wing", data: b64u(new Uint8Array(1216)) }),
    BAD,
  ),
  helloRow("a hello whose `features` is a string gets bad_request and close 4000", '`features: "x"`', (o) => (o.features = "x"), BAD),
  helloRow("a feature name containing a comma gets bad_request and close 4000 (features are joined by commas in T_info)", '`features: ["a,b"]`', (o) => (o.features = ["a,b"]), BAD),
  helloRow(
    "a hello naming a feature twice gets bad_request and close 4000 (a feature list names each feature once, so the choice stays a subset)",
    '`features: ["binary","binary"]`',
    (o) => (o.features = [Feature.binary, Feature.binary]),
    BAD,
  ),
  ...[
    ["1.0", "`version: 1.0`"],
    ["1e0", "`version: 1e0`"],
  ].map(
    ([spelt, sent]): Row => ({
      name: `a hello with version spelt ${spelt} gets a challenge (integers are taken by value, PROTOCOL.md §2.1)`,
      sent: sent!,
      broker: "main",
      expect: { reply: "challenge", error: null, close: null },
      run: async (x) => {
        const { o } = await helloObject();
        const raw = await x.open();
        raw.send(JSON.stringify(o).replace('"version":1,', `"version":${spelt},`));
        return x.outcome(raw);
      },
    }),
  ),
  {
    name: "unknown members of a hello, even 10 000 levels deep, are ignored (the exact bytes are signed, nothing re-serialises them)",
    sent: "a valid hello plus `x: [[[…]]]` 10 000 deep",
    broker: "main",
    expect: { reply: "challenge", error: null, close: null },
    run: async (x) => {
      const { o } = await helloObject();
      const raw = await x.open();
      raw.send(JSON.stringify(o).replace(/\}$/, `,"x":${"[".repeat(10_000)}${"]".repeat(10_000)}}`));
      return x.outcome(raw);
    },
  },

  // ---------------------------------------------------------------- identity keys
  keyRow("an identity key of unknown type gets unsupported and the socket can still handshake", "`public_key.type: DSA`", async () => ({ type: "DSA", data: wirePublicKey((await generateSigningKey()).public).data }), UNSUPPORTED),
  keyRow("key types are case-sensitive: `ed25519` gets unsupported", "`public_key.type: ed25519`", async () => ({ type: "ed25519", data: wirePublicKey((await generateSigningKey()).public).data }), UNSUPPORTED),
  keyRow(
    "an RSA-1024 identity key gets bad_request and close 4000",
    "RSA SPKI with a 1024-bit modulus",
    () => ({ type: "RSA", data: b64u(new Uint8Array(generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ type: "spki", format: "der" }))) }),
    BAD,
  ),
  keyRow(
    "an RSA identity key of 4104 bits (above 4096) gets bad_request and close 4000",
    "RSA SPKI with a 4104-bit modulus",
    () => {
      const n = randomBytes(513);
      n[0]! |= 0x80;
      n[512]! |= 1;
      return { type: "RSA", data: b64u(rsaSpki(n, new Uint8Array([1, 0, 1]))) };
    },
    BAD,
  ),
  keyRow("an Ed25519 SPKI labelled ECDSA-P256 gets bad_request and close 4000", "Ed25519 SPKI, `type: ECDSA-P256`", async () => ({ type: "ECDSA-P256", data: wirePublicKey((await generateSigningKey()).public).data }), BAD),
  keyRow(
    "a P-256 identity point off the curve gets bad_request and close 4000",
    "P-256 SPKI with the last byte of y flipped",
    async () => {
      const spki = (await generateSigningKey(KeyType.p256)).public.spki.slice();
      spki[spki.length - 1]! ^= 0x01;
      return { type: "ECDSA-P256", data: b64u(spki) };
    },
    BAD,
  ),
  keyRow(
    "an Ed25519 SPKI with a trailing byte gets bad_request and close 4000",
    "Ed25519 SPKI || 00",
    async () => ({ type: "Ed25519", data: b64u(concat((await generateSigningKey()).public.spki, new Uint8Array(1))) }),
    BAD,
  ),
  keyRow("a raw 32-byte Ed25519 key instead of an SPKI gets bad_request and close 4000", "the 32 key bytes only", async () => ({ type: "Ed25519", data: b64u((await generateSigningKey()).public.spki.slice(-32)) }), BAD),
  keyRow(
    "the victim's key in non-canonical DER (same key, another fingerprint) gets bad_request and close 4000",
    "victim's Ed25519 SPKI with a long-form length",
    (x) => ({ type: "Ed25519", data: b64u(concat(new Uint8Array([0x30, 0x81, 0x2a]), x.victim.key.public.spki.slice(2))) }),
    BAD,
  ),
  keyRow("an identity key over 1024 bytes gets bad_request and close 4000", "`public_key.data`: 1100 bytes", () => ({ type: "RSA", data: b64u(randomBytes(1100)) }), BAD),
  keyRow("an identity key in padded base64 gets bad_request and close 4000", "`public_key.data` + `==`", async () => ({ type: "Ed25519", data: wirePublicKey((await generateSigningKey()).public).data + "==" }), BAD),

  // ---------------------------------------------------------------- proofs and signatures
  {
    name: "hijack: a hello with the victim's public key gets a challenge; a proof signed by the attacker's key gets unauthorised and close 4000",
    sent: "hello(victim's public key), then proof signed by another key",
    broker: "main",
    expect: BAD_PROOF,
    run: async (x) => {
      const raw = await x.open();
      const { h, c } = await challengeFor(raw, x.victim.key);
      assert.equal(Object.keys(c).sort(), ["channel_type", "enc", "features", "nonce", "server_key", "signature", "source", "type"]);
      const { proof } = await answerChallenge({ ...h, identity: await generateSigningKey() }, c, () => {});
      raw.send(proof);
      return x.outcome(raw);
    },
  },
  {
    name: "a proof of 64 random bytes gets unauthorised and close 4000",
    sent: "hello, then `proof.signature`: 64 random bytes",
    broker: "main",
    expect: BAD_PROOF,
    run: async (x) => {
      const raw = await x.open();
      await challengeFor(raw, await generateSigningKey());
      raw.send({ type: "proof", signature: b64u(randomBytes(64)) });
      return x.outcome(raw);
    },
  },
  {
    name: "a proof signed under the server's label (label confusion) gets unauthorised and close 4000",
    sent: "proof = sign(identity, LP(server label) || SHA-256(T_chal))",
    broker: "main",
    expect: BAD_PROOF,
    run: async (x) => {
      const key = await generateSigningKey();
      const raw = await x.open();
      const { h, c } = await challengeFor(raw, key);
      const sig = await sign(key, concat(lp(LABEL_SERVER_SIG), await sha256(tChal(h, c))));
      raw.send({ type: "proof", signature: b64u(sig) });
      return x.outcome(raw);
    },
  },
  {
    name: "a proof that leaves the server's signature out of the signed transcript gets unauthorised and close 4000",
    sent: "proof = sign(identity, LP(client label) || SHA-256(T_chal))",
    broker: "main",
    expect: BAD_PROOF,
    run: async (x) => {
      const key = await generateSigningKey();
      const raw = await x.open();
      const { h, c } = await challengeFor(raw, key);
      const sig = await sign(key, concat(lp(LABEL_CLIENT_SIG), await sha256(tChal(h, c))));
      raw.send({ type: "proof", signature: b64u(sig) });
      return x.outcome(raw);
    },
  },
  {
    name: "the server's own challenge signature reflected as the proof gets unauthorised and close 4000",
    sent: "proof.signature = challenge.signature",
    broker: "main",
    expect: BAD_PROOF,
    run: async (x) => {
      const raw = await x.open();
      const { c } = await challengeFor(raw, await generateSigningKey());
      raw.send({ type: "proof", signature: c.signature });
      return x.outcome(raw);
    },
  },
  {
    name: "an ECDSA proof in DER instead of IEEE P1363 gets unauthorised and close 4000",
    sent: "P-256 identity; the valid proof re-encoded as DER",
    broker: "main",
    expect: BAD_PROOF,
    run: async (x) => {
      const key = await generateSigningKey(KeyType.p256);
      const raw = await x.open();
      const { h, c } = await challengeFor(raw, key);
      const { proof } = await answerChallenge(h, c, () => {});
      raw.send({ type: "proof", signature: b64u(p1363ToDer(fromB64u(proof.signature, "signature"))) });
      return x.outcome(raw);
    },
  },
  {
    name: "a proof of 513 bytes gets bad_request and close 4000",
    sent: "hello, then `proof.signature`: 513 bytes",
    broker: "main",
    expect: BAD,
    run: async (x) => {
      const raw = await x.open();
      await challengeFor(raw, await generateSigningKey());
      raw.send({ type: "proof", signature: b64u(randomBytes(513)) });
      return x.outcome(raw);
    },
  },
  {
    name: "a proof taken from another connection's pending handshake gets unauthorised, and that handshake still completes",
    sent: "A: hello(k); B: hello(k); B: A's proof; then A: its proof",
    broker: "main",
    expect: BAD_PROOF,
    changes: { established: 1 },
    run: async (x) => {
      const key = await generateSigningKey();
      const a = await x.open();
      const b = await x.open();
      const ha = await challengeFor(a, key);
      await challengeFor(b, key);
      const { proof } = await answerChallenge(ha.h, ha.c, () => {});
      b.send(proof);
      const got = await x.outcome(b);
      a.send(proof);
      assert.is((await a.next()).type, "established", "A's handshake was disturbed");
      return got;
    },
  },
  {
    name: "a replayed hello and proof on a new connection get a fresh challenge, then unauthorised and close 4000",
    sent: "a completed handshake's hello bytes and proof, replayed on a new socket",
    broker: "main",
    expect: BAD_PROOF,
    changes: { established: 1 },
    run: async (x) => {
      const a = await x.open();
      const cap = await capturedHandshake(a, await generateSigningKey());
      const b = await x.open();
      b.send(fromUtf8(cap.h.bytes));
      const c2 = await b.next();
      assert.is(c2.type, "challenge");
      assert.is.not(c2.nonce, cap.challenge.nonce);
      assert.is.not(c2.enc, cap.challenge.enc);
      b.send(cap.proof);
      const got = await x.outcome(b);
      assert.equal(await call(a, cap.ch, "echo", "a"), { data: "a" });
      return got;
    },
  },
  frameRow("a proof without a hello gets bad_request and close 4000", "`{type: proof, signature: 64 bytes}` on a fresh socket", () => ({ type: "proof", signature: b64u(randomBytes(64)) }), BAD),
  {
    name: "a second proof after `established` gets bad_request and close 4000",
    sent: "full handshake, then the same proof again",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const raw = await x.open();
      const cap = await capturedHandshake(raw, await generateSigningKey());
      raw.send(cap.proof);
      return x.outcome(raw);
    },
  },
  {
    name: "a second hello while one is pending gets bad_request and close 4000",
    sent: "hello, hello",
    broker: "main",
    expect: BAD,
    run: async (x) => {
      const raw = await x.open();
      const { h } = await challengeFor(raw, await generateSigningKey());
      raw.send(fromUtf8(h.bytes));
      return x.outcome(raw);
    },
  },

  // ---------------------------------------------------------------- server frames reflected back
  {
    name: "a challenge reflected back to the server gets bad_request and close 4000",
    sent: "hello, then the challenge as received",
    broker: "main",
    expect: BAD,
    run: async (x) => {
      const raw = await x.open();
      const { c } = await challengeFor(raw, await generateSigningKey());
      raw.send(c);
      return x.outcome(raw);
    },
  },
  {
    name: "an established frame reflected back gets bad_request and close 4000",
    sent: "full handshake, then `established` as received",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const raw = await x.open();
      const cap = await capturedHandshake(raw, await generateSigningKey());
      raw.send(cap.established);
      return x.outcome(raw);
    },
  },
  {
    name: "a response frame reflected back gets bad_request and close 4000",
    sent: "request, then its `response` frame as received",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      p.raw.send(await requestFrame(p.ch, "echo", 1));
      const resp = await p.raw.next();
      assert.is(resp.type, "response");
      p.raw.send(resp);
      return x.outcome(p.raw);
    },
  },
  {
    name: "a push frame reflected back gets bad_request and close 4000",
    sent: "operator pushes to the channel; the `push` frame sent back",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      assert.ok((await x.operator("admin.push", { channel: p.ch.grant.channel, message: "m" })).data, "admin.push failed");
      const push = await p.raw.next();
      assert.is(push.type, "push");
      p.raw.send(push);
      return x.outcome(p.raw);
    },
  },
  {
    name: "an error frame reflected back gets bad_request and close 4000",
    sent: "a request on an unknown channel, then the `error` answer sent back",
    broker: "main",
    expect: BAD,
    run: async (x) => {
      const raw = await x.open();
      raw.send({ type: "request", channel: someChannel(), seq: 1, request: b64u(randomBytes(40)) });
      const e = await raw.next();
      assert.is(e.type, "error");
      raw.send(e);
      return x.outcome(raw);
    },
  },
  {
    name: "a resumed frame reflected back gets bad_request and close 4000",
    sent: "resume of a live channel, then `resumed` sent back",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const raw = await x.open();
      const f = await resume(raw, { ...p.ch });
      assert.is(f.type, "resumed");
      raw.send(f);
      return x.outcome(raw);
    },
  },
  {
    name: "a response's ciphertext replayed as a request (same seq) gets unauthorised; the channel stays usable",
    sent: "`{type: request, seq: n, request: <response n ciphertext>}`",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const f = await requestFrame(p.ch, "echo", "reflect me");
      p.raw.send(f);
      const resp = await p.raw.next();
      p.raw.send({ type: "request", channel: resp.channel, seq: resp.seq + 1, request: resp.response });
      const got = await x.outcome(p.raw);
      p.ch.seq++;
      assert.equal(await call(p.raw, p.ch, "echo", 2), { data: 2 });
      return got;
    },
  },
  {
    name: "a push's ciphertext replayed as a request gets unauthorised; the channel stays usable",
    sent: "`{type: request, seq: 1 + last, request: <push ciphertext>}`",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      await x.operator("admin.push", { channel: p.ch.grant.channel, message: { m: 1 } });
      const push = await p.raw.next();
      assert.is(push.type, "push");
      p.raw.send({ type: "request", channel: push.channel, seq: push.seq, request: push.push });
      const got = await x.outcome(p.raw);
      p.ch.seq = push.seq;
      assert.equal(await call(p.raw, p.ch, "echo", 3), { data: 3 });
      return got;
    },
  },

  // ---------------------------------------------------------------- encrypted requests
  {
    name: "every single-bit flip at every byte of one encrypted request gets unauthorised, and the genuine frame is then accepted",
    sent: "one echo request, ciphertext with bit 0 of byte i flipped, for every i; then the original",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const good = await requestFrame(p.ch, "echo", { n: 1 });
      const ct = fromB64u(good.request, "request");
      let first: Outcome | undefined;
      for (let i = 0; i < ct.length; i++) {
        const bad = ct.slice();
        bad[i]! ^= 0x01;
        p.raw.send({ ...good, request: b64u(bad) });
        const r = await p.raw.next();
        assert.is(r.error?.code, ErrorCode.unauthorised, `byte ${i}`);
        assert.is(r.error?.message, "unknown channel or bad ciphertext", `byte ${i}`);
        first ??= { reply: r.type, error: r.error.code, close: null };
      }
      p.raw.send(good);
      assert.equal(await readResponse(p.raw, p.ch), { data: { n: 1 } });
      return first!;
    },
  },
  {
    name: "a request presented under another seq gets unauthorised, and the genuine frame is then accepted",
    sent: "a valid request with `seq` + 1",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const good = await requestFrame(p.ch, "echo", 1);
      p.raw.send({ ...good, seq: good.seq + 1 });
      const got = await x.outcome(p.raw);
      p.raw.send(good);
      assert.equal(await readResponse(p.raw, p.ch), { data: 1 });
      return got;
    },
  },
  {
    name: "a request moved onto the victim's channel id gets unauthorised and the victim is untouched",
    sent: "the attacker's valid request with `channel` = the victim's channel id",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const f = await requestFrame(p.ch, "whoami");
      p.raw.send({ ...f, channel: x.victim.ch.grant.channel });
      return x.outcome(p.raw);
    },
  },
  {
    name: "a binary request moved onto the victim's channel id gets unauthorised and the victim is untouched",
    sent: "the attacker's valid binary request (§4.11) with the channel bytes = the victim's channel id",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const raw = await x.open();
      const ch = await handshake(raw, await generateSigningKey(), { features: [Feature.binary] });
      const f = new Uint8Array(await binaryRequestFrame(ch, "whoami"));
      f.set(fromB64u(x.victim.ch.grant.channel, "channel"), 1);
      raw.send(f);
      return x.outcome(raw);
    },
  },
  {
    name: "a binary request replayed on the same connection gets unauthorised",
    sent: "binary request n, then the same bytes again",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const raw = await x.open();
      const ch = await handshake(raw, await generateSigningKey(), { features: [Feature.binary] });
      const f = await binaryRequestFrame(ch, "echo", "once");
      raw.send(f);
      assert.equal(await readResponse(raw, ch), { data: "once" });
      raw.send(f);
      return x.outcome(raw);
    },
  },
  {
    name: "a binary request on a binding without the binary feature gets bad_request and close 1003",
    sent: "a well-formed binary request after a handshake that did not offer `binary`",
    broker: "main",
    expect: { reply: "error", error: ErrorCode.badRequest, close: C.binary },
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      p.raw.send(await binaryRequestFrame(p.ch, "echo", 1));
      return x.outcome(p.raw);
    },
  },
  {
    name: "a binary response frame (kind 2) sent by a client gets bad_request and close 4000",
    sent: "a binary request with its first byte set to 2",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const raw = await x.open();
      const ch = await handshake(raw, await generateSigningKey(), { features: [Feature.binary] });
      const f = new Uint8Array(await binaryRequestFrame(ch, "echo", 1));
      f[0] = 2;
      raw.send(f);
      return x.outcome(raw);
    },
  },
  {
    name: "a request replayed on the same connection gets unauthorised",
    sent: "request n, then request n again",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const f = await requestFrame(p.ch, "echo", "once");
      p.raw.send(f);
      assert.equal(await readResponse(p.raw, p.ch), { data: "once" });
      p.raw.send(f);
      return x.outcome(p.raw);
    },
  },
  {
    name: "an older request replayed after a newer one gets unauthorised",
    sent: "requests 1, 2 accepted; then 1 again",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const f1 = await requestFrame(p.ch, "echo", 1);
      const f2 = await requestFrame(p.ch, "echo", 2);
      p.raw.send(f2);
      assert.equal(await readResponse(p.raw, p.ch), { data: 2 });
      p.raw.send(f1);
      return x.outcome(p.raw);
    },
  },
  {
    name: "a request replayed on a new connection gets unauthorised",
    sent: "an accepted request, replayed on a fresh socket",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const f = await requestFrame(p.ch, "echo", "once");
      p.raw.send(f);
      assert.equal(await readResponse(p.raw, p.ch), { data: "once" });
      const other = await x.open();
      other.send(f);
      return x.outcome(other);
    },
  },
  {
    name: "a request replayed on a new connection that resumed the same channel gets unauthorised (other binding, other keys)",
    sent: "resume of the channel on a fresh socket, then the old binding's accepted request",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const f = await requestFrame(p.ch, "echo", "once");
      p.raw.send(f);
      assert.equal(await readResponse(p.raw, p.ch), { data: "once" });
      const other = await x.open();
      assert.is((await resume(other, { ...p.ch })).type, "resumed");
      other.send(f);
      return x.outcome(other);
    },
  },
  frameRow("a request on a fresh socket gets unauthorised, and the socket stays", "`{type: request, channel: random, seq: 1, request: 48 random bytes}`", () => forged(someChannel()), UNAUTHORISED),
  {
    name: "a forged request for the victim's channel id gets unauthorised and the victim is untouched",
    sent: "`{type: request, channel: victim's, seq: 1, request: random}`",
    broker: "main",
    expect: UNAUTHORISED,
    run: async (x) => sendOne(x, forged(x.victim.ch.grant.channel)),
  },
  {
    name: "an authenticated request that is not JSON gets an encrypted inner bad_request; the channel stays usable",
    sent: "sealed inner text `not json`",
    broker: "main",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      p.raw.send(await sealedText(p.ch, "not json"));
      const f = await p.raw.next();
      assert.is((await readInner(p.ch, f)).error?.code, ErrorCode.badRequest);
      assert.equal(await call(p.raw, p.ch, "echo", 1), { data: 1 });
      return { reply: f.type, error: null, close: null };
    },
  },
  {
    name: "an authenticated request with a 65-character op gets an encrypted inner bad_request",
    sent: 'sealed `{"op": 65 × "a"}`',
    broker: "main",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      p.raw.send(await sealedText(p.ch, JSON.stringify({ op: "a".repeat(65) })));
      const f = await p.raw.next();
      assert.is((await readInner(p.ch, f)).error?.code, ErrorCode.badRequest);
      return { reply: f.type, error: null, close: null };
    },
  },
  {
    name: "an authenticated request whose plaintext is not UTF-8 gets bad_request for that seq; the socket stays",
    sent: "sealed bytes ff fe",
    broker: "main",
    expect: { reply: "error", error: ErrorCode.badRequest, close: null },
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const seq = ++p.ch.seq;
      const raw = sealRequestBytes(p.ch, seq, new Uint8Array([0xff, 0xfe]));
      p.raw.send({ type: "request", channel: p.ch.grant.channel, seq, request: b64u(raw) });
      const got = await x.outcome(p.raw);
      assert.equal(await call(p.raw, p.ch, "echo", 1), { data: 1 });
      return got;
    },
  },
  frameRow("a request with seq 0 gets bad_request and close 4000", "`seq: 0`", () => forged(someChannel(), 0), BAD),
  frameRow(`a request with seq ${MAX_WIRE_SEQ + 1} (over MAX_WIRE_SEQ) gets bad_request and close 4000`, "`seq: 2^32`", () => forged(someChannel(), MAX_WIRE_SEQ + 1), BAD),
  {
    name: "a request on the bound channel with seq past its type's cap (2^24 AES-256-GCM, 2^32 − 1 ChaCha20-Poly1305) gets bad_request and close 4000",
    sent: "`seq: maxSeq + 1` on the bound channel",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      assert.is(p.ch.keys.maxSeq, MAX_SEQ_BY_TYPE[p.ch.grant.key.type]);
      p.raw.send(forged(p.ch.grant.channel, p.ch.keys.maxSeq + 1));
      return x.outcome(p.raw);
    },
  },
  frameRow("a request with seq 1.5 gets bad_request and close 4000", "`seq: 1.5`", () => forged(someChannel(), 1.5), BAD),
  frameRow('a request with seq "1" (a string) gets bad_request and close 4000', '`seq: "1"`', () => ({ ...forged(someChannel()), seq: "1" }), BAD),
  frameRow("a request ciphertext shorter than the GCM tag gets bad_request and close 4000", "`request`: 15 bytes", () => forged(someChannel(), 1, 15), BAD),
  frameRow("a request channel id of 21 characters gets bad_request and close 4000", "`channel`: 21 characters", () => forged(someChannel().slice(0, 21)), BAD),
  {
    name: "operator ops from a non-operator get an inner forbidden and the victim is untouched",
    sent: "`admin.revoke {channel: victim's}` and `admin.channels` from an ordinary identity",
    broker: "main",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      assert.is((await call(p.raw, p.ch, "admin.revoke", { channel: x.victim.ch.grant.channel })).error?.code, ErrorCode.forbidden);
      assert.is((await call(p.raw, p.ch, "admin.push", { channel: x.victim.ch.grant.channel, message: "x" })).error?.code, ErrorCode.forbidden);
      assert.is((await call(p.raw, p.ch, "admin.channels")).error?.code, ErrorCode.forbidden);
      return { reply: "response", error: null, close: null };
    },
  },

  // ---------------------------------------------------------------- resume
  {
    name: "a resume of an unknown channel looks like any resume: `resumed`, its first request unauthorised, and the socket can still handshake",
    sent: "`{type: resume, channel: random, nonce}`, then a request with random ciphertext",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const raw = await x.open();
      const channel = someChannel();
      raw.send({ type: "resume", channel, nonce: b64u(randomBytes(32)) });
      assert.is((await raw.next()).type, "resumed");
      raw.send({ type: "request", channel, seq: 1, request: b64u(randomBytes(40)) });
      return stillUsable(raw, await x.outcome(raw));
    },
  },
  {
    name: "a forged resume of the victim's channel gets `resumed`, but its first request gets unauthorised and the victim keeps its channel",
    sent: "`resume {channel: victim's}`, then a request with random ciphertext",
    broker: "main",
    expect: UNAUTHORISED,
    run: async (x) => {
      const raw = await x.open();
      raw.send({ type: "resume", channel: x.victim.ch.grant.channel, nonce: b64u(randomBytes(32)) });
      assert.is((await raw.next()).type, "resumed");
      raw.send(forged(x.victim.ch.grant.channel));
      return x.outcome(raw);
    },
  },
  {
    name: "a stale resume (captured resume and first request, replayed) gets unauthorised and the resumed client keeps the channel",
    sent: "A handshakes; B resumes and sends request 1; C replays B's resume and request 1",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1, resumed: 1 },
    run: async (x) => {
      const p = await x.peer();
      const b = await x.open();
      const nonce = b64u(randomBytes(32));
      const resumeFrame = { type: "resume", channel: p.ch.grant.channel, nonce };
      b.send(resumeFrame);
      const rf = await b.next();
      assert.is(rf.type, "resumed");
      const bch: RawChannel = { ...p.ch, keys: await deriveBinding(p.ch.channelKey, p.ch.grant.channel, fromB64u(nonce, "nonce"), fromB64u(rf.nonce, "nonce"), p.ch.grant.key.type), seq: 0 };
      const first = await requestFrame(bch, "whoami");
      b.send(first);
      assert.is((await readResponse(b, bch)).data.channel, p.ch.grant.channel);
      assert.is((await p.raw.closed).code, C.replaced, "the older binding is retired on activation");
      const c = await x.open();
      c.send(resumeFrame);
      assert.is((await c.next()).type, "resumed");
      c.send(first);
      const got = await x.outcome(c);
      assert.equal(await call(b, bch, "echo", "still mine"), { data: "still mine" });
      return got;
    },
  },
  {
    name: "a resume while a handshake is pending gets bad_request and close 4000",
    sent: "hello, then resume",
    broker: "main",
    expect: BAD,
    run: async (x) => {
      const raw = await x.open();
      await challengeFor(raw, await generateSigningKey());
      raw.send({ type: "resume", channel: someChannel(), nonce: b64u(randomBytes(32)) });
      return x.outcome(raw);
    },
  },
  {
    name: "a resume on a bound connection gets bad_request and close 4000",
    sent: "full handshake, then resume of the same channel",
    broker: "main",
    expect: BAD,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      p.raw.send({ type: "resume", channel: p.ch.grant.channel, nonce: b64u(randomBytes(32)) });
      return x.outcome(p.raw);
    },
  },
  {
    name: "a second resume on a resuming connection gets bad_request and close 4000",
    sent: "resume (answered `resumed`), resume again",
    broker: "main",
    expect: BAD,
    run: async (x) => {
      const raw = await x.open();
      raw.send({ type: "resume", channel: x.victim.ch.grant.channel, nonce: b64u(randomBytes(32)) });
      assert.is((await raw.next()).type, "resumed");
      raw.send({ type: "resume", channel: x.victim.ch.grant.channel, nonce: b64u(randomBytes(32)) });
      return x.outcome(raw);
    },
  },
  {
    name: "a handshake after a forged resume of the victim's channel gives the attacker its own channel only; the victim is untouched",
    sent: "`resume {channel: victim's}`, then hello + proof with the attacker's key, then whoami",
    broker: "main",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 1 },
    run: async (x) => {
      const raw = await x.open();
      raw.send({ type: "resume", channel: x.victim.ch.grant.channel, nonce: b64u(randomBytes(32)) });
      assert.is((await raw.next()).type, "resumed");
      const me = await generateSigningKey();
      const ch = await handshake(raw, me);
      const who = await call(raw, ch, "whoami");
      assert.is(who.data.identity, me.public.fingerprint);
      assert.is.not(who.data.channel, x.victim.ch.grant.channel);
      raw.send(forged(x.victim.ch.grant.channel, 5));
      assert.is((await raw.next()).error?.code, ErrorCode.unauthorised);
      return { reply: "response", error: null, close: null };
    },
  },
  frameRow("a resume nonce of 8 bytes gets bad_request and close 4000", "`resume.nonce`: 8 bytes", () => ({ type: "resume", channel: someChannel(), nonce: b64u(randomBytes(8)) }), BAD),
  frameRow("a resume without a channel gets bad_request and close 4000", "`{type: resume, nonce}`", () => ({ type: "resume", nonce: b64u(randomBytes(32)) }), BAD),

  // ---------------------------------------------------------------- closed, revoked, replaced channels
  {
    name: "after `channel.close`, requests get unauthorised, a resume gets unauthorised, and old frames replayed elsewhere get unauthorised",
    sent: "`channel.close`; then echo; resume on a new socket; the pre-close request replayed",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const old = await requestFrame(p.ch, "echo", "before");
      p.raw.send(old);
      await readResponse(p.raw, p.ch);
      assert.equal(await call(p.raw, p.ch, "channel.close"), { data: { closed: true } });
      const r = await call(p.raw, p.ch, "echo", 1);
      assert.is(r.error?.code, ErrorCode.unauthorised);
      assert.ok(await resumeRefused(x, p.ch), "the retired channel was resumed");
      const other = await x.open();
      other.send(old);
      return x.outcome(other);
    },
  },
  {
    name: "a revoked channel gets the revoked notice and close 4005; its resume and replayed frames get unauthorised",
    sent: "operator `admin.revoke {channel}`; then resume and a replayed request on new sockets",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const old = await requestFrame(p.ch, "echo", "before");
      p.raw.send(old);
      await readResponse(p.raw, p.ch);
      assert.equal(await x.operator("admin.revoke", { channel: p.ch.grant.channel }), { data: { revoked: [p.ch.grant.channel] } });
      assert.equal(await openPush(p.ch, await p.raw.next()), { notice: "revoked" });
      assert.is((await p.raw.closed).code, C.revoked);
      assert.ok(await resumeRefused(x, p.ch), "the retired channel was resumed");
      const other = await x.open();
      other.send(old);
      return x.outcome(other);
    },
  },
  {
    name: "after a renewal on the same connection, a request on the replaced channel gets unauthorised",
    sent: "handshake; renewal handshake on the same socket; request on the first channel",
    broker: "main",
    expect: UNAUTHORISED,
    changes: { established: 2 },
    run: async (x) => {
      const key = await generateSigningKey();
      const p = await x.peer(key);
      const renewed = await handshake(p.raw, key);
      assert.is.not(renewed.grant.channel, p.ch.grant.channel);
      p.raw.send(await requestFrame(p.ch, "echo", 1));
      const got = await x.outcome(p.raw);
      assert.equal(await call(p.raw, renewed, "echo", 2), { data: 2 });
      return got;
    },
  },
  {
    name: "a channel replaced from another connection gets the replaced notice and close 4004; its resume gets unauthorised",
    sent: "A handshakes as k; B handshakes as k; A's channel resumed on C",
    broker: "main",
    expect: { reply: "push", close: C.replaced },
    changes: { established: 2 },
    run: async (x) => {
      const key = await generateSigningKey();
      const a = await x.peer(key);
      await x.peer(key);
      const n = await a.raw.next();
      assert.equal(await openPush(a.ch, n), { notice: "replaced" });
      const closed = await a.raw.closed;
      assert.ok(await resumeRefused(x, a.ch), "the replaced channel was resumed");
      return { reply: n.type, error: null, close: closed.code };
    },
  },

  // ---------------------------------------------------------------- floods and limits (default limits)
  {
    name: "a flood of 40 hellos carrying a victim's public key does not lock the victim out, and the standing victim is untouched",
    sent: "40 × hello(victim2's key) and 5 × hello(victim's key), each on its own socket; then victim2 handshakes",
    broker: "main",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 1 },
    run: async (x) => {
      const victim2 = await generateSigningKey();
      for (let i = 0; i < 45; i++) {
        const raw = await x.open();
        await challengeFor(raw, i < 40 ? victim2 : x.victim.key);
        raw.close();
      }
      const p = await x.peer(victim2, { localAddress: "127.0.0.4" });
      assert.equal(await call(p.raw, p.ch, "echo", 1), { data: 1 });
      return { reply: "response", error: null, close: null };
    },
  },
  {
    name: "the 31st proven handshake of one identity within a minute gets too_many and close 4002",
    sent: "31 handshakes (renewals) of one key on one socket",
    broker: "main",
    expect: { reply: "error", error: ErrorCode.tooMany, close: C.tooMany },
    changes: { established: 30 },
    run: async (x) => {
      const key = await generateSigningKey();
      // Aligned first: a socket opened before the wait could reach the handshake timeout (4001) during it.
      await alignWindow(60_000, 10_000);
      const raw = await x.open();
      for (let i = 0; i < 30; i++) await handshake(raw, key);
      const { h, c } = await challengeFor(raw, key);
      raw.send((await answerChallenge(h, c, () => {})).proof);
      return x.outcome(raw);
    },
  },
  {
    // A frame that needs no waiting is handled as it arrives (docs/PERFORMANCE.md); frames queue behind one that
    // waits (here the hello's HPKE and signature), and the 257th queued one closes the socket.
    name: "300 frames in one burst behind a hello (over the 256 queued) get too_many and close 4002",
    sent: "a hello and 300 forged request frames written at once",
    broker: "main",
    expect: { error: ErrorCode.tooMany, close: C.tooMany },
    run: async (x) => {
      const raw = await x.open();
      const channel = someChannel();
      const { o } = await helloObject();
      const burst = [JSON.stringify(o), ...Array.from({ length: 300 }, (_, i) => JSON.stringify(forged(channel, i + 1)))];
      (raw.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket.cork();
      for (const f of burst) raw.ws.send(f);
      (raw.ws as unknown as { _socket: { uncork(): void } })._socket.uncork();
      const closed = await within(raw.closed, 5000, "close");
      const codes = raw.frames.filter((f) => f.type === "error").map((f) => String(f.error.code));
      return { reply: raw.frames[0]?.type ?? null, error: codes.includes(ErrorCode.tooMany) ? ErrorCode.tooMany : (codes[0] ?? null), close: closed.code };
    },
  },
  {
    name: "a slow consumer that never reads is cut off once its send buffer passes 4 MiB (close 4003), and others are served meanwhile",
    sent: "socket paused; ~45 KB echo requests until the server drops the connection; a bystander's echo after each batch",
    broker: "main",
    expect: { error: null, close: C.slow },
    changes: { established: 2 },
    run: async (x) => {
      const p = await x.peer();
      const bystander = await x.peer();
      const sock = (p.raw.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
      sock.pause();
      const big = "y".repeat(45_000);
      // The cut is logged at once; the socket leaves the node's list only when it is torn down, 2 s later.
      const logged = () => x.broker.output().includes("slow consumer cut off");
      let served = 0;
      for (let batch = 0; batch < 40 && !logged(); batch++) {
        for (let i = 0; i < 30 && !logged(); i++) p.raw.send(await requestFrame(p.ch, "echo", big));
        await sleep(50);
        // Meanwhile: another client's request is answered while the slow one's buffer fills.
        if (!logged()) {
          const t0 = Date.now();
          assert.equal(await call(bystander.raw, bystander.ch, "echo", batch), { data: batch });
          assert.ok(Date.now() - t0 < 2000, `the bystander waited ${Date.now() - t0} ms during batch ${batch}`);
          served++;
        }
      }
      assert.ok(logged(), "the server kept the slow consumer");
      assert.ok(served > 0, "no bystander request went out while the slow consumer was served");
      sock.resume(); // read what the buffers hold, up to the close frame
      const closed = await within(p.raw.closed, 5000, "close");
      // The node tears the socket down when the TCP connection ends (or 2 s after its close frame): poll for it.
      const stillBound = async () => {
        const snap = await x.operator("admin.channels");
        return ((snap.data.connected ?? snap.data.channels) as { channel: string }[]).some((c) => c.channel === p.ch.grant.channel);
      };
      for (let i = 0; i < 40 && (await stillBound()); i++) await sleep(100);
      assert.not.ok(await stillBound(), "still bound 4 s after the close");
      const err = p.raw.frames.find((f) => f.type === "error");
      return { reply: null, error: err ? String(err.error.code) : null, close: closed.code };
    },
  },

  // ---------------------------------------------------------------- identity moves (PROTOCOL.md §5.7)
  frameRow(
    "a hello with `move_to` but without the identity-move feature gets bad_request and close 4000",
    "a valid hello plus `move_to` (a fresh key), `features` without identity-move",
    async () => ({ ...(await helloObject()).o, move_to: wirePublicKey((await generateSigningKey()).public) }),
    BAD,
  ),
  frameRow(
    "a hello with the identity-move feature but no `move_to` gets bad_request and close 4000",
    "a valid hello with `features: [identity-move]`, no `move_to`",
    async () => ({ ...(await helloObject()).o, features: [Feature.identityMove] }),
    BAD,
  ),
  frameRow(
    "a hello moving to its own `public_key` gets bad_request and close 4000",
    "`move_to` equal to `public_key`, with identity-move",
    async () => {
      const { o } = await helloObject();
      return { ...o, features: [Feature.identityMove], move_to: o.public_key };
    },
    BAD,
  ),
  frameRow(
    "a hello whose `move_to` is a string gets bad_request and close 4000",
    "`move_to: \"SHA256:…\"`, with identity-move",
    async () => ({ ...(await helloObject()).o, features: [Feature.identityMove], move_to: "SHA256:" + "A".repeat(43) }),
    BAD,
  ),
  moveRow(
    "a move of the victim's identity whose move signature is made by another key gets unauthorised and close 4000; nothing moves",
    "hello as the victim with `move_to` K, proof signed by the victim, `move_signature` by a key other than K",
    "forged",
    BAD_PROOF,
  ),
  moveRow(
    "a move proof without `move_signature` gets bad_request and close 4000; nothing moves",
    "hello as the victim with `move_to`, proof with the victim's signature only",
    "stripped",
    BAD,
  ),
  moveRow(
    "a `move_signature` in the proof of a plain hello gets bad_request and close 4000",
    "plain hello as the victim, proof plus a `move_signature`",
    "unasked",
    BAD,
  ),
  moveRow(
    "a move of the victim's identity to the attacker's key, proven by the attacker's keys only, gets unauthorised and close 4000",
    "hello with the victim's `public_key` and `move_to` the attacker's key; proof and move signature by the attacker",
    "hijack",
    BAD_PROOF,
  ),
];

/** A move attempt on a fresh socket (PROTOCOL.md §5.7); nothing may change, the harness checks the victim. */
function moveRow(name: string, sent: string, how: "forged" | "stripped" | "unasked" | "hijack", expect: Expect): Row {
  return {
    name,
    sent,
    broker: "main",
    expect,
    run: async (x) => {
      const target = await generateSigningKey();
      const other = await generateSigningKey();
      const raw = await x.open();
      // hijack: the hello names the victim, but every signature comes from the attacker's key
      const from = how === "hijack" ? ({ public: x.victim.key.public, privateKey: other.privateKey } as SigningKey) : x.victim.key;
      const moveTo = how === "forged" ? ({ public: target.public, privateKey: other.privateKey } as SigningKey) : how === "hijack" ? other : target;
      const h = await createHello(from, how === "unasked" ? {} : { moveTo });
      raw.send(fromUtf8(h.bytes));
      const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
      const { proof } = await answerChallenge(h, c, () => {});
      if (how === "stripped") delete proof.move_signature;
      raw.send(how === "unasked" ? { ...proof, move_signature: b64u(randomBytes(64)) } : proof);
      return x.outcome(raw);
    },
  };
}

/** Decrypts a response frame to its inner object. */
async function readInner(ch: RawChannel, f: Frame): Promise<Frame> {
  return JSON.parse(await openFrame(ch.keys.s2c, FrameKind.response, f.seq, f.channel, f.response)) as Frame;
}

// ------------------------------------------------------------------ rows on the tight broker (limits)

export const limitRows: Row[] = [
  {
    name: `raw TCP connections from one address beyond ${2 * TIGHT.connectionsPerAddress} (twice the connection limit) are dropped before any HTTP; the first ones stay open`,
    sent: `${2 * TIGHT.connectionsPerAddress + 1} TCP connections from one address, none sending a byte`,
    broker: "tight",
    expect: { http: 0 },
    run: async (x) => {
      const held = [];
      for (let i = 0; i < 2 * TIGHT.connectionsPerAddress; i++) held.push(await rawTcp(x, x.address));
      const extra = await rawTcp(x, x.address);
      const bytes = await within(extra.closed, 2000, "the extra connection is dropped");
      // The ones within the bound are still open: none closed in the meantime.
      const early = await Promise.race([Promise.any(held.map((h) => h.closed.then(() => true))), sleep(200).then(() => false)]);
      assert.not.ok(early, "a connection within the bound was closed");
      return { reply: null, error: null, close: null, http: bytes.length === 0 ? 0 : -1 };
    },
  },
  {
    name: `the ${TIGHT.connectionsPerAddress + 1}th connection from one address is refused with HTTP 429; other addresses are served`,
    sent: `${TIGHT.connectionsPerAddress + 1} WebSocket upgrades from one address`,
    broker: "tight",
    expect: { http: 429 },
    run: async (x) => {
      for (let i = 0; i < TIGHT.connectionsPerAddress; i++) await x.open();
      try {
        await x.open();
        return { reply: null, error: null, close: null, http: 101 };
      } catch (e) {
        return { reply: null, error: null, close: null, http: httpStatus(e) };
      }
    },
  },
  {
    // SECURITY.md "Resets": the refused socket had no error listener, and the peer's reset ended the node.
    name: `an upgrade refused with HTTP 429 and then reset by the peer (RST) leaves the node serving`,
    sent: `${TIGHT.connectionsPerAddress} WebSockets from one address, one more upgrade, a TCP reset once its 429 is read`,
    broker: "tight",
    expect: { http: 429 },
    run: async (x) => {
      for (let i = 0; i < TIGHT.connectionsPerAddress; i++) await x.open();
      const s = netConnect({ port: x.port, host: "127.0.0.1", localAddress: x.address });
      x.track(() => s.destroy());
      s.on("error", () => {});
      s.once("connect", () => s.write(UPGRADE(x.port)));
      const head = await within(new Promise<string>((r) => s.once("data", (d: Buffer) => r(d.toString("latin1")))), 3000, "the refusal");
      s.resetAndDestroy();
      await sleep(100); // the harness then checks that the broker lives and serves
      return { reply: null, error: null, close: null, http: Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1] ?? -1) };
    },
  },
  {
    name: `20 simultaneous upgrades from one address: at most ${TIGHT.connectionsPerAddress} succeed, the rest get HTTP 429`,
    sent: "20 upgrades at once from one address",
    broker: "tight",
    expect: { http: 429 },
    run: async (x) => {
      const all = await Promise.allSettled(Array.from({ length: 20 }, () => x.open()));
      const ok = all.filter((r) => r.status === "fulfilled").length;
      assert.ok(ok <= TIGHT.connectionsPerAddress, `${ok} connections accepted`);
      const refused = all.find((r): r is PromiseRejectedResult => r.status === "rejected");
      return { reply: null, error: null, close: null, http: refused ? httpStatus(refused.reason) : 101 };
    },
  },
  {
    name: `the ${TIGHT.hellosPerAddress + 1}th hello from one address within the window gets too_many and close 4002`,
    sent: `${TIGHT.hellosPerAddress} DES-only hellos (each unsupported) then one more, on one socket`,
    broker: "tight",
    expect: { reply: "error", error: ErrorCode.tooMany, close: C.tooMany },
    run: async (x) => {
      // Aligned first: the wait may outlast the tight broker's 1.5 s handshake timeout of an open socket.
      await alignWindow(10_000, 3_000);
      const raw = await x.open();
      for (let i = 0; i < TIGHT.hellosPerAddress; i++) {
        const { o } = await helloObject();
        o.channel_types = ["DES"];
        raw.send(JSON.stringify(o));
        assert.is((await raw.next()).error?.code, ErrorCode.unsupported);
      }
      raw.send(fromUtf8((await createHello(await generateSigningKey())).bytes));
      return x.outcome(raw);
    },
  },
  {
    name: `resumes have a per-address budget of their own: the ${TIGHT.resumesPerAddress + 1}th gets too_many and close 4002, while a hello is still challenged`,
    sent: `${TIGHT.resumesPerAddress} resumes of unknown channels (each \`resumed\`), a hello (challenged), then one more resume, a socket each (within the connection limit)`,
    broker: "tight",
    expect: { reply: "error", error: ErrorCode.tooMany, close: C.tooMany },
    run: async (x) => {
      await alignWindow(10_000, 3_000);
      for (let i = 0; i < TIGHT.resumesPerAddress; i++) {
        const r = await x.open();
        r.send({ type: "resume", channel: someChannel(), nonce: b64u(randomBytes(32)) });
        assert.is((await r.next()).type, "resumed");
        r.close();
        await r.closed;
      }
      // The resumes used none of the hello budget (PROTOCOL.md §11.1).
      const h = await x.open();
      h.send(fromUtf8((await createHello(await generateSigningKey())).bytes));
      assert.is((await h.next()).type, "challenge");
      h.close();
      await h.closed;
      const raw = await x.open();
      raw.send({ type: "resume", channel: someChannel(), nonce: b64u(randomBytes(32)) });
      return x.outcome(raw);
    },
  },
  {
    name: "slowloris: a socket that sends nothing is closed with 4001 at the handshake timeout",
    sent: "WebSocket upgrade, then silence",
    broker: "tight",
    expect: { reply: null, error: null, close: C.timeout },
    run: async (x) => {
      const raw = await x.open();
      const t0 = Date.now();
      const got = await x.outcome(raw, { closeWithinMs: TIGHT.handshakeTimeoutMs + 2000 });
      assert.ok(Date.now() - t0 >= TIGHT.handshakeTimeoutMs - 100, "closed too early");
      return got;
    },
  },
  {
    name: "slowloris: a hello without a proof is closed with 4001 at the handshake timeout",
    sent: "hello, then silence",
    broker: "tight",
    expect: { reply: "challenge", error: null, close: C.timeout },
    run: async (x) => {
      const raw = await x.open();
      raw.send(fromUtf8((await createHello(await generateSigningKey())).bytes));
      return x.outcome(raw, { closeWithinMs: TIGHT.handshakeTimeoutMs + 2000 });
    },
  },
  {
    name: "slowloris: a WebSocket frame dribbled one byte at a time is cut off at the handshake timeout (close 4001)",
    sent: "upgrade, then a 100-byte text frame header and one byte every 200 ms",
    broker: "tight",
    expect: { close: C.timeout },
    run: async (x) => {
      const s = await rawTcp(x, x.address);
      s.write(UPGRADE(x.port));
      await within(s.upgraded, 2000, "upgrade");
      s.write(new Uint8Array([0x81, 0x80 | 100, 1, 2, 3, 4])); // FIN text, masked, 100 bytes
      const drip = setInterval(() => s.write(new Uint8Array([0x20])), 200);
      try {
        const bytes = await within(s.closed, TIGHT.handshakeTimeoutMs + 4000, "server close");
        return { reply: null, error: null, close: closeCodeIn(bytes) };
      } finally {
        clearInterval(drip);
      }
    },
  },
  {
    name: "a forged resume of the victim's channel cannot hold the socket: forged requests get unauthorised and the socket is closed with 4001",
    sent: "`resume {channel: victim's}`, then a forged request every 300 ms",
    broker: "tight",
    expect: { reply: "resumed", close: C.timeout },
    run: async (x) => {
      const raw = await x.open();
      raw.send({ type: "resume", channel: x.victim.ch.grant.channel, nonce: b64u(randomBytes(32)) });
      const first = await raw.next();
      let sent = 0;
      const drip = setInterval(() => {
        if (raw.ws.readyState !== 1) return;
        raw.send(forged(x.victim.ch.grant.channel, 1 + Math.floor(Math.random() * 1000)));
        sent++;
      }, 300);
      try {
        const closed = await within(raw.closed, TIGHT.handshakeTimeoutMs + 3000, "close");
        // One answer per forged request (the last may cross the close), each unauthorised: a node that
        // dropped them silently would leave no frame, and `every` of no frame is true.
        assert.ok(sent >= 2, `only ${sent} forged requests went out before the close`);
        assert.ok(raw.frames.length >= sent - 1 && raw.frames.length <= sent, `${raw.frames.length} answers to ${sent} forged requests`);
        assert.ok(raw.frames.every((f) => f.error?.code === ErrorCode.unauthorised));
        return { reply: first.type, error: null, close: closed.code };
      } finally {
        clearInterval(drip);
      }
    },
  },
  {
    // PROTOCOL.md §11 "failed frames": frames with nothing queued ahead are handled on their tick, so
    // the queue limit never fills; without a budget of their own, 8 such sockets took a core and a
    // bystander waited seconds for one handshake.
    name: `a keyless flood of failed frames from one address is cut off with too_many and close 4002 within the address's budget (${TIGHT.failedFramesPerAddress} a window), and a bystander's handshakes stay fast meanwhile`,
    sent: `${TIGHT.connectionsPerAddress} sockets from one address for 3 s, each: \`resume\` of a random channel id, then forged requests as fast as the socket takes them; reconnect when closed`,
    broker: "tight",
    expect: { error: ErrorCode.tooMany, close: C.tooMany },
    changes: { established: 8 },
    run: async (x) => {
      await alignWindow(10_000, 5_000); // one window of the address's budget
      // Each bystander handshake from an address of its own (the tight broker allows 5 hellos an address).
      const bystander = (i: number) => x.address.replace(/^127\.0\.1\./, `127.0.${4 + i}.`);
      const flood = floodFailedFrames(x.url, x.address, TIGHT.connectionsPerAddress, 3000);
      const times: number[] = [];
      for (let i = 0; i < 8; i++) {
        const t0 = performance.now();
        const p = await x.peer(undefined, { localAddress: bystander(i) });
        times.push(performance.now() - t0);
        p.raw.close();
        await p.raw.closed;
        await sleep(250);
      }
      const r = await flood;
      // Answers: `resumed` and one too_many per socket, plus at most the address's budget of unauthorised.
      assert.ok(r.answers <= TIGHT.failedFramesPerAddress + 2 * r.sockets, `${r.answers} answers to ${r.sockets} flooding sockets`);
      assert.ok(Math.max(...times) < 2000, `a bystander's handshake took ${Math.max(...times).toFixed(0)} ms during the flood (all: ${times.map((t) => t.toFixed(0)).join(", ")})`);
      const codes = Object.keys(r.closes).filter((k) => k !== "flooder" && k !== "429").map(Number);
      // Every flooding socket ends with 4002 (its failed frames, or its resumes, over budget), or is
      // refused at the upgrade (429) once the address's budget is spent; none outlives the flood.
      return { reply: null, error: codes.includes(C.tooMany) ? ErrorCode.tooMany : null, close: codes.every((c) => c === C.tooMany) ? C.tooMany : (codes.find((c) => c !== C.tooMany) ?? null) };
    },
  },
  {
    name: "a renewal hello on a bound connection without a proof is closed with 4001 at the handshake timeout",
    sent: "handshake; hello; silence",
    broker: "tight",
    expect: { reply: "challenge", close: C.timeout },
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      p.raw.send(fromUtf8((await createHello(p.key)).bytes));
      return x.outcome(p.raw, { closeWithinMs: TIGHT.handshakeTimeoutMs + 2000 });
    },
  },
  {
    name: "64 requests in flight: the 65th gets too_many for its seq, the socket stays, and the 64 are all answered",
    sent: "64 × `sleep 1500`, then one more request",
    broker: "slow",
    expect: { reply: "error", error: ErrorCode.tooMany, close: null },
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      for (let i = 0; i < 64; i++) p.raw.send(await requestFrame(p.ch, "sleep", 1500));
      const extra = await requestFrame(p.ch, "sleep", 0);
      p.raw.send(extra);
      const f = await p.raw.next();
      assert.is(f.seq, extra.seq);
      const answers = new Set<number>();
      for (let i = 0; i < 64; i++) answers.add((await p.raw.next(5000)).seq as number);
      assert.is(answers.size, 64);
      assert.equal(await call(p.raw, p.ch, "echo", "after"), { data: "after" });
      return { reply: f.type, error: f.error?.code ?? null, close: null };
    },
  },
];

// ------------------------------------------------------------------ rows on the short-ttl broker (expiry)

limitRows.push(
  {
    name: "an expired channel: the expired notice arrives, then its requests get unauthorised",
    sent: "handshake (ttl 2 s); wait for the notice; echo",
    broker: "short",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const pushes: Frame[] = [];
      for (;;) {
        const f = await p.raw.next(4000);
        assert.is(f.type, "push");
        pushes.push(await openPush(p.ch, f));
        if (pushes.at(-1)?.notice === "expired") break;
      }
      p.raw.send(await requestFrame(p.ch, "echo", 1));
      return x.outcome(p.raw);
    },
  },
  {
    name: "an expired channel cannot be resumed, and its requests replayed on a new connection get unauthorised",
    sent: "handshake (ttl 2 s), one request; after 2.3 s: resume, and the request replayed on a fresh socket",
    broker: "short",
    expect: UNAUTHORISED,
    changes: { established: 1 },
    run: async (x) => {
      const p = await x.peer();
      const old = await requestFrame(p.ch, "echo", "before");
      p.raw.send(old);
      assert.equal(await readResponse(p.raw, p.ch), { data: "before" });
      await sleep(Date.parse(p.ch.grant.valid_until) - Date.now() + 300);
      assert.ok(await resumeRefused(x, p.ch), "the expired channel was resumed");
      const other = await x.open();
      other.send(old);
      return x.outcome(other);
    },
  },
);

// ------------------------------------------------------------------ regressions: bugs this matrix found, now fixed

/** A row that showed a bug when it was written; `bug` says what was wrong, and where. */
export interface RegressionRow extends Row {
  bug: string;
}

export const regressionRows: RegressionRow[] = [
  {
    name: "a client whose socket drops right after its renewal proof gets going again, instead of closing for good",
    sent: "client library; renew(); the socket is cut just after the proof is written; then a request",
    broker: "main",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 3 },
    bug:
      "client/connection.ts: after the drop the client resumes its old channel, which its own (unanswered) renewal proof replaced; " +
      "the server's tombstone answers `replaced` + 4004, which the client takes as terminal",
    run: async (x) => {
      let armed = false;
      class CutAfterProof extends WebSocket {
        constructor(url: string) {
          super(url, { localAddress: "127.0.0.1" });
          x.track(() => this.terminate());
        }
        override send(data: unknown, ...rest: unknown[]): void {
          (super.send as (...a: unknown[]) => void)(data, ...rest);
          if (armed && typeof data === "string" && data.includes('"type":"proof"')) {
            armed = false;
            setImmediate(() => this.terminate()); // the proof reached the server; its answer is lost
          }
        }
      }
      const c = await connect(x.url, { key: await generateSigningKey(), serverKey: x.broker.fingerprint, WebSocket: CutAfterProof, reconnect: { baseMs: 50, maxMs: 200 } });
      x.track(() => void c.close());
      assert.is(await c.request("echo", 1), 1);
      armed = true;
      await c.renew().catch(() => {});
      await sleep(1000);
      const r = await c.request("echo", 2, { timeoutMs: 3000 }).then(
        () => ({ reply: "response", error: null }),
        (e: { code?: string }) => ({ reply: "error", error: e.code ?? "?" }),
      );
      return { ...r, close: null };
    },
  },
  {
    name: "to an outsider, a resume of a revoked channel looks the same as a resume of an unknown one",
    sent: "operator revokes a channel; an outsider sends `resume` for it, and for a random id",
    broker: "main",
    expect: { reply: "same" },
    changes: { established: 1 },
    bug:
      "server/connection.ts #onResume: a retired channel (a tombstone until its valid_until) is answered `resumed`, an unknown or expired one `unauthorised`, " +
      "so the channel id alone tells whether it was retired or never existed (DESIGN.md §7: they must look the same)",
    run: async (x) => {
      const p = await x.peer();
      await x.operator("admin.revoke", { channel: p.ch.grant.channel });
      await p.raw.closed;
      const a = await x.open();
      a.send({ type: "resume", channel: p.ch.grant.channel, nonce: b64u(randomBytes(32)) });
      const b = await x.open();
      b.send({ type: "resume", channel: someChannel(), nonce: b64u(randomBytes(32)) });
      const [fa, fb] = [await a.next(), await b.next()];
      return { reply: fa.type === fb.type ? "same" : `${String(fa.type)} vs ${String(fb.type)}`, error: null, close: null };
    },
  },
  {
    name: "a small-order Ed25519 identity key (the identity point) gets bad_request, not a channel for a signature anyone can make",
    sent: "hello with `public_key` = SPKI(01 00…00), proof R = identity, S = 0",
    broker: "main",
    expect: { reply: "error", error: ErrorCode.badRequest, close: C.bad },
    bug: "shared/crypto.ts importSpki accepts small-order Ed25519 points; OpenSSL's Ed25519 verify then accepts (R = identity, S = 0) for every message",
    run: (x) =>
      weakKeyHandshake(x, { type: "Ed25519", data: b64u(ED25519_IDENTITY_SPKI) }, async () => {
        const sig = new Uint8Array(64);
        sig[0] = 1;
        return sig;
      }),
  },
  {
    name: "an RSA identity key with public exponent 1 gets bad_request, not a channel for a signature anyone can make",
    sent: "hello with an RSA-2048 SPKI whose e = 1, proof = the PSS encoding itself",
    broker: "main",
    expect: { reply: "error", error: ErrorCode.badRequest, close: C.bad },
    bug: "shared/crypto.ts importSpki checks the RSA modulus size only; with e = 1 the PSS-encoded message is its own signature",
    run: async (x) => {
      const n = randomBytes(256);
      n[0]! |= 0x80;
      n[255]! |= 1;
      return weakKeyHandshake(x, { type: "RSA", data: b64u(rsaSpki(n, new Uint8Array([1]))) }, (msg) => pssEncode(msg, 2048));
    },
  },
  {
    name: "a request refused with too_many (in flight) cannot be executed later by replaying the same frame",
    sent: "64 × `sleep 300`; request n gets too_many; after the 64 answers, request n replayed",
    broker: "slow",
    expect: { reply: "error", error: ErrorCode.unauthorised, close: null },
    changes: { established: 1 },
    bug: "server/connection.ts #onRequest: the in-flight check returns too_many before the seq is consumed (lastSeq is set only after decryption), so the refused frame stays valid",
    run: async (x) => {
      const p = await x.peer();
      for (let i = 0; i < 64; i++) p.raw.send(await requestFrame(p.ch, "sleep", 300));
      const extra = await requestFrame(p.ch, "echo", "refused");
      p.raw.send(extra);
      assert.is((await p.raw.next()).error?.code, ErrorCode.tooMany);
      for (let i = 0; i < 64; i++) await p.raw.next(5000);
      p.raw.send(extra);
      return x.outcome(p.raw);
    },
  },
  {
    name: "an HTTP upgrade whose headers never finish is closed at the handshake timeout",
    sent: "`GET / HTTP/1.1` and one header line every second, never the blank line",
    broker: "tight",
    expect: { http: 408 },
    bug: "server/broker.ts: the HTTP server keeps Node's defaults (headersTimeout 60 s, checked every 30 s); sockets before the upgrade are not counted per address",
    run: async (x) => {
      const s = await rawTcp(x, x.address);
      s.write("GET / HTTP/1.1\r\nHost: x\r\n");
      const drip = setInterval(() => s.write("X-Slow: 1\r\n"), 1000);
      try {
        const bytes = await within(s.closed, TIGHT.handshakeTimeoutMs + 3000, "server close");
        const status = /^HTTP\/1\.1 (\d+)/.exec(Buffer.from(bytes).toString("latin1"));
        return { reply: null, error: null, close: null, http: status ? Number(status[1]) : 0 };
      } finally {
        clearInterval(drip);
      }
    },
  },
  {
    name: "a channel with a ttl over 24.8 days is not expired the moment it is granted",
    sent: "handshake on a broker with `--channel-ttl 2246400` (26 days), then echo",
    broker: "long",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 1 },
    bug: "server/connection.ts #schedule: setTimeout with a delay over 2^31 − 1 ms fires after 1 ms, so `expiring` and `expired` are pushed at once and the channel is dead",
    run: async (x) => {
      const p = await x.peer();
      await sleep(300);
      p.raw.send(await requestFrame(p.ch, "echo", 1));
      const f = await p.raw.next();
      return { reply: String(f.type), error: f.type === "error" ? String(f.error.code) : null, close: null };
    },
  },
  {
    name: "a request whose data nests 9 000 arrays deep gets an answer, and the broker process survives",
    sent: 'sealed `{"op":"echo","data":[[[…]]]}` 9 000 deep (24 KB)',
    broker: "main",
    expect: { reply: "response", error: null, close: null },
    changes: { established: 1 },
    bug: "(it killed the broker: kept last) server/connection.ts #handle: JSON.stringify(inner) runs outside the try; its RangeError rejects the un-awaited #handle promise and the unhandled rejection exits the process",
    run: async (x) => {
      const p = await x.peer();
      const depth = 9000;
      p.raw.send(await sealedText(p.ch, `{"op":"echo","data":${"[".repeat(depth)}${"]".repeat(depth)}}`));
      const f = await p.raw.next(3000).catch(() => undefined);
      return { reply: f ? String(f.type) : null, error: f?.type === "error" ? String(f.error.code) : null, close: null };
    },
  },
];
