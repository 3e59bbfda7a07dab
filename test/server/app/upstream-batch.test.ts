/**
 * Batches to an upstream route that opted in (`--upstream-batch`,
 * docs/BACKEND.md "Batches"): a real broker process and a real HTTP
 * application that answers each batch one line per request, as each is
 * ready. Answers reach their own requests whatever their order; a slow,
 * missing or malformed line is `unavailable` for that request only; the batch
 * is signed once (both secrets during a rotation) with `kind` "batch"; the
 * fair share holds; a bad setting is refused at start.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { ServerResponse } from "node:http";
import { generateSigningKey } from "../../../shared/crypto.js";
import { FrameKind, openFrame } from "../../../shared/channel.js";
import { WebhookHeader, WebhookSecret, verifyWebhook } from "../../../server/app/signature.js";
import { type RunningBroker, startBroker } from "../../helpers/broker.js";
import { type Frame, Raw, type RawChannel, call, handshake, requestFrame } from "../../helpers/raw.js";
import { type AppRequest, AppServer, json } from "../../helpers/app-server.js";

const t = suite("upstream batches");
const SECRET = WebhookSecret.generate();
const OLD_SECRET = WebhookSecret.generate();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let app: AppServer;
let broker: RunningBroker;
let raw: Raw;
let ch: RawChannel;

/** A request of a batch as the application sees it. */
interface Inner {
  kind: string;
  id: string;
  op: string;
  data: any;
}

/** Answers a batch line by line: `plan(request)` gives each line's text (undefined: no line) and when to write it. */
function lines(plan: (q: Inner) => { after?: number; line: string | undefined }): (r: AppRequest, res: ServerResponse) => Promise<void> {
  return async (r, res) => {
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    await Promise.all(
      (r.json.requests as Inner[]).map(async (q) => {
        const p = plan(q);
        if (p.after) await sleep(p.after);
        if (p.line !== undefined) res.write(`${p.line}\n`);
      }),
    );
    res.end();
  };
}

/** Sends `ops` in one go (one WebSocket read on the broker: one batch) and reads every answer, by its seq. */
async function burst(ops: [string, unknown][]): Promise<Map<number, Frame & { ms: number }>> {
  const frames = await Promise.all(ops.map(([op, data]) => requestFrame(ch, op, data)));
  const t0 = performance.now();
  for (const f of frames) raw.send(f);
  const out = new Map<number, Frame & { ms: number }>();
  while (out.size < frames.length) {
    const f = await raw.next();
    assert.is(f.type, "response", JSON.stringify(f));
    out.set(f.seq, { ...JSON.parse(await openFrame(ch.keys.s2c, FrameKind.response, f.seq, f.channel, f.response)), ms: performance.now() - t0 });
  }
  return out;
}

async function metric(outcome: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`psimbols_upstream_requests_total{upstream="*",outcome="${outcome}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** A counter of the default route in /metrics. */
async function counter(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{upstream="*"}`));
  return line ? Number(line.split(" ").pop()) : NaN;
}

t.before(async () => {
  app = await AppServer.start();
  broker = await startBroker(["--upstream", app.url("/batch"), "--upstream", `one.=${app.url("/one")}`, "--upstream-batch", "*", "--upstream-timeout", "700", "--hellos-per-address", "1000"], {
    env: { PSIMBOLS_UPSTREAM_SECRET: `${SECRET} ${OLD_SECRET}` },
  });
  raw = await Raw.open(broker.url);
  ch = await handshake(raw, await generateSigningKey());
});
t.after(async () => {
  raw.close();
  await broker.stop();
  await app.close();
});

t("requests of one turn go out as one batch, signed once with both secrets, kind batch; answers in reverse order reach their own requests", async () => {
  app.on("/batch", async (r, res) => {
    const qs = [...(r.json.requests as Inner[])].reverse();
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    for (const q of qs) res.write(`${JSON.stringify({ id: q.id, data: { op: q.op, echo: q.data } })}\n`);
    res.end();
  });
  const n = app.to("/batch").length;
  const ops: [string, unknown][] = Array.from({ length: 8 }, (_, i) => [`app.op${i}`, { i }]);
  const first = ch.seq + 1;
  const got = await burst(ops);
  for (let i = 0; i < 8; i++) assert.equal(got.get(first + i)?.data, { op: `app.op${i}`, echo: { i } }, `request ${i}`);
  const posts = app.to("/batch").slice(n);
  assert.ok(posts.length < 8, `${posts.length} POSTs for 8 requests sent at once`);
  // /metrics counts the batches and what they carried (the first test: nothing was sent before).
  assert.is(await counter("psimbols_upstream_batches_total"), posts.length);
  assert.is(await counter("psimbols_upstream_batched_requests_total"), 8);
  const text = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
  assert.not.match(text, 'psimbols_upstream_batches_total{upstream="one."}', "a route without batches has no batch counter");
  for (const p of posts) {
    assert.is(p.json.kind, "batch");
    assert.is(p.json.type, "batch");
    assert.is(p.json.id, p.headers[WebhookHeader.id]);
    assert.match(p.json.id, /^bat_/);
    for (const q of p.json.requests as Inner[]) assert.is(q.kind, "request");
    assert.is(p.headers[WebhookHeader.signature]!.split(" ").length, 2);
    assert.ok(verifyWebhook([WebhookSecret.parse(SECRET)], p.headers, p.body), "current secret");
    assert.ok(verifyWebhook([WebhookSecret.parse(OLD_SECRET)], p.headers, p.body), "old secret");
    assert.not.ok(verifyWebhook([WebhookSecret.parse(WebhookSecret.generate())], p.headers, p.body), "another secret");
  }
  // A route that did not opt in still gets one POST per request.
  app.on("/one", (r, res) => json(res, { data: r.json.kind }));
  assert.equal(await call(raw, ch, "one.x"), { data: "request" });
});

t("a slow request holds up no other of its batch; past the timeout it alone is unavailable (timeout)", async () => {
  app.on("/batch", lines((q) => (q.op === "app.slow" ? { after: 1500, line: JSON.stringify({ id: q.id, data: "late" }) } : { line: JSON.stringify({ id: q.id, data: q.op }) })));
  const timeouts = await metric("timeout");
  const first = ch.seq + 1;
  const got = await burst([
    ["app.a", null],
    ["app.slow", null],
    ["app.b", null],
  ]);
  assert.equal(got.get(first)?.data, "app.a");
  assert.equal(got.get(first + 2)?.data, "app.b");
  assert.ok(got.get(first)!.ms < 500 && got.get(first + 2)!.ms < 500, `fast answers took ${got.get(first)!.ms.toFixed(0)} and ${got.get(first + 2)!.ms.toFixed(0)} ms`);
  assert.is(got.get(first + 1)?.error?.code, "unavailable");
  assert.ok(got.get(first + 1)!.ms < 1400, "the slow request waited for its late line");
  assert.is(await metric("timeout"), timeouts + 1);
  await sleep(1200);
  assert.is(raw.frames.length, 0, "the late line reached the client");
  assert.equal(await call(raw, ch, "echo", "still here"), { data: "still here" });
});

t("a malformed, missing or foreign line is unavailable (bad_body) for its request only; a second line for an id is dropped", async () => {
  app.on(
    "/batch",
    lines((q) => {
      switch (q.op) {
        case "app.ok":
          return { line: `${JSON.stringify({ id: q.id, data: "ok" })}\n${JSON.stringify({ id: q.id, data: "second" })}` };
        case "app.shape":
          return { line: JSON.stringify({ id: q.id, data: 1, extra: 2 }) };
        case "app.code":
          return { line: JSON.stringify({ id: q.id, error: { code: "teapot", message: "x" } }) };
        case "app.garbage":
          return { line: `{"id":"${q.id}", not json` };
        case "app.other":
          return { line: JSON.stringify({ id: "req_someone.else.1", data: "not yours" }) };
        case "app.error":
          return { line: JSON.stringify({ id: q.id, error: { code: "forbidden", message: "no" } }) };
        default:
          return { line: undefined };
      }
    }),
  );
  const bad = await metric("bad_body");
  const first = ch.seq + 1;
  const ops = ["app.ok", "app.shape", "app.code", "app.garbage", "app.other", "app.missing", "app.error"];
  const got = await burst(ops.map((op) => [op, null]));
  assert.equal(got.get(first)?.data, "ok");
  assert.equal(got.get(first + 6)?.error, { code: "forbidden", message: "no" });
  for (let i = 1; i <= 5; i++) assert.is(got.get(first + i)?.error?.code, "unavailable", ops[i]);
  assert.is(await metric("bad_body"), bad + 5);
});

t("a line for a request of another batch in flight on the route is dropped: the request waits for its own answer", async () => {
  // Batch 1 holds a slow request; batch 2's answer carries a line for it too (a confused or hostile application).
  let victim: string | undefined;
  app.on("/batch", async (r, res) => {
    const qs = r.json.requests as Inner[];
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    for (const q of qs) {
      if (q.op === "app.victim") {
        victim = q.id;
        await sleep(400);
        res.write(`${JSON.stringify({ id: q.id, data: "own" })}\n`);
      } else {
        if (victim) res.write(`${JSON.stringify({ id: victim, data: "STOLEN" })}\n`);
        res.write(`${JSON.stringify({ id: q.id, data: "thief" })}\n`);
      }
    }
    res.end();
  });
  const other = await Raw.open(broker.url);
  try {
    const thief = await handshake(other, await generateSigningKey());
    const pending = call(raw, ch, "app.victim");
    for (const deadline = Date.now() + 2000; victim === undefined; await sleep(10)) assert.ok(Date.now() < deadline, "the victim's batch never came");
    assert.equal(await call(other, thief, "app.thief"), { data: "thief" });
    assert.equal(await pending, { data: "own" }, "a line of another batch ended the request");
  } finally {
    other.close();
  }
});

t("an answer within the bound as sent but larger once encoded for the client (1e20 is 21 digits) is unavailable (too_large), batched or not", async () => {
  // 3000 × "1e20," is 15 KB as sent and 66 KB as the client would get it.
  const big = `[${Array(3000).fill("1e20").join(",")}]`;
  app.on("/batch", lines((q) => ({ line: `{"id":"${q.id}","data":${big}}` })));
  app.on("/one", (_r, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(`{"data":${big}}`);
  });
  const tooLarge = await metric("too_large");
  for (const op of ["app.big", "one.big"]) {
    const r = await call(raw, ch, op);
    assert.is(r.error?.code, "unavailable", `${op}: ${JSON.stringify(r).slice(0, 200)}`);
  }
  assert.is(await metric("too_large"), tooLarge + 1, "the default route's count (one. is another label)");
  assert.equal(await call(raw, ch, "echo", "still here"), { data: "still here" });
});

t("a batch answered with another status than 200, or cut off, is unavailable for each of its requests not answered yet", async () => {
  app.on("/batch", (_r, res) => json(res, { data: "ignored" }, 500));
  const got = await burst([
    ["app.x", null],
    ["app.y", null],
  ]);
  for (const f of got.values()) assert.is(f.error?.code, "unavailable");
  app.on("/batch", async (r, res) => {
    const [q] = r.json.requests as Inner[];
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    res.write(`${JSON.stringify({ id: q!.id, data: "first" })}\n`);
    await sleep(50);
    res.socket?.destroy(); // the connection breaks with the others unanswered
  });
  const first = ch.seq + 1;
  const cut = await burst([
    ["app.x", null],
    ["app.y", null],
    ["app.z", null],
  ]);
  assert.equal(cut.get(first)?.data, "first");
  // Whether the three went in one batch or more, each not answered is unavailable, none left waiting.
  for (let i = 1; i < 3; i++) assert.ok(cut.get(first + i)?.data === "first" || cut.get(first + i)?.error?.code === "unavailable");
  assert.equal(await call(raw, ch, "echo", 1), { data: 1 });
});

t("identities hogging a slow op of a batched route leave another identity normal latency", async () => {
  const SLOW_MS = 2500;
  const a = await AppServer.start();
  a.on("/rpc", lines((q) => ({ after: q.op === "app.slow" ? SLOW_MS : 0, line: JSON.stringify({ id: q.id, data: q.op }) })));
  const b = await startBroker(["--upstream", a.url("/rpc"), "--upstream-batch", "*", "--hellos-per-address", "1000"], { env: { PSIMBOLS_UPSTREAM_SECRET: SECRET } });
  const raws: Raw[] = [];
  try {
    for (let i = 0; i < 5; i++) {
      const r = await Raw.open(b.url);
      raws.push(r);
      const c = await handshake(r, await generateSigningKey());
      for (let j = 0; j < 64; j++) r.send(await requestFrame(c, "app.slow", j));
    }
    await sleep(300);
    const victim = await Raw.open(b.url);
    raws.push(victim);
    const c = await handshake(victim, await generateSigningKey());
    let slowest = 0;
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      assert.equal(await call(victim, c, "app.fast"), { data: "app.fast" });
      slowest = Math.max(slowest, performance.now() - t0);
    }
    assert.ok(slowest < 1000, `${slowest.toFixed(0)} ms`);
  } finally {
    for (const r of raws) r.close();
    await b.stop();
    await a.close();
  }
});

t("--upstream-batch naming no route, or one twice, fails at start with a clear error", async () => {
  for (const [args, want] of [
    [["--upstream", app.url("/batch"), "--upstream-batch", "billing."], '--upstream-batch: no --upstream route has the prefix "billing."'],
    [["--upstream", `billing.=${app.url("/batch")}`, "--upstream-batch", "*"], '--upstream-batch: no --upstream route has the prefix "*"'],
    [["--upstream-batch", "*"], '--upstream-batch: no --upstream route has the prefix "*"'],
    [["--upstream", app.url("/batch"), "--upstream-batch", "*", "--upstream-batch", "*"], '--upstream-batch: the route "*" is given twice'],
  ] as const) {
    const err = await startBroker([...args], { env: { PSIMBOLS_UPSTREAM_SECRET: SECRET } }).then(
      async (b) => (await b.stop(), "started"),
      (x: Error) => x.message,
    );
    assert.match(err, want);
  }
});

t.run();
