/**
 * Properties of the frame decoders (shared/frames.ts, PROTOCOL.md §4):
 * decoding is validation. On any input a decoder returns a typed frame or
 * throws `bad_request` (never anything else); a valid frame decodes to exactly
 * its known fields, unknown members change nothing, a wrong type in any field
 * is refused, and decode ∘ encode is stable. Integers are taken by value, a
 * feature list names each feature once, server nonces are 32 bytes.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { b64u } from "../../shared/encoding.js";
import { ErrorCode } from "../../shared/errors.js";
import {
  BINARY_HEADER_BYTES,
  CHANNEL_ID_CHARS,
  MAX_SEQ,
  decodeClientBinary,
  decodeClientFrame,
  decodeGrant,
  decodeInnerPush,
  decodeInnerRequest,
  decodeInnerResponse,
  decodeServerBinary,
  decodeServerFrame,
  encodeBinaryHeader,
  wireErrorCode,
} from "../../shared/frames.js";
import { documentedCodes, params, psimbolsErrorSync } from "./support.js";

type Obj = Record<string, unknown>;
/** fast-check builds objects without a prototype; frames on the wire are plain JSON objects. */
const plain = (o: object): Obj => JSON.parse(JSON.stringify(o)) as Obj;

// ------------------------------------------------------------------ arbitraries of valid frames

const b64 = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map(b64u);
const channel = b64(16, 16);
const token = fc.string({ minLength: 1, maxLength: 64 });
const feature = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,20}$/);
const wireKey = fc.record({ type: token, data: fc.string({ maxLength: 200 }) });
const seq = fc.integer({ min: 1, max: MAX_SEQ });
const source = fc.string({ maxLength: 100 });

const hello = fc.record(
  {
    type: fc.constant("hello"),
    version: fc.integer({ min: 0, max: 255 }),
    public_key: wireKey,
    channel_types: fc.array(token, { maxLength: 16 }),
    kem: wireKey,
    nonce: b64(16, 64),
    features: fc.uniqueArray(feature, { maxLength: 16 }),
  },
  { requiredKeys: ["type", "version", "public_key", "channel_types", "kem", "nonce"] },
);
const proof = fc.record({ type: fc.constant("proof"), signature: b64(1, 512) });
const request = fc.record({ type: fc.constant("request"), channel, seq, request: b64(16, 300) });
const resume = fc.record(
  { type: fc.constant("resume"), channel, nonce: b64(16, 64), last_push: fc.nat() },
  { requiredKeys: ["type", "channel", "nonce"] },
);
const clientFrame: fc.Arbitrary<Obj> = fc.oneof(hello, proof, request, resume).map(plain);

const challenge = fc.record({
  type: fc.constant("challenge"),
  source,
  server_key: wireKey,
  channel_type: fc.constant("AES-256-GCM"),
  nonce: b64(32, 32),
  enc: b64(1, 256),
  features: fc.uniqueArray(feature, { maxLength: 16 }),
  signature: b64(1, 512),
});
const established = fc.record({ type: fc.constant("established"), source, response: b64(16, 300) });
const response = fc.record({ type: fc.constant("response"), source, channel, seq, response: b64(16, 300) });
const push = fc.record({ type: fc.constant("push"), source, channel, seq, push: b64(16, 300) });
const resumed = fc.record({ type: fc.constant("resumed"), source, channel, nonce: b64(32, 32) });
const error = fc.record(
  {
    type: fc.constant("error"),
    error: fc.record({ code: token, message: fc.string({ maxLength: 200 }) }),
    seq,
    channel: fc.string({ maxLength: CHANNEL_ID_CHARS }),
  },
  { requiredKeys: ["type", "error"] },
);
const serverFrame: fc.Arbitrary<Obj> = fc.oneof(challenge, established, response, push, resumed, error).map(plain);

/** Field names the decoders read, per frame type: anything else is "unknown". */
const KNOWN = new Set(["type", "version", "public_key", "channel_types", "kem", "nonce", "features", "signature", "channel", "seq", "request", "last_push", "source", "server_key", "channel_type", "enc", "response", "push", "error"]);
const unknownMembers = fc.dictionary(
  fc.string({ maxLength: 12 }).filter((k) => !KNOWN.has(k) && k !== "__proto__"),
  fc.jsonValue({ maxDepth: 3 }),
  { maxKeys: 4 },
).map(plain);

/** What a decoder should return for a generated valid frame: the frame itself (hello without `features` gets []). */
function expected(f: Obj): Obj {
  return f.type === "hello" && f.features === undefined ? { ...f, features: [] } : f;
}

// ------------------------------------------------------------------ properties

test("decodeClientFrame and decodeServerFrame never throw anything but bad_request, whatever the text", () => {
  const text = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.json({ maxDepth: 4 }),
    fc.string({ unit: "binary", maxLength: 100 }),
    clientFrame.map((f) => JSON.stringify(f)).map((s) => s.slice(0, Math.max(0, s.length - 3))),
  );
  fc.assert(
    fc.property(text, (t) => {
      for (const decode of [decodeClientFrame, decodeServerFrame]) {
        const e = psimbolsErrorSync(() => decode(t));
        if (e) assert.is(e.code, ErrorCode.badRequest);
      }
    }),
    params(3000),
  );
});

test("objects of every frame type with arbitrary members decode to a well-typed frame or bad_request", () => {
  const types = ["hello", "proof", "request", "resume", "challenge", "established", "response", "push", "resumed", "error", "grant", "Hello", ""];
  const obj = fc.record({ type: fc.constantFrom(...types) }).chain((base) =>
    fc.dictionary(fc.constantFrom(...KNOWN, "x"), fc.oneof(fc.jsonValue({ maxDepth: 2 }), b64(0, 70), channel, seq, wireKey, fc.array(token, { maxLength: 3 })), { maxKeys: 8 }).map((d): Obj => plain({ ...d, ...base })),
  );
  fc.assert(
    fc.property(obj, (o) => {
      const t = JSON.stringify(o);
      for (const [decode, side] of [[decodeClientFrame, "client"], [decodeServerFrame, "server"]] as const) {
        let f: Obj | undefined;
        const e = psimbolsErrorSync(() => (f = decode(t) as unknown as Obj));
        if (e) {
          assert.is(e.code, ErrorCode.badRequest);
          continue;
        }
        assert.is(f!.type, o.type, `${side} decoder changed the type`);
        // Every field of the result is one the input had (or the documented default), with the input's value.
        for (const [k, v] of Object.entries(f!)) {
          if (k === "features" && o.features === undefined) assert.equal(v, []);
          else assert.equal(v, o[k], `${side} ${String(o.type)}.${k}`);
        }
      }
    }),
    params(3000),
  );
});

test("a valid client frame decodes to exactly its fields, and unknown members change nothing", () => {
  fc.assert(
    fc.property(clientFrame, unknownMembers, (f, extra) => {
      assert.equal(decodeClientFrame(JSON.stringify(f)), expected(f));
      assert.equal(decodeClientFrame(JSON.stringify({ ...extra, ...f })), expected(f));
    }),
    params(2000),
  );
});

test("a valid server frame decodes to exactly its fields, and unknown members change nothing", () => {
  fc.assert(
    fc.property(serverFrame, unknownMembers, (f, extra) => {
      assert.equal(decodeServerFrame(JSON.stringify(f)), f);
      assert.equal(decodeServerFrame(JSON.stringify({ ...extra, ...f })), f);
    }),
    params(2000),
  );
});

test("client and server frames are disjoint: neither decoder accepts the other side's frames", () => {
  fc.assert(
    fc.property(clientFrame, serverFrame, (c, s) => {
      assert.is(psimbolsErrorSync(() => decodeServerFrame(JSON.stringify(c)))?.code, ErrorCode.badRequest);
      assert.is(psimbolsErrorSync(() => decodeClientFrame(JSON.stringify(s)))?.code, ErrorCode.badRequest);
    }),
    params(1000),
  );
});

test("replacing any field of a valid frame with a value of another JSON type is refused with bad_request", () => {
  const typeOf = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);
  fc.assert(
    fc.property(fc.oneof(clientFrame.map((f) => ["client", f] as const), serverFrame.map((f) => ["server", f] as const)), fc.nat(), fc.jsonValue({ maxDepth: 2 }), ([side, f], pick, v) => {
      const keys = Object.keys(f).filter((k) => k !== "type");
      if (keys.length === 0) return;
      const k = keys[pick % keys.length]!;
      fc.pre(typeOf(v) !== typeOf(f[k]));
      const t = JSON.stringify({ ...f, [k]: v });
      const e = psimbolsErrorSync(() => (side === "client" ? decodeClientFrame(t) : decodeServerFrame(t)));
      assert.is(e?.code, ErrorCode.badRequest, `${String(f.type)}.${k} = ${JSON.stringify(v)}`);
    }),
    params(3000),
  );
});

test("decode ∘ encode is stable: a decoded frame re-encodes to text that decodes to the same frame", () => {
  fc.assert(
    fc.property(clientFrame, serverFrame, (c, s) => {
      const dc = decodeClientFrame(JSON.stringify(c));
      assert.equal(decodeClientFrame(JSON.stringify(dc)), dc);
      const ds = decodeServerFrame(JSON.stringify(s));
      assert.equal(decodeServerFrame(JSON.stringify(ds)), ds);
    }),
    params(1000),
  );
});

test("an integer member is taken by its value: respelt as 1.0, 1e0, 10e-1 or 1.000 it decodes to the same frame, and n.5 is refused", () => {
  const spellings = (n: number) => [`${n}.0`, `${n}e0`, `${n}E+0`, `${n * 10}e-1`, `${n}.000`];
  const ints = (f: Obj) => ["version", "seq", "last_push"].filter((k) => typeof f[k] === "number");
  fc.assert(
    fc.property(fc.oneof(clientFrame.map((f) => ["client", f] as const), serverFrame.map((f) => ["server", f] as const)), fc.nat(), fc.nat(), ([side, f], pickK, pickS) => {
      const keys = ints(f);
      fc.pre(keys.length > 0);
      const k = keys[pickK % keys.length]!;
      const decode = side === "client" ? decodeClientFrame : decodeServerFrame;
      const canonical = JSON.stringify(f);
      const n = f[k] as number;
      const from = `"${k}":${n}`;
      assert.ok(canonical.includes(from), canonical);
      const spelt = spellings(n)[pickS % 5]!;
      assert.equal(decode(canonical.replace(from, `"${k}":${spelt}`)), decode(canonical), `${k} as ${spelt}`);
      assert.is(psimbolsErrorSync(() => decode(canonical.replace(from, `"${k}":${n}.5`)))?.code, ErrorCode.badRequest, `${k} as ${n}.5`);
    }),
    params(2000),
  );
});

test("a feature list that names a feature twice is refused with bad_request, in every frame that carries one", () => {
  const carrier = fc.oneof(
    hello.map((f) => ["client", f] as const),
    resume.map((f) => ["client", f] as const),
    challenge.map((f) => ["server", f] as const),
    resumed.map((f) => ["server", f] as const),
  );
  fc.assert(
    fc.property(carrier, fc.uniqueArray(feature, { minLength: 1, maxLength: 15 }), fc.nat(), fc.nat(), ([side, f], list, from, to) => {
      const twice = [...list];
      twice.splice(to % (twice.length + 1), 0, list[from % list.length]!);
      const t = JSON.stringify({ ...plain(f), features: twice });
      const e = psimbolsErrorSync(() => (side === "client" ? decodeClientFrame(t) : decodeServerFrame(t)));
      assert.is(e?.code, ErrorCode.badRequest, `${String(f.type)} features ${JSON.stringify(twice)}`);
      assert.match(e!.message, "features[");
    }),
    params(1000),
  );
});

test("server nonces (challenge, resumed) of any length but 32 bytes are refused; client nonces (hello, resume) of 16..64 bytes are accepted", () => {
  fc.assert(
    fc.property(fc.oneof(challenge, resumed), fc.integer({ min: 0, max: 80 }).filter((n) => n !== 32), (f, n) => {
      const t = JSON.stringify({ ...plain(f), nonce: b64u(new Uint8Array(n)) });
      assert.is(psimbolsErrorSync(() => decodeServerFrame(t))?.code, ErrorCode.badRequest, `${String(f.type)} nonce of ${n} bytes`);
    }),
    params(500),
  );
  fc.assert(
    fc.property(fc.oneof(hello, resume), fc.integer({ min: 16, max: 64 }), (f, n) => {
      const nonce = b64u(new Uint8Array(n));
      assert.is((decodeClientFrame(JSON.stringify({ ...plain(f), nonce })) as { nonce: string }).nonce, nonce);
    }),
    params(300),
  );
});

test("an application push without a top-level integer id ≥ 1 is refused with bad_request", () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 2 }), fc.oneof(fc.constant(undefined), fc.constant(0), fc.constant(-1), fc.constant(1.5), fc.string(), fc.constant(null)), (message, id) => {
      const t = JSON.stringify(id === undefined ? { message } : { message, id });
      assert.is(psimbolsErrorSync(() => decodeInnerPush(t))?.code, ErrorCode.badRequest, t);
      assert.equal(decodeInnerPush(JSON.stringify({ message, id: 7 })), JSON.parse(JSON.stringify({ message, id: 7 })));
    }),
    params(500),
  );
});

test("the inner decoders (grant, request, response, push) never throw anything but bad_request", () => {
  const inner = fc.oneof(
    fc.string({ maxLength: 100 }),
    fc.json({ maxDepth: 3 }),
    fc.record({ op: fc.oneof(token, fc.jsonValue()), data: fc.jsonValue() }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
    fc.record({ notice: fc.oneof(fc.constantFrom("expiring", "expired", "revoked", "x"), fc.jsonValue()), message: fc.jsonValue() }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
    fc.record({ channel, key: fc.record({ type: fc.constantFrom("AES-256-GCM", "AES"), data: b64(30, 34) }), valid_until: fc.string(), ttl: fc.integer() }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
  );
  fc.assert(
    fc.property(inner, (t) => {
      for (const decode of [decodeGrant, decodeInnerRequest, decodeInnerResponse, decodeInnerPush]) {
        const e = psimbolsErrorSync(() => decode(t));
        if (e) assert.is(e.code, ErrorCode.badRequest);
      }
    }),
    params(3000),
  );
});

test("a decoded grant always carries a 32-byte key, a 22-character channel id and a positive ttl", () => {
  const grant = fc.record({
    channel: fc.oneof(channel, fc.string({ maxLength: 30 })),
    key: fc.record({ type: fc.constantFrom("AES-256-GCM", "AES", "DES"), data: b64(28, 36) }),
    valid_until: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), fc.string({ maxLength: 30 })),
    ttl: fc.integer({ min: -5, max: 10 * 366 * 86400 }),
  });
  fc.assert(
    fc.property(grant, (g) => {
      const e = psimbolsErrorSync(() => {
        const d = decodeGrant(JSON.stringify(g));
        assert.is(d.channel.length, CHANNEL_ID_CHARS);
        assert.is(d.key.type, "AES-256-GCM");
        assert.is(Buffer.from(d.key.data, "base64url").length, 32);
        assert.ok(d.ttl >= 1);
      });
      if (e) assert.is(e.code, ErrorCode.badRequest);
    }),
    params(2000),
  );
});

// ------------------------------------------------------------------ binary channel frames (§4.11)

test("binary frames: header || ciphertext decodes to its kind, channel, seq and ciphertext, on the right side only", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(1, 2, 3),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      fc.integer({ min: 1, max: MAX_SEQ }),
      fc.uint8Array({ minLength: 16, maxLength: 200 }),
      (kind: 1 | 2 | 3, id, seq, ct) => {
        const frame = new Uint8Array([...encodeBinaryHeader(kind, id, seq), ...ct]);
        assert.is(frame.length, BINARY_HEADER_BYTES + ct.length);
        const client = psimbolsErrorSync(() => decodeClientBinary(frame));
        const server = psimbolsErrorSync(() => decodeServerBinary(frame));
        const f = kind === 1 ? decodeClientBinary(frame) : decodeServerBinary(frame);
        assert.is(f.channel, b64u(id));
        assert.is(f.seq, seq);
        const body = f.type === "request" ? f.request : f.type === "response" ? f.response : f.push;
        assert.equal([...(body as Uint8Array)], [...ct]);
        assert.is(f.type, kind === 1 ? "request" : kind === 2 ? "response" : "push");
        // the other side's decoder refuses it
        assert.is((kind === 1 ? server : client)?.code, ErrorCode.badRequest);
      },
    ),
    params(500),
  );
});

test("binary frames: any bytes decode to a frame or bad_request; short frames, other kinds and seqs outside 1..MAX_SEQ are refused", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      for (const decode of [decodeClientBinary, decodeServerBinary]) {
        let f: ReturnType<typeof decodeServerBinary> | ReturnType<typeof decodeClientBinary> | undefined;
        const e = psimbolsErrorSync(() => (f = decode(bytes)));
        if (e) {
          assert.is(e.code, ErrorCode.badRequest);
          continue;
        }
        const seq = new DataView(bytes.buffer, bytes.byteOffset).getUint32(17, false);
        assert.ok(bytes.length >= BINARY_HEADER_BYTES + 16);
        assert.ok(seq >= 1 && seq <= MAX_SEQ);
        assert.is(f!.seq, seq);
        assert.ok([1, 2, 3].includes(bytes[0]!));
      }
    }),
    params(3000),
  );
});

test("wireErrorCode maps any code text to a documented code", () => {
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.constantFrom(...documentedCodes)), (c) => {
      const got = wireErrorCode(c);
      assert.ok(documentedCodes.has(got));
      if (documentedCodes.has(c)) assert.is(got, c);
    }),
    params(1000),
  );
});

test.run();
