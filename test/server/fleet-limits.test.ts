/**
 * The pieces of the fleet-range limits (PROTOCOL.md §11.3): range matching,
 * the unproven sockets of an address (oldest cut first), the refund of a
 * proven hello, and the setting's validation. The end-to-end test with 1,000
 * clients and a flood is fleet.test.ts.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { AddressRanges, FixedWindow, Unproven } from "../../server/limits.js";
import { resolveConfig } from "../../server/config.js";
import { generateSigningKey } from "../../shared/crypto.js";
import { startBroker } from "../helpers/broker.js";
import { Raw, handshake, resume } from "../helpers/raw.js";

const t = suite("fleet ranges: the pieces");

t("ranges: IPv4 and IPv6 prefixes; an IPv4-mapped address matches as its IPv4", () => {
  const r = new AddressRanges(["203.0.113.0/24", "2001:db8::/48"]);
  assert.ok(r.has("203.0.113.7"));
  assert.ok(r.has("::ffff:203.0.113.7"));
  assert.not.ok(r.has("203.0.114.7"));
  assert.ok(r.has("2001:db8:0:1::5"));
  assert.not.ok(r.has("2001:db9::5"));
  assert.not.ok(r.has("unknown"));
  assert.not.ok(new AddressRanges([]).has("203.0.113.7"), "no range: nothing is in a fleet");
});

t("a bad prefix is refused with a message naming the setting, and no broker config is made", () => {
  for (const bad of ["203.0.113.0", "203.0.113.0/33", "2001:db8::/129", "example.com/8", "1.2.3.4/-1", ""]) {
    assert.throws(() => resolveConfig({ fleetRanges: [bad] }), /setting fleet-range: expected an IPv4 or IPv6 prefix/, bad);
  }
  assert.equal(resolveConfig({ fleetRanges: ["10.0.0.0/8", "::1/128"] }).fleetRanges, ["10.0.0.0/8", "::1/128"]);
  assert.equal(resolveConfig({}).fleetRanges, []);
});

/** A socket that records being cut. */
function sock(name: string, cut: string[]): { destroy(): void } {
  return { destroy: () => cut.push(name) };
}

t("unproven sockets: past the limit the oldest unproven one is cut; proven ones do not count", () => {
  const u = new Unproven(3);
  const cut: string[] = [];
  const [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map((n) => sock(n, cut));
  u.add("k", a!);
  u.add("k", b!);
  u.add("k", c!);
  u.prove(b!); // b leaves the unproven slots
  assert.is(u.unproven("k"), 2);
  assert.is(u.proven("k"), 1);
  u.add("k", d!);
  assert.equal(cut, [], "room for d: b is proven");
  u.add("k", e!);
  assert.equal(cut, ["a"], "the oldest unproven socket is cut, not the proven one");
  assert.is(u.evicted, 1);
  u.add("other", sock("x", cut));
  assert.equal(cut, ["a"], "another address has slots of its own");
  u.delete(b!);
  assert.is(u.proven("k"), 0, "a proven socket that closed is counted no more");
  u.delete(c!);
  assert.is(u.unproven("k"), 2);
  u.prove(sock("never added", cut)); // a socket from outside the ranges: nothing happens
  assert.is(u.proven("k"), 0);
});

t("a proven hello is given back to its window, never to a later one", () => {
  let now = 0;
  const w = new FixedWindow(2, 10_000, () => now);
  assert.ok(w.take("k"));
  const charged = w.window;
  assert.ok(w.take("k"));
  assert.not.ok(w.take("k"), "the window is spent");
  w.give("k", charged);
  w.give("k", charged);
  assert.ok(w.take("k"), "given back: room again in the same window");
  now = 10_000;
  assert.ok(w.take("k"));
  w.give("k", charged); // from the window before: no credit in this one
  assert.ok(w.take("k"));
  assert.not.ok(w.take("k"), "the refund of an earlier window did not reach this one");
});

t("on a node with --fleet-range: 70 proven sockets from one address (past the 64), 8 unproven at most with the oldest cut, 10 resumes of one channel per 10 s", async () => {
  const broker = await startBroker(["--fleet-range", "127.0.0.0/8", "--fleet-unproven", "8"]);
  const raws: Raw[] = [];
  try {
    const key = await generateSigningKey();
    // Proven: 70 sockets with a channel each, one after the other (each proven hello is given back to the window).
    for (let i = 0; i < 70; i++) {
      const r = await Raw.open(broker.url);
      raws.push(r);
      await handshake(r, i === 0 ? key : await generateSigningKey());
    }
    // Unproven: 8 idle sockets fit; the 9th cuts the oldest of them, never a proven one.
    const idle: Raw[] = [];
    for (let i = 0; i < 9; i++) {
      idle.push(await Raw.open(broker.url));
      raws.push(idle[i]!);
    }
    const first = await Promise.race([idle[0]!.closed.then((c) => c.code), new Promise((r) => setTimeout(() => r("open"), 3000))]);
    assert.is(first, 1006, "the oldest unproven socket was cut");
    for (const r of raws.slice(0, 70)) assert.is(r.ws.readyState, r.ws.OPEN, "proven sockets stay");
    for (const r of idle.slice(1)) assert.is(r.ws.readyState, r.ws.OPEN, "the 8 newest unproven sockets stay");

    // One channel: 10 resumes in its window, the 11th refused too_many (close 4002).
    const h = await Raw.open(broker.url);
    raws.push(h);
    const ch = await handshake(h, key);
    // All 11 within one 10 s window: start just after a window begins (windows are aligned to the clock).
    await new Promise((r) => setTimeout(r, 10_000 - (Date.now() % 10_000) + 50));
    const answers: string[] = [];
    for (let i = 0; i < 11; i++) {
      const r = await Raw.open(broker.url);
      raws.push(r);
      const f = await resume(r, ch);
      answers.push(f.type === "error" ? f.error.code : f.type);
      r.ws.terminate();
    }
    assert.equal(answers.slice(0, 10), Array(10).fill("resumed"));
    assert.is(answers[10], "too_many", "the 11th resume of one channel in its window");
  } finally {
    for (const r of raws) r.ws.terminate();
    await broker.stop();
  }
});

t.run();
