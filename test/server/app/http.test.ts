/**
 * The HTTP/1.1 client of calls to applications (server/app/http.ts,
 * docs/BACKEND.md §2 "Connections"): real sockets to a server that writes
 * exact bytes, so every framing the contract accepts, and every malformed
 * answer it refuses, is met as an application would send it.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { type AddressInfo, type Server, type Socket, createServer } from "node:net";
import { AppClient, CallError, CallFailure } from "../../../server/app/http.js";
import { WebhookSecret, verifyWebhook } from "../../../server/app/signature.js";

const secret = WebhookSecret.parse(WebhookSecret.generate());

/** A server whose answer to each request (read up to its body) is `answer`'s bytes, written in pieces. */
async function rawServer(answer: (request: string, socket: Socket) => (string | Buffer)[] | undefined): Promise<{ server: Server; url: URL; requests: string[]; connections: () => number }> {
  const requests: string[] = [];
  let connections = 0;
  const server = createServer((s) => {
    connections++;
    let buf = "";
    s.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/content-length: (\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length < end + 4 + length) return;
      const req = buf.slice(0, end + 4 + length);
      buf = buf.slice(end + 4 + length);
      requests.push(req);
      const parts = answer(req, s);
      if (!parts) return;
      void (async () => {
        for (const p of parts) {
          if (p === "CLOSE") return void s.end();
          s.write(p);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
    });
    s.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/rpc?x=1`), requests, connections: () => connections };
}

async function outcome(p: Promise<string>): Promise<string> {
  try {
    return `ok ${await p}`;
  } catch (e) {
    assert.instance(e, CallError);
    return (e as CallError).reason;
  }
}

const call = (id: string, maxBytes = 1000) => ({ id, body: '{"kind":"request"}', timeoutMs: 1000, maxBytes });

test("one signed POST per call, head built once: path, host, content-type, content-length and the three webhook headers", async () => {
  const s = await rawServer(() => ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]);
  const c = new AppClient({ url: s.url, secrets: [secret] });
  try {
    assert.is(await c.post(call("req_1")), "{}");
    const req = s.requests[0]!;
    const [head, body] = req.split("\r\n\r\n") as [string, string];
    const lines = head.split("\r\n");
    assert.is(lines[0], "POST /rpc?x=1 HTTP/1.1");
    const h = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
    assert.is(h.host, s.url.host);
    assert.is(h["content-type"], "application/json");
    assert.is(h["content-length"], String(body.length));
    assert.is(h["webhook-id"], "req_1");
    assert.ok(verifyWebhook([secret], h, body));
  } finally {
    await c.close();
    s.server.close();
  }
});

test("answers framed by content-length, chunked (with extensions and trailers), or the close; 1xx skipped; split anywhere; keep-alive reused", async () => {
  const cases: [string, (string | Buffer)[], string][] = [
    ["length", ["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", '{"data":', "1}"], '{"data":1}'],
    ["chunked", ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=y\r\n{\"da\r", "\n6\r\nta\":2}\r\n0\r\nx-trailer: 1\r\n\r\n"], '{"data":2}'],
    ["interim", ["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", '{"data":3}'], '{"data":3}'],
    ["close", ["HTTP/1.0 200 OK\r\n\r\n", '{"data":4}', "CLOSE"], '{"data":4}'],
  ];
  for (const [name, parts, want] of cases) {
    const s = await rawServer(() => parts);
    const c = new AppClient({ url: s.url, secrets: [secret] });
    try {
      assert.is(await outcome(c.post(call("req_a"))), `ok ${want}`, name);
      assert.is(await outcome(c.post(call("req_b"))), `ok ${want}`, name);
      assert.is(s.connections(), name === "close" ? 2 : 1, `${name}: connections`);
    } finally {
      await c.close();
      s.server.close();
    }
  }
});

test("malformed or oversized answers fail: status, too_large (declared, streamed, chunked), refused (not HTTP, smuggling signs, two answers)", async () => {
  const cases: [string, (string | Buffer)[], string][] = [
    ["500", ["HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n"], CallFailure.status],
    ["201", ["HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"], CallFailure.status],
    ["declared", ["HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n"], CallFailure.tooLarge],
    ["streamed", ["HTTP/1.0 200 OK\r\n\r\n", "x".repeat(600), "x".repeat(600)], CallFailure.tooLarge],
    ["chunked", ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1000\r\n"], CallFailure.tooLarge],
    ["garbage", ["SSH-2.0-OpenSSH\r\n\r\n"], CallFailure.refused],
    ["both framings", ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n{}"], CallFailure.refused],
    ["two lengths", ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}"], CallFailure.refused],
    ["gzip", ["HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n{}"], CallFailure.refused],
    ["bad chunk", ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"], CallFailure.refused],
    ["two answers", ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n"], CallFailure.refused],
    ["huge head", [`HTTP/1.1 200 OK\r\nx: ${"a".repeat(20_000)}`], CallFailure.refused],
    ["closed early", ["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", "CLOSE"], CallFailure.refused],
    ["silent", [], CallFailure.timeout],
  ];
  for (const [name, parts, want] of cases) {
    const s = await rawServer(() => parts);
    const c = new AppClient({ url: s.url, secrets: [secret] });
    try {
      const t0 = Date.now();
      assert.is(await outcome(c.post({ ...call("req_x"), timeoutMs: 300 })), want, name);
      assert.ok(Date.now() - t0 < 1000, `${name}: took ${Date.now() - t0} ms`);
    } finally {
      await c.close();
      s.server.close();
    }
  }
});

test("an idle connection is not used past a second before the server's keep-alive: timeout=N, nor past 30 s", async () => {
  for (const [hint, reused] of [["timeout=1", false], ["timeout=5, max=100", true], ["", true]] as const) {
    const s = await rawServer(() => [`HTTP/1.1 200 OK\r\n${hint ? `keep-alive: ${hint}\r\n` : ""}content-length: 2\r\n\r\n{}`]);
    const c = new AppClient({ url: s.url, secrets: [secret] });
    try {
      assert.is(await c.post(call("req_1")), "{}");
      await new Promise((r) => setTimeout(r, 20));
      assert.is(await c.post(call("req_2")), "{}");
      assert.is(s.connections(), reused ? 1 : 2, hint);
    } finally {
      await c.close();
      s.server.close();
    }
  }
});

test("no server: refused; more calls than connections wait for one; a closed client refuses", async () => {
  const s = await rawServer(() => ['HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{"data":5}']);
  const port = Number(s.url.port);
  const c = new AppClient({ url: s.url, secrets: [secret], connections: 2 });
  try {
    const all = await Promise.all(Array.from({ length: 6 }, (_, i) => c.post(call(`req_${i}`))));
    assert.equal(all, Array(6).fill('{"data":5}'));
    assert.ok(s.connections() <= 2, `${s.connections()} connections`);
  } finally {
    await c.close();
    s.server.close();
  }
  assert.is(await outcome(c.post(call("req_late"))), CallFailure.refused);
  await new Promise((r) => s.server.close(() => r(undefined)));
  const d = new AppClient({ url: new URL(`http://127.0.0.1:${port}/`), secrets: [secret] });
  assert.is(await outcome(d.post(call("req_down"))), CallFailure.refused);
  await d.close();
});

test.run();
