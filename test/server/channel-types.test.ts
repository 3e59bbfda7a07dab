/**
 * Channel type negotiation against real broker processes (PROTOCOL.md §5.1,
 * §6.3): Node clients and brokers agree on ChaCha20-Poly1305 by
 * default (where libsodium runs it); `--channel-types` restricts a broker; a
 * client restricted to one type and a broker restricted to the other fail
 * with `unsupported` and nothing changes; the channel record keeps its type,
 * and a resume on a node that would no longer grant that type still uses it.
 * (The browser's AES-256-GCM against the same broker: test/browser/browser.test.ts.)
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { randomBytes } from "node:crypto";
import { generateSigningKey } from "../../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { ChannelType } from "../../shared/frames.js";
import { connect } from "../../client/node.js";
import { sodiumLoaded } from "../../node/chacha.js";
import { nodeChannelTypes, useNodeCrypto } from "../../node/engines.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { startRedis } from "../helpers/redis.js";
import { Raw, call, handshake, offerChannelTypes, resume } from "../helpers/raw.js";

const AES = ChannelType.aes256gcm;
const CC = ChannelType.chacha20poly1305;

await useNodeCrypto(); // raw peers below derive ChaCha20-Poly1305 keys too
const t = suite("channel types");
let open: RunningBroker;
let aesOnly: RunningBroker;
let ccOnly: RunningBroker;

t.before(async () => {
  [open, aesOnly, ccOnly] = await Promise.all([
    startBroker(["--hellos-per-address", "1000"]),
    startBroker(["--hellos-per-address", "1000", "--channel-types", AES]),
    startBroker(["--hellos-per-address", "1000", "--channel-types", CC]),
  ]);
});
t.after(async () => {
  await Promise.all([open?.stop(), aesOnly?.stop(), ccOnly?.stop()]);
});

/** A counter of the broker's /metrics, by its exact series (name and labels). */
async function metric(b: RunningBroker, series: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${b.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ").pop()) : 0;
}
const ESTABLISHED = 'psimbols_handshakes_total{outcome="established"}';
const REJECTED = 'psimbols_handshakes_total{outcome="rejected"}';

t("a Node client and a default broker agree on the Node side's first type: ChaCha20-Poly1305 where libsodium runs", async () => {
  const c = await connect(open.url, { key: await generateSigningKey(), serverKey: open.fingerprint, knownServersFile: false });
  try {
    assert.is(c.channel?.channelType, sodiumLoaded() ? CC : AES);
    assert.is(c.channel?.channelType, nodeChannelTypes()[0]);
    assert.equal(await c.request("echo", [1, "two"]), [1, "two"]);
  } finally {
    await c.close();
  }
});

t("the broker's well-known document lists the types it grants", async () => {
  const doc = async (b: RunningBroker) => ((await (await fetch(`http://127.0.0.1:${b.port}/.well-known/psimbols`)).json()) as { channel_types: string[] }).channel_types;
  assert.equal(await doc(open), [AES, CC]);
  assert.equal(await doc(aesOnly), [AES]);
  assert.equal(await doc(ccOnly), [CC]);
});

t("the client's order decides among the types the broker grants", async () => {
  for (const order of [[AES, CC], [CC, AES]]) {
    const c = await connect(open.url, { key: await generateSigningKey(), serverKey: open.fingerprint, knownServersFile: false, channelTypes: order });
    try {
      assert.is(c.channel?.channelType, order[0]);
      assert.equal(await c.request("echo", "x"), "x");
    } finally {
      await c.close();
    }
  }
  // A client that offers both gets what a restricted broker grants.
  const c = await connect(aesOnly.url, { key: await generateSigningKey(), serverKey: aesOnly.fingerprint, knownServersFile: false, channelTypes: [CC, AES] });
  try {
    assert.is(c.channel?.channelType, AES);
  } finally {
    await c.close();
  }
});

for (const [mine, broker] of [
  [CC, () => aesOnly],
  [AES, () => ccOnly],
] as const) {
  t(`a client offering ${mine} only, against a broker restricted to the other type, fails with unsupported; nothing is granted`, async () => {
    const b = broker();
    const before = await metric(b, ESTABLISHED);
    const rejected = await metric(b, REJECTED);
    let err: unknown;
    try {
      const c = await connect(b.url, { key: await generateSigningKey(), serverKey: b.fingerprint, knownServersFile: false, channelTypes: [mine], reconnect: false });
      await c.close();
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof PsimbolsError, `expected a PsimbolsError, got ${String(err)}`);
    assert.is((err as PsimbolsError).code, ErrorCode.unsupported);
    assert.match((err as Error).message, mine === CC ? /accepted: AES-256-GCM/ : /accepted: ChaCha20-Poly1305/);
    assert.is(await metric(b, ESTABLISHED), before, "no channel was granted");
    assert.is(await metric(b, REJECTED), rejected + 1, "the refusal was counted (the metric can move)");
    // The same socket's answer is a negotiation answer: a raw peer sees `unsupported` and can still handshake.
    const raw = await Raw.open(b.url);
    offerChannelTypes([mine]);
    try {
      await handshake(raw, await generateSigningKey());
      assert.unreachable("handshake should fail");
    } catch (e) {
      assert.match(String((e as Error).message), /unsupported/);
    } finally {
      offerChannelTypes([AES]);
    }
    const ch = await handshake(raw, await generateSigningKey(), { channelTypes: [mine === CC ? AES : CC] });
    assert.is(ch.grant.key.type, mine === CC ? AES : CC);
    assert.is((await call(raw, ch, "echo", 1)).data, 1);
    raw.close();
  });
}

t("a broker refuses a malformed --channel-types at start, naming the setting", async () => {
  for (const bad of ["AES", "chacha20-poly1305", "AES-256-GCM,AES-256-GCM", ","]) {
    const r = await runCli(["serve", "--port", "0", "--data-dir", tempDir(), "--channel-types", bad]);
    assert.is.not(r.code, 0, bad);
    assert.match(r.stderr, /--channel-types/, bad);
  }
});

t("a channel keeps its type: a resume on a node that no longer grants it still binds with it", async () => {
  const redis = await startRedis();
  const dir = tempDir();
  const env = { PSIMBOLS_WRAP_KEY: randomBytes(32).toString("base64url") };
  const args = ["--redis", redis.url, "--hellos-per-address", "1000"];
  const a = await startBroker([...args, "--node", "a"], { dataDir: dir, env });
  const b = await startBroker([...args, "--node", "b", "--channel-types", AES], { dataDir: dir, env });
  try {
    const raw = await Raw.open(a.url);
    const ch = await handshake(raw, await generateSigningKey(), { channelTypes: [CC] });
    assert.is(ch.grant.key.type, CC);
    const other = await Raw.open(b.url);
    assert.is((await resume(other, ch)).type, "resumed");
    const who = await call(other, ch, "whoami");
    assert.is(who.data.node, "b", "the ChaCha20-Poly1305 binding authenticates on the AES-only node");
    assert.is(who.data.channel, ch.grant.channel);
    other.close();
    raw.close();
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await redis.stop();
  }
});

t.run();
