/**
 * Per-address limits count IPv6 clients by their /64 (SECURITY.md W11):
 * the key function, then a real broker behind a trusted proxy header.
 * Size limits on what the node seals (responses, pushes): nothing it sends
 * may pass the client's frame limit.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import WebSocket from "ws";
import { Counter, FixedWindow, limitKey } from "../../server/limits.js";
import { type RunningBroker, startBroker } from "../helpers/broker.js";
import { generateSigningKey } from "../../shared/crypto.js";
import { MAX_INNER_BYTES } from "../../shared/frames.js";
import { connect } from "../../client/node.js";
import { MAX_PUSH_BYTES } from "../../server/broker.js";
import { inProcessBroker } from "../properties/support.js";

const k = suite("limitKey");

const cases: [string, string][] = [
  ["127.0.0.1", "127.0.0.1"],
  ["10.1.2.3", "10.1.2.3"],
  ["::ffff:10.1.2.3", "10.1.2.3"],
  ["::FFFF:10.1.2.3", "10.1.2.3"],
  ["2001:db8:1:2::1", "2001:db8:1:2::/64"],
  ["2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"],
  ["2001:0db8:0001:0002:0:0:0:1", "2001:db8:1:2::/64"],
  ["2001:DB8:1:2::abcd", "2001:db8:1:2::/64"],
  ["2001:db8::1", "2001:db8:0:0::/64"],
  ["2001:db8::1:2:3:4", "2001:db8:0:0::/64"],
  ["::1", "0:0:0:0::/64"],
  ["::", "0:0:0:0::/64"],
  ["fe80::1%eth0", "fe80:0:0:0::/64"],
  ["64:ff9b::1.2.3.4", "64:ff9b:0:0::/64"],
  ["unknown", "unknown"],
  ["not an address", "not an address"],
];
for (const [input, want] of cases) {
  k(`${input} counts as ${want}`, () => assert.is(limitKey(input), want));
}

k("two addresses of one /64 share a key; neighbouring /64s do not", () => {
  assert.is(limitKey("2001:db8:a:b::1"), limitKey("2001:db8:a:b:1234:5678:9abc:def0"));
  assert.is.not(limitKey("2001:db8:a:b::1"), limitKey("2001:db8:a:c::1"));
});

k("FixedWindow: `limit` takes per key per window, refusals past it, a fresh count in the next window (the hello limits, per address and per node)", () => {
  let now = 10_000;
  const w = new FixedWindow(3, 1000, () => now);
  assert.equal([1, 2, 3, 4, 5].map(() => w.take("a")), [true, true, true, false, false]);
  assert.ok(w.take("b"), "another key has its own count");
  now += 999; // 10 999: same window
  assert.not.ok(w.take("a"));
  now += 1; // 11 000: the next window
  assert.equal([1, 2, 3, 4].map(() => w.take("a")), [true, true, true, false]);
});

k("FixedWindow: `spent` says whether a key used up the current window, counts nothing, and is false again in the next window (the failed-frame refusal at the upgrade)", () => {
  let now = 20_000;
  const w = new FixedWindow(2, 1000, () => now);
  assert.not.ok(w.spent("a"));
  w.take("a");
  assert.not.ok(w.spent("a"), "one of two used");
  w.take("a");
  assert.ok(w.spent("a"));
  assert.ok(w.spent("a"), "asking counts nothing and changes nothing");
  assert.not.ok(w.spent("b"));
  now += 1000;
  assert.not.ok(w.spent("a"), "a new window");
  assert.ok(w.take("a"));
});

k("Counter: counts up and down per key, never below zero, and forgets a key at zero", () => {
  const c = new Counter();
  assert.is(c.inc("a"), 1);
  assert.is(c.inc("a"), 2);
  c.dec("a");
  assert.is(c.get("a"), 1);
  c.dec("a");
  c.dec("a");
  assert.is(c.get("a"), 0);
  assert.is(c.inc("a"), 1, "a key at zero starts again from zero");
  assert.is(c.get("b"), 0);
});

const b = suite("per-address limits by /64, on a real broker");
let broker: RunningBroker;
b.before(async () => {
  broker = await startBroker(["--trust-proxy", "--max-connections-per-address", "2"]);
});
b.after(async () => {
  await broker.stop();
});

/** Opens a WebSocket claiming `address` through the trusted X-Forwarded-For; resolves open, or the HTTP status of the refusal. */
function open(address: string): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(broker.url, { headers: { "x-forwarded-for": address } });
    ws.once("open", () => resolve(ws));
    ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
    ws.once("error", reject);
  });
}

b("a third connection from the same /64 gets 429; another /64 and IPv4 are not affected", async () => {
  const a1 = await open("2001:db8:7:7::1");
  const a2 = await open("2001:db8:7:7:ffff::2");
  assert.instance(a1, WebSocket);
  assert.instance(a2, WebSocket);
  assert.is(await open("2001:db8:7:7::3"), 429);
  const other = await open("2001:db8:7:8::1");
  assert.instance(other, WebSocket);
  const v4 = await open("192.0.2.1");
  assert.instance(v4, WebSocket);
  // Closing one of the /64's sockets frees a place for it.
  (a1 as WebSocket).close();
  await new Promise((r) => (a1 as WebSocket).once("close", r));
  await new Promise((r) => setTimeout(r, 100));
  const a3 = await open("2001:db8:7:7::3");
  assert.instance(a3, WebSocket);
  for (const ws of [a2, other, v4, a3]) (ws as WebSocket).close();
});

k.run();
b.run();

const z = suite("size limits on what the node seals");

z("a response over MAX_INNER_BYTES becomes an `internal` error for that request; one at the limit passes; the socket stays", async () => {
  const { broker, url, serverKey } = await inProcessBroker();
  broker.handle("big", (n) => "x".repeat(n as number));
  for (const features of [undefined, []]) {
    const c = await connect(url, { key: await generateSigningKey(), serverKey: serverKey.public.fingerprint, knownServersFile: false, ...(features ? { features } : {}) });
    try {
      // {"data":"xx…"} is the string plus 11 bytes.
      assert.is(((await c.request("big", MAX_INNER_BYTES - 11)) as string).length, MAX_INNER_BYTES - 11);
      const e = await c.request("big", MAX_INNER_BYTES - 10).then(() => undefined, (x: { code: string; message: string }) => x);
      assert.is(e?.code, "internal");
      assert.match(e!.message, `larger than ${MAX_INNER_BYTES} bytes`);
      assert.equal(await c.request("echo", 1), 1);
      assert.is(c.stats.reconnects, 0);
    } finally {
      await c.close();
    }
  }
  await broker.close();
});

z("a push is measured in UTF-8 bytes: over MAX_PUSH_BYTES is refused, at the limit it reaches the client", async () => {
  const { broker, url, serverKey } = await inProcessBroker();
  const key = await generateSigningKey();
  const c = await connect(url, { key, serverKey: serverKey.public.fingerprint, knownServersFile: false });
  try {
    const got: unknown[] = [];
    c.on("push", (m) => got.push(m));
    // 2-byte characters: under the limit counted in characters, over it in bytes.
    await broker.push({ identity: key.public.fingerprint }, "é".repeat(MAX_PUSH_BYTES / 2)).then(
      () => assert.unreachable("an oversized push was accepted"),
      (e: Error) => assert.match(e.message, `larger than ${MAX_PUSH_BYTES} bytes`),
    );
    const atLimit = "x".repeat(MAX_PUSH_BYTES - 2); // plus its quotes
    await broker.push({ identity: key.public.fingerprint }, atLimit);
    const deadline = Date.now() + 3000;
    while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(got, [atLimit]);
    assert.is(c.stats.reconnects, 0);
  } finally {
    await c.close();
    await broker.close();
  }
});

z.run();
