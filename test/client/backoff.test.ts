import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { DEFAULT_BACKOFF, RENEW_RETRY_BACKOFF, backoffDelay, renewRetryDelay } from "../../client/backoff.js";

test("the first retry waits less than the base delay", () => {
  assert.is(backoffDelay(0, 0), 0);
  assert.is(backoffDelay(0, 0.5), 125);
  assert.is(backoffDelay(0, 0.999999), 249);
});

test("the cap doubles with each attempt", () => {
  const o = { baseMs: 100, maxMs: 1_000_000 };
  for (let a = 0; a < 10; a++) assert.is(backoffDelay(a, 0.5, o), 50 * 2 ** a);
});

test("never exceeds maxMs, even for huge attempt numbers", () => {
  assert.is(backoffDelay(7, 0.5), 15_000); // 250·2^7 = 32 000 → capped at 30 000
  assert.is(backoffDelay(1_000_000, 0.5), 15_000);
  assert.is(backoffDelay(Number.MAX_SAFE_INTEGER, 0.999999), 29_999);
});

test("a zero base always gives zero (no NaN from 0·2^n)", () => {
  assert.is(backoffDelay(5000, 0.7, { baseMs: 0, maxMs: 1000 }), 0);
});

test("the defaults are 250 ms and 30 s", () => {
  assert.equal({ ...DEFAULT_BACKOFF }, { baseMs: 250, maxMs: 30_000 });
  assert.ok(Object.isFrozen(DEFAULT_BACKOFF));
});

test("rejects out-of-range inputs with RangeError", () => {
  const bad: [number, number, { baseMs: number; maxMs: number }?][] = [
    [-1, 0.5],
    [1.5, 0.5],
    [NaN, 0.5],
    [Infinity, 0.5],
    [0, -0.1],
    [0, 1],
    [0, NaN],
    [0, 0.5, { baseMs: -1, maxMs: 10 }],
    [0, 0.5, { baseMs: 1, maxMs: Infinity }],
    [0, 0.5, { baseMs: NaN, maxMs: 10 }],
  ];
  for (const [a, r, o] of bad) assert.throws(() => backoffDelay(a, r, o), RangeError, `attempt ${a} random ${r}`);
});

test("property: an integer in [0, min(max, base·2^attempt))", () => {
  fc.assert(
    fc.property(
      fc.nat(200),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      fc.integer({ min: 1, max: 10_000 }),
      fc.integer({ min: 1, max: 1_000_000 }),
      (attempt, random, baseMs, maxMs) => {
        const d = backoffDelay(attempt, random, { baseMs, maxMs });
        const cap = Math.min(maxMs, baseMs * 2 ** attempt);
        return Number.isInteger(d) && d >= 0 && d < cap;
      },
    ),
  );
});

test("property: rises monotonically with the random value", () => {
  fc.assert(
    fc.property(fc.nat(60), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (a, r1, r2) => {
      const [lo, hi] = r1 <= r2 ? [r1, r2] : [r2, r1];
      return backoffDelay(a, lo) <= backoffDelay(a, hi);
    }),
  );
});

test("renewal retries wait at least a second, then back off up to a minute on top", () => {
  assert.equal({ ...RENEW_RETRY_BACKOFF }, { baseMs: 1000, maxMs: 60_000 });
  assert.is(renewRetryDelay(0, 0), 1000);
  assert.is(renewRetryDelay(0, 0.999999), 1999);
  assert.is(renewRetryDelay(3, 0.5), 1000 + 4000);
  assert.is(renewRetryDelay(1_000, 0.999999), 1000 + 59_999);
  // Two retries never fit in 2 s: the third try of a failing renewal comes at least 2 s after the first.
  fc.assert(fc.property(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (r0, r1) => renewRetryDelay(0, r0) + renewRetryDelay(1, r1) >= 2000));
  assert.throws(() => renewRetryDelay(-1, 0), RangeError);
});

test.run();
