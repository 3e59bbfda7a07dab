/**
 * The node's hello and resume budgets degrade fairly under a distributed flood
 * (PROTOCOL.md §11.1): FairWindow on a fake clock. The flood test with real
 * sockets from 150+ source addresses is test/partition/flood.test.ts.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FairWindow, FixedWindow } from "../../server/limits.js";

const t = suite("FairWindow: fair shares of a node's budget");

/** A clock the test moves. */
function clock(start = 1_000_000): { now: () => number; at(ms: number): void } {
  let v = start;
  return { now: () => v, at: (ms) => (v = start + ms) };
}

/** 150 flooding addresses, each asking twice in a 1 s window (their per-address rate), spread over the window. */
function flood(take: (key: string) => boolean, at: (ms: number) => void, second: number, addresses = 150): number {
  let admitted = 0;
  for (let i = 0; i < addresses * 2; i++) {
    at(second * 1000 + Math.floor((i * 1000) / (addresses * 2)));
    if (take(`10.0.${i % addresses >> 8}.${i % addresses}`)) admitted++;
  }
  return admitted;
}

t("with one address or none asking, the share is the whole budget", () => {
  const c = clock();
  const w = new FairWindow(200, 1000, c.now);
  assert.is(w.share, 200);
  let n = 0;
  while (w.take("10.0.0.1")) n++;
  assert.is(n, 200, "a lone address may use the whole budget in its first window");
  c.at(1000);
  assert.is(w.share, 100, "one address asked the window before: half stays free for a newcomer");
});

t("never admits more than the budget in one window, whatever the keys", () => {
  const c = clock();
  const w = new FairWindow(50, 1000, c.now);
  for (let s = 0; s < 5; s++) {
    let n = 0;
    for (let i = 0; i < 2000; i++) {
      c.at(s * 1000 + (i % 1000));
      if (w.take(`k${i % 97}`)) n++;
    }
    assert.ok(n <= 50, `window ${s}: ${n} admitted`);
  }
});

t("a flood from 150 addresses leaves room for a newcomer in every window; a plain fixed window starves it", () => {
  // The plain window first: the flood (300 asks per second) takes the 200 before the newcomer, late in the second, asks.
  const c1 = clock();
  const plain = new FixedWindow(200, 1000, c1.now);
  for (let s = 0; s < 3; s++) {
    flood(() => plain.take("*"), c1.at, s);
    c1.at(s * 1000 + 999);
    assert.is(plain.take("*"), false, `second ${s}: the fixed window has nothing left for the newcomer`);
  }
  // The fair window: the flooders' share drops to floor(200 / 151) = 1 per second; the newcomer asks last and gets in.
  const c2 = clock();
  const fair = new FairWindow(200, 1000, c2.now);
  flood((k) => fair.take(k), c2.at, 0);
  for (let s = 1; s < 4; s++) {
    const admitted = flood((k) => fair.take(k), c2.at, s);
    assert.is(fair.share, 1);
    assert.is(admitted, 150, `second ${s}: each flooder gets its one share`);
    c2.at(s * 1000 + 999);
    assert.ok(fair.take(`192.0.2.${s}`), `second ${s}: a newcomer asking last in the window is admitted`);
  }
});

t("a growing flood: a newcomer refused in one window is admitted in the next", () => {
  const c = clock();
  const w = new FairWindow(200, 1000, c.now);
  flood((k) => w.take(k), c.at, 0, 66); // 66 addresses: share floor(200/67) = 2 next second
  c.at(1000);
  assert.is(w.share, 2);
  // The flood grows to 150 addresses at once: 300 asks within their share of 2 exhaust the budget.
  flood((k) => w.take(k), c.at, 1, 150);
  c.at(1999);
  assert.is(w.take("192.0.2.1"), false, "the budget is spent this window");
  flood((k) => w.take(k), c.at, 2, 150);
  c.at(2999);
  assert.ok(w.take("192.0.2.1"), "the next window counts the newcomer in: its share is free");
});

t("an address that was refused still counts towards the next window's shares", () => {
  const c = clock();
  const w = new FairWindow(4, 1000, c.now);
  for (let i = 0; i < 4; i++) assert.ok(w.take("a"));
  assert.is(w.take("b"), false, "budget spent");
  c.at(1000);
  assert.is(w.share, 1, "two keys asked (one refused): floor(4 / 3) = 1");
  assert.ok(w.take("b"));
  assert.is(w.take("b"), false, "beyond its share");
  assert.ok(w.take("a"));
});

t("after an idle window the share is the whole budget again", () => {
  const c = clock();
  const w = new FairWindow(200, 1000, c.now);
  flood((k) => w.take(k), c.at, 0);
  c.at(1500);
  assert.is(w.share, 1);
  c.at(3000); // window 2 had no asks
  assert.is(w.share, 200);
});

t("refuses a budget or window that is not a positive integer (RangeError)", () => {
  for (const [b, ms] of [[0, 1000], [1.5, 1000], [Number.NaN, 1000], [10, 0], [10, -1]] as const) {
    assert.throws(() => new FairWindow(b, ms), (e: unknown) => e instanceof RangeError, `${b}, ${ms}`);
  }
});

t.run();
