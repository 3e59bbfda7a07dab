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

t.run();
