/**
 * Properties of the byte encodings (shared/encoding.ts, PROTOCOL.md §2):
 * base64url is canonical (one value, one text), LP is injective, ctEqual is
 * equality.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { b64u, ctEqual, fromB64u, lp } from "../../shared/encoding.js";
import { ErrorCode } from "../../shared/errors.js";
import { params, psimbolsErrorSync } from "./support.js";

const bytes = (max = 96) => fc.uint8Array({ maxLength: max });
const eq = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

test("base64url round-trips every byte string", () => {
  fc.assert(
    fc.property(bytes(200), (b) => {
      const s = b64u(b);
      assert.ok(/^[A-Za-z0-9_-]*$/.test(s));
      assert.ok(eq(fromB64u(s, "x"), b));
    }),
    params(2000),
  );
});

test("base64url is RFC 4648 §5 without padding: the same text as Node's own encoder", () => {
  fc.assert(
    fc.property(bytes(300), (b) => {
      assert.is(b64u(b), Buffer.from(b).toString("base64url"));
    }),
    params(3000),
  );
});

test("fromB64u on any text either refuses with bad_request or returns bytes that encode back to the same text", () => {
  const alphabet = fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= \n.".split(""));
  const text = fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: alphabet, maxLength: 80 }), fc.string({ unit: "grapheme", maxLength: 20 }));
  fc.assert(
    fc.property(text, (s) => {
      let out: Uint8Array | undefined;
      const e = psimbolsErrorSync(() => (out = fromB64u(s, "x")));
      if (e) assert.is(e.code, ErrorCode.badRequest);
      else assert.is(b64u(out!), s, "a non-canonical text was accepted");
    }),
    params(3000),
  );
});

test("any change to a canonical base64url text (padding, other alphabet, whitespace, one character) gives other bytes or a refusal", () => {
  fc.assert(
    fc.property(bytes(64), fc.nat(), fc.constantFrom("=", "+", "/", " ", "\n", "A", "-"), fc.constantFrom("insert", "replace", "append"), (b, at, ch, how) => {
      const s = b64u(b);
      const i = s.length === 0 ? 0 : at % s.length;
      const t = how === "append" ? s + ch : how === "insert" ? s.slice(0, i) + ch + s.slice(i) : s.slice(0, i) + ch + s.slice(i + 1);
      if (t === s) return;
      const e = psimbolsErrorSync(() => {
        const got = fromB64u(t, "x");
        assert.not.ok(eq(got, b), `"${t}" decodes to the same bytes as "${s}"`);
      });
      if (e) assert.is(e.code, ErrorCode.badRequest);
    }),
    params(3000),
  );
});

test("fromB64u refuses non-strings with bad_request", () => {
  fc.assert(
    fc.property(fc.anything().filter((v) => typeof v !== "string"), (v) => {
      assert.is(psimbolsErrorSync(() => fromB64u(v, "x"))?.code, ErrorCode.badRequest);
    }),
    params(500),
  );
});

test("LP is injective: different part lists never encode to the same bytes", () => {
  const parts = fc.array(fc.oneof(bytes(24), fc.string({ maxLength: 12 })), { maxLength: 6 });
  const asBytes = (p: (Uint8Array | string)[]) => p.map((x) => (typeof x === "string" ? new TextEncoder().encode(x) : x));
  fc.assert(
    fc.property(parts, parts, (a, b) => {
      const same = asBytes(a).length === asBytes(b).length && asBytes(a).every((x, i) => eq(x, asBytes(b)[i]!));
      assert.is(eq(lp(...a), lp(...b)), same);
    }),
    params(2000),
  );
});

test("LP: splitting or merging parts changes the encoding (the ambiguity LP exists to remove)", () => {
  fc.assert(
    fc.property(bytes(32), bytes(32), (x, y) => {
      const merged = new Uint8Array([...x, ...y]);
      assert.not.ok(eq(lp(x, y), lp(merged)));
      if (y.length > 0) assert.not.ok(eq(lp(x, y), lp(merged, new Uint8Array(0))));
    }),
    params(1000),
  );
});

test("ctEqual is equality", () => {
  fc.assert(
    fc.property(bytes(40), bytes(40), fc.boolean(), (a, b, copy) => {
      const c = copy ? a.slice() : b;
      assert.is(ctEqual(a, c), eq(a, c));
    }),
    params(2000),
  );
});

test.run();
