/**
 * The client library against real broker processes: pinning, renewal with
 * requests in flight, resume after a dropped socket, notices, close.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { generateSigningKey } from "../../shared/crypto.js";
import { ErrorCode } from "../../shared/errors.js";
import { FileKnownServers, connect, nodeWebSocket } from "../../client/node.js";
import { type IncomingHttpHeaders, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocket, WebSocketServer } from "ws";
import { type RunningBroker, startBroker, tempDir } from "../helpers/broker.js";
import { startProxy } from "../helpers/proxy.js";

const t = suite("client library");
let broker: RunningBroker;
t.before(async () => {
  broker = await startBroker(["--channel-ttl", "6", "--expiring-before", "2", "--hellos-per-address", "1000"]);
});
t.after(async () => {
  await broker.stop();
});

const noFile = () => new FileKnownServers(join(tempDir(), "known_servers"));

t("connects with a pinned server key and makes requests", async () => {
  const c = await connect(broker.url, { key: await generateSigningKey(), serverKey: broker.fingerprint });
  assert.equal(await c.request("echo", { hi: 1 }), { hi: 1 });
  assert.is(c.channel?.serverKey, broker.fingerprint);
  await c.close();
});

/** The `ws` WebSocket, counting what the client writes and reads as text and as binary frames. */
function countingSocket() {
  const seen = { sentText: 0, sentBinary: 0, gotText: 0, gotBinary: 0 };
  class Counting extends WebSocket {
    constructor(url: string) {
      super(url);
      this.on("message", (_d, isBinary) => void (isBinary ? seen.gotBinary++ : seen.gotText++));
    }
    override send(data: any, ...rest: any[]): void {
      if (typeof data === "string") seen.sentText++;
      else seen.sentBinary++;
      (super.send as (...a: unknown[]) => void)(data, ...rest);
    }
  }
  return { seen, WebSocket: Counting };
}

t("offers binary frames by default: once agreed, every request, response and push is binary, also after a resume", async () => {
  const { seen, WebSocket: WS } = countingSocket();
  const proxy = await startProxy(broker.port);
  const c = await connect(proxy.url, { key: await generateSigningKey(), knownServers: noFile(), WebSocket: WS });
  try {
    const text0 = seen.sentText; // hello and proof
    for (let i = 0; i < 5; i++) assert.equal(await c.request("echo", i), i);
    assert.is(seen.sentText, text0);
    assert.is(seen.sentBinary, 5);
    assert.is(seen.gotBinary, 5);
    proxy.cut();
    await new Promise<void>((r) => {
      const off = c.on("resumed", () => (off(), r()));
    });
    assert.equal(await c.request("echo", "after resume"), "after resume");
    assert.is(c.stats.resumes, 1);
    // The resume frame is text; everything after it (the client's activating ping included) is binary.
    assert.is(seen.sentText, text0 + 1);
    assert.ok(seen.sentBinary >= 6);
    assert.is(seen.gotBinary, seen.sentBinary);
  } finally {
    await c.close();
    proxy.close();
  }
});

t("features: [] keeps every frame JSON text", async () => {
  const { seen, WebSocket: WS } = countingSocket();
  const c = await connect(broker.url, { key: await generateSigningKey(), knownServers: noFile(), WebSocket: WS, features: [] });
  try {
    for (let i = 0; i < 3; i++) assert.equal(await c.request("echo", i), i);
    assert.is(seen.sentBinary, 0);
    assert.is(seen.gotBinary, 0);
    assert.ok(seen.sentText >= 5);
  } finally {
    await c.close();
  }
});

t("refuses a server whose key differs from the pinned one, loudly and without retrying", async () => {
  const wrong = (await generateSigningKey()).public.fingerprint;
  try {
    await connect(broker.url, { key: await generateSigningKey(), serverKey: wrong });
    assert.unreachable("connected to the wrong server");
  } catch (e: any) {
    assert.is(e.code, ErrorCode.serverKeyMismatch);
    assert.match(e.message, wrong);
    assert.match(e.message, broker.fingerprint);
  }
});

t("learns the server key on first use and refuses a different one later", async () => {
  const file = join(tempDir(), "known_servers");
  const c = await connect(broker.url, { key: await generateSigningKey(), knownServers: new FileKnownServers(file) });
  await c.close();
  assert.match(readFileSync(file, "utf8"), broker.fingerprint);
  // Another broker (another key) answering at a URL known for a different key is an impostor.
  const other = await startBroker();
  const known = new FileKnownServers(file);
  await known.set(other.url, broker.fingerprint); // as if we had met the real one at that URL before
  try {
    await connect(other.url, { key: await generateSigningKey(), knownServers: known });
    assert.unreachable("accepted an unknown server key");
  } catch (e: any) {
    assert.is(e.code, ErrorCode.serverKeyMismatch);
  } finally {
    await other.stop();
  }
});

t("renews before expiry on the same socket without failing requests in flight", async () => {
  const c = await connect(broker.url, { key: await generateSigningKey(), knownServers: noFile() });
  const first = c.channel!.id;
  let renewed = 0;
  c.on("established", () => renewed++);
  let sent = 0;
  let failed = 0;
  const deadline = Date.now() + 7000; // longer than the 6 s ttl: at least one renewal happens
  const workers = Array.from({ length: 8 }, async () => {
    while (Date.now() < deadline) {
      const n = sent++;
      try {
        assert.equal(await c.request("echo", n), n);
      } catch (e) {
        failed++;
        throw e;
      }
    }
  });
  await Promise.all(workers);
  assert.is(failed, 0);
  assert.ok(renewed >= 1, `renewed ${renewed} times`);
  assert.is.not(c.channel!.id, first);
  assert.ok(sent > 100, `only ${sent} requests`);
  await c.close();
});

t("resumes after a dropped socket without a new handshake", async () => {
  const proxy = await startProxy(broker.port);
  const c = await connect(proxy.url, { key: await generateSigningKey(), knownServers: noFile() });
  const id = c.channel!.id;
  const handshakes = c.stats.handshakes;
  const resumed = new Promise<void>((r) => c.on("resumed", () => r()));
  proxy.cut(); // the TCP connection dies under the client, as on a network fault
  await resumed;
  assert.equal(await c.request("echo", "after"), "after");
  assert.is(c.channel!.id, id);
  assert.is(c.stats.handshakes, handshakes);
  assert.ok(c.stats.resumes >= 1);
  await c.close();
  proxy.close();
});

t("an unauthenticated terminal close code (4005 injected on the wire) does not end a client: it resumes", async () => {
  const proxy = await startProxy(broker.port);
  const c = await connect(proxy.url, { key: await generateSigningKey(), knownServers: noFile() });
  const id = c.channel!.id;
  const resumed = new Promise<void>((r) => c.on("resumed", () => r()));
  proxy.inject(new Uint8Array([0x88, 0x02, 0x0f, 0xa5])); // a server close frame, code 4005, from an on-path attacker
  await Promise.race([resumed, new Promise((_, reject) => setTimeout(() => reject(new Error(`no resume; state ${c.state}`)), 10_000))]);
  assert.equal(await c.request("echo", "still here"), "still here");
  assert.is(c.channel!.id, id);
  await c.close();
  proxy.close();
});

/** An unmasked WebSocket text frame, as a server (or an on-path attacker) would write it. */
function textFrame(text: string): Uint8Array {
  const body = Buffer.from(text, "utf8");
  const head = body.length < 126 ? [0x81, body.length] : [0x81, 126, body.length >> 8, body.length & 0xff];
  return new Uint8Array([...head, ...body]);
}

for (const code of ["forbidden", "unsupported"]) {
  t(`an injected \`${code}\` error during a renewal does not end a client that had a channel (W9)`, async () => {
    const proxy = await startProxy(broker.port);
    const c = await connect(proxy.url, { key: await generateSigningKey(), knownServers: noFile(), renew: false, reconnect: { baseMs: 20, maxMs: 200 } });
    try {
      assert.equal(await c.request("echo", 1), 1);
      // The renewal's hello reaches the server; its challenge is held on the wire while an
      // on-path attacker slips an outer error frame in front of it.
      proxy.hold();
      const renewal = c.renew();
      await new Promise((r) => setTimeout(r, 200));
      proxy.slip(textFrame(JSON.stringify({ type: "error", error: { code, message: "injected" } })));
      const e = await renewal.then(() => undefined, (x: unknown) => x as { code?: string });
      assert.is(e?.code, code);
      proxy.release();
      // The client is not closed, still serves, and renews once the wire is clean again.
      const last = () => c.request("echo", "still here", { timeoutMs: 5000 });
      assert.equal(await last().catch((x: { code?: string }) => (x.code === ErrorCode.connectionLost ? last() : Promise.reject(x))), "still here");
      assert.is.not(c.state, "closed");
      const before = c.stats.handshakes;
      await c.renew();
      assert.is(c.stats.handshakes, before + 1);
      assert.equal(await c.request("echo", "renewed"), "renewed");
    } finally {
      await c.close();
      proxy.close();
    }
  });
}

/**
 * A WebSocket relay in front of the broker, as an on-path attacker on ws:// would be: every
 * message passes as it is (text as text, binary as binary) unless `rewrite` changes a text one.
 */
async function startRelay(target: string, rewrite: (text: string) => string) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  const pairs = new Set<[WebSocket, WebSocket]>();
  wss.on("connection", (down) => {
    const up = new WebSocket(target);
    const pending: [Buffer, boolean][] = [];
    pairs.add([down, up]);
    down.on("message", (d: Buffer, isBinary) => (up.readyState === 1 ? up.send(d, { binary: isBinary }) : pending.push([d, isBinary])));
    up.on("open", () => pending.splice(0).forEach(([d, b]) => up.send(d, { binary: b })));
    up.on("message", (d: Buffer, isBinary) => down.send(isBinary ? d : rewrite(d.toString("utf8")), { binary: isBinary }));
    const end = () => (down.terminate(), up.terminate());
    down.on("close", end);
    up.on("close", end);
  });
  const port = (wss.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}/`,
    cut: () => pairs.forEach(([d, u]) => (d.terminate(), u.terminate())),
    close: () => (pairs.forEach(([d, u]) => (d.terminate(), u.terminate())), wss.close()),
  };
}

t("a `resumed` that lists a feature the client did not ask for is refused (protocol); the client then resumes cleanly", async () => {
  let tamper = true;
  const relay = await startRelay(broker.url, (text) => {
    const f = JSON.parse(text) as { type: string; features?: string[] };
    if (!tamper || f.type !== "resumed") return text;
    tamper = false;
    return JSON.stringify({ ...f, features: [...(f.features ?? []), "x-not-offered"] });
  });
  const c = await connect(relay.url, { key: await generateSigningKey(), knownServers: noFile(), reconnect: { baseMs: 20, maxMs: 100 } });
  const errors: { code: string; message: string }[] = [];
  c.on("error", (e) => errors.push({ code: e.code, message: e.message }));
  try {
    assert.equal(await c.request("echo", 1), 1);
    const resumed = new Promise<void>((r) => {
      const off = c.on("resumed", () => (off(), r()));
    });
    relay.cut();
    await resumed;
    assert.is(tamper, false, "the relay never saw a resumed frame");
    assert.ok(errors.some((e) => e.code === ErrorCode.protocol && e.message.includes("not offered")), JSON.stringify(errors));
    assert.is(c.stats.resumes, 1, "the tampered resume must not count");
    assert.equal(await c.request("echo", "after"), "after");
  } finally {
    await c.close();
    relay.close();
  }
});

// A client refuses a server frame it cannot use with `protocol`, never bad_request (PROTOCOL.md §4): here
// challenges that break §4.2, rewritten on the wire. Before a first channel, every handshake failure is final.
for (const [what, patch, field] of [
  ["the alias AES as its channel_type", (f: Record<string, unknown>) => ({ ...f, channel_type: "AES" }), "channel_type"],
  ["a 16-byte nonce (server nonces are exactly 32)", (f: Record<string, unknown>) => ({ ...f, nonce: Buffer.alloc(16, 7).toString("base64url") }), "nonce"],
  ["a feature named twice", (f: Record<string, unknown>) => ({ ...f, features: ["binary", "binary"] }), "features[1]"],
] as const) {
  t(`a challenge with ${what} ends a first connect with protocol, naming the field`, async () => {
    const relay = await startRelay(broker.url, (text) => {
      const f = JSON.parse(text) as Record<string, unknown>;
      return f.type === "challenge" ? JSON.stringify(patch(f)) : text;
    });
    try {
      await connect(relay.url, { key: await generateSigningKey(), serverKey: broker.fingerprint, reconnect: false });
      assert.unreachable("connected through a tampered challenge");
    } catch (e: any) {
      assert.is(e.code, ErrorCode.protocol);
      assert.match(e.message, `"${field}"`);
    } finally {
      relay.close();
    }
  });
}

t("after close, requests fail with `closed`", async () => {
  const c = await connect(broker.url, { key: await generateSigningKey(), knownServers: noFile() });
  await c.close();
  try {
    await c.request("echo", 1);
    assert.unreachable();
  } catch (e: any) {
    assert.is(e.code, ErrorCode.closed);
  }
});

t("a connection to nothing fails with connection_lost", async () => {
  try {
    await connect("ws://127.0.0.1:1/", { key: await generateSigningKey(), knownServers: noFile(), reconnect: false });
    assert.unreachable();
  } catch (e: any) {
    assert.is(e.code, ErrorCode.connectionLost);
  }
});

/** The headers of the upgrade requests a plain HTTP server gets (it answers none: each socket is dropped). */
async function upgradeHeaders(): Promise<{ url: string; seen: IncomingHttpHeaders[]; close(): Promise<void> }> {
  const seen: IncomingHttpHeaders[] = [];
  const server = createServer();
  server.on("upgrade", (req, socket) => (seen.push(req.headers), socket.destroy()));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`, seen, close: () => new Promise((r) => server.close(() => r())) };
}

t("the Node client's sockets offer no permessage-deflate (ciphertext does not compress); nodeWebSocket's options can ask for it", async () => {
  const s = await upgradeHeaders();
  try {
    const e = await connect(s.url, { key: await generateSigningKey(), serverKey: broker.fingerprint }).then(
      () => undefined,
      (x: unknown) => x,
    );
    assert.is((e as { code?: string }).code, ErrorCode.connectionLost);
    assert.is(s.seen.length, 1);
    assert.is(s.seen[0]!["sec-websocket-extensions"], undefined, "the default socket offered an extension");
    const Deflating = nodeWebSocket({ perMessageDeflate: true });
    await connect(s.url, { key: await generateSigningKey(), serverKey: broker.fingerprint, WebSocket: Deflating }).catch(() => {});
    assert.match(String(s.seen[1]?.["sec-websocket-extensions"]), /permessage-deflate/);
  } finally {
    await s.close();
  }
});

t.run();
