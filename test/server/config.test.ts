/**
 * Broker settings that PROTOCOL.md states: the `expiring` threshold
 * (`expiring-before`, §7.1, §11).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Broker, createLogger, resolveConfig } from "../../server/index.js";
import { generateSigningKey } from "../../shared/crypto.js";
import { Raw, handshake, openPush } from "../helpers/raw.js";

test("the expiring threshold defaults to min(⌊ttl/4⌋, 300 s) of the configured ttl", () => {
  assert.is(resolveConfig({ dataDir: "/nonexistent" }).expiringBefore, 300); // ttl 3600
  assert.is(resolveConfig({ dataDir: "/nonexistent", channelTtl: 600 }).expiringBefore, 150);
  assert.is(resolveConfig({ dataDir: "/nonexistent", channelTtl: 7 }).expiringBefore, 1);
  assert.is(resolveConfig({ dataDir: "/nonexistent", channelTtl: 3 }).expiringBefore, 0);
});

test("the expiring threshold accepts 0..ttl-1 seconds and refuses anything else, naming the setting", () => {
  for (const ok of [0, 1, 59]) assert.is(resolveConfig({ dataDir: "/nonexistent", channelTtl: 60, expiringBefore: ok }).expiringBefore, ok);
  for (const bad of [-1, 60, 61, 1.5]) {
    assert.throws(() => resolveConfig({ dataDir: "/nonexistent", channelTtl: 60, expiringBefore: bad }), /expiring-before/, String(bad));
  }
});

test("with the threshold 0 a binding gets no expiring notice: the first push is expired", async () => {
  const broker = await Broker.start({
    config: { port: 0, dataDir: "/nonexistent", channelTtl: 2, expiringBefore: 0 },
    serverKey: await generateSigningKey(),
    logger: createLogger({ level: "error", json: true }),
  });
  const raw = await Raw.open(`ws://127.0.0.1:${broker.port}/`);
  try {
    const ch = await handshake(raw, await generateSigningKey());
    assert.equal(await openPush(ch, await raw.next(4000)), { notice: "expired" });
  } finally {
    raw.close();
    await broker.close();
  }
});

test.run();
