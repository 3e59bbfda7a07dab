/**
 * Requests to an HTTP upstream (docs/BACKEND.md): a real broker
 * process forwarding to a real HTTP server; every failure of the upstream is
 * `unavailable` for that request only, counted, and the channel stays usable.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey, type SigningKey } from "../../../shared/crypto.js";
import { WebhookHeader, WebhookSecret, verifyWebhook } from "../../../server/app/signature.js";
import { type RunningBroker, startBroker } from "../../helpers/broker.js";
import { Raw, type RawChannel, call, handshake } from "../../helpers/raw.js";
import { AppServer, json } from "../../helpers/app-server.js";

const t = suite("upstream");
const SECRET = WebhookSecret.generate();
const OLD_SECRET = WebhookSecret.generate();
let app: AppServer;
let broker: RunningBroker;
let me: SigningKey;
let raw: Raw;
let ch: RawChannel;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** The request must fail with `unavailable`, be counted under `outcome`, and leave the channel usable. */
async function expectUnavailable(op: string, outcome: string, label = "*"): Promise<void> {
  const before = await metric("psimbols_upstream_requests_total", `upstream="${label}",outcome="${outcome}"`);
  const r = await call(raw, ch, op, { x: 1 });
  assert.equal(r.error?.code, "unavailable", JSON.stringify(r));
  assert.is(await metric("psimbols_upstream_requests_total", `upstream="${label}",outcome="${outcome}"`), before + 1, outcome);
  assert.equal(await call(raw, ch, "echo", "still here"), { data: "still here" });
}

t.before(async () => {
  app = await AppServer.start();
  app.on("/kv", (_r, res) => json(res, { data: { stored: true } }));
  app.on("/rest", (r, res) => json(res, { data: { op: r.json.op } }));
  broker = await startBroker(
    ["--upstream", app.url("/rest"), "--upstream", `kv.=${app.url("/kv")}`, "--upstream", `kv.slow=${app.url("/slow")}`, "--upstream-timeout", "400", "--upstream-max-in-flight", "2", "--hellos-per-address", "1000"],
    { env: { PSIMBOLS_UPSTREAM_SECRET: `${SECRET} ${OLD_SECRET}` } },
  );
  me = await generateSigningKey();
  raw = await Raw.open(broker.url);
  ch = await handshake(raw, me);
});
t.after(async () => {
  if (process.env.DEBUG_APP) console.error(broker.output());
  raw.close();
  await broker.stop();
  await app.close();
});

t("forwards an op to the longest matching prefix with the documented body, signed with both secrets", async () => {
  const n = app.to("/kv").length;
  assert.equal(await call(raw, ch, "kv.put", { key: "a", value: 1 }), { data: { stored: true } });
  const r = app.to("/kv")[n]!;
  assert.is(r.json.type, "request");
  assert.is(r.json.op, "kv.put");
  assert.equal(r.json.data, { key: "a", value: 1 });
  assert.is(r.json.identity.fingerprint, me.public.fingerprint);
  assert.is(r.json.identity.public_key.type, me.public.type);
  assert.is(r.json.channel, ch.grant.channel);
  assert.type(r.json.node, "string");
  assert.is(r.json.info, null);
  assert.is(r.json.id, r.headers[WebhookHeader.id]);
  assert.is(r.headers["content-type"], "application/json");
  assert.is(r.headers[WebhookHeader.signature]!.split(" ").length, 2);
  assert.ok(verifyWebhook([WebhookSecret.parse(SECRET)], r.headers, r.body), "current secret");
  assert.ok(verifyWebhook([WebhookSecret.parse(OLD_SECRET)], r.headers, r.body), "old secret");
  assert.not.ok(verifyWebhook([WebhookSecret.parse(WebhookSecret.generate())], r.headers, r.body), "another secret");
});

t("an op no prefix takes goes to the default route; built-ins are never forwarded", async () => {
  const before = app.requests.length;
  assert.equal(await call(raw, ch, "orders.list"), { data: { op: "orders.list" } });
  assert.equal(await call(raw, ch, "echo", 5), { data: 5 });
  assert.is(app.requests.length, before + 1);
});

t("request ids differ per request and the pool keeps one connection alive", async () => {
  const c0 = app.connections;
  const n = app.to("/kv").length;
  for (let i = 0; i < 5; i++) await call(raw, ch, "kv.get", { key: "a" });
  const ids = app.to("/kv").slice(n).map((r) => r.json.id);
  assert.is(new Set(ids).size, 5);
  assert.ok(app.connections - c0 <= 1, `${app.connections - c0} new connections for 5 sequential requests`);
});

t("an application error reaches the client as that inner error", async () => {
  app.on("/rest", (_r, res) => json(res, { error: { code: "forbidden", message: "not your order" } }));
  assert.equal(await call(raw, ch, "orders.cancel"), { error: { code: "forbidden", message: "not your order" } });
  app.on("/rest", (r, res) => json(res, { data: { op: r.json.op } }));
});

t("an answer that is not JSON is unavailable (bad_body)", async () => {
  app.on("/rest", (_r, res) => void res.writeHead(200, { "content-type": "text/html" }).end("<html>oops</html>"));
  await expectUnavailable("garbage.op", "bad_body");
});

t("JSON that is not the documented answer is unavailable: extra keys, unknown error code, both data and error", async () => {
  for (const body of [{ data: 1, extra: 2 }, { error: { code: "teapot", message: "x" } }, { data: 1, error: { code: "internal", message: "x" } }, [1], { error: { code: "internal", message: "x".repeat(2000) } }]) {
    app.on("/rest", (_r, res) => json(res, body));
    await expectUnavailable("shape.op", "bad_body");
  }
});

t("a 5xx (and any status but 200) is unavailable (status)", async () => {
  for (const status of [500, 503, 201, 302]) {
    app.on("/rest", (_r, res) => json(res, { data: "ignored" }, status));
    await expectUnavailable("status.op", "status");
  }
});

t("a slow upstream is unavailable after the timeout (timeout), and the late answer is dropped", async () => {
  app.on("/rest", async (_r, res) => {
    await sleep(1000);
    json(res, { data: "late" });
  });
  const started = Date.now();
  await expectUnavailable("slow.op", "timeout");
  assert.ok(Date.now() - started < 1000, "waited for the late answer");
  await sleep(800);
  assert.is(raw.frames.length, 0, "the late answer leaked to the client");
});

t("an answer over the size bound is unavailable (too_large), declared or streamed", async () => {
  app.on("/rest", (_r, res) => json(res, { data: "x".repeat(200_000) }));
  await expectUnavailable("big.op", "too_large");
  app.on("/rest", (_r, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write('{"data":"');
    for (let i = 0; i < 30; i++) res.write("y".repeat(10_000));
    res.end('"}');
  });
  await expectUnavailable("big.op", "too_large");
});

t("an answer trying to smuggle a frame is only data inside the sealed response", async () => {
  const smuggled = { type: "push", channel: ch.grant.channel, seq: 1, push: "AAAA" };
  app.on("/rest", (_r, res) => json(res, { data: smuggled }));
  assert.equal(await call(raw, ch, "smuggle.op"), { data: smuggled });
  await sleep(300);
  assert.is(raw.frames.length, 0, "an extra frame reached the client");
});

t("over the in-flight cap a request waits for a slot; past as many waiting again it is unavailable at once (saturated)", async () => {
  app.on("/slow", async (_r, res) => {
    await sleep(120);
    json(res, { data: "slow" });
  });
  const before = await metric("psimbols_upstream_requests_total", 'upstream="kv.slow",outcome="saturated"');
  const { requestFrame, readResponse } = await import("../../helpers/raw.js");
  // --upstream-max-in-flight 2: two in flight, two waiting, the fifth refused.
  for (let i = 0; i < 5; i++) raw.send(await requestFrame(ch, "kv.slow", i));
  const answers = [];
  for (let i = 0; i < 5; i++) answers.push(await readResponse(raw, ch));
  assert.equal(answers.filter((a) => a.error?.code === "unavailable").length, 1, JSON.stringify(answers));
  assert.equal(answers.filter((a) => a.data === "slow").length, 4);
  assert.is(await metric("psimbols_upstream_requests_total", 'upstream="kv.slow",outcome="saturated"'), before + 1);
});

t("an upstream that is down is unavailable (refused), and the node serves on", async () => {
  const down = await AppServer.start();
  const port = down.port;
  await down.close();
  const b = await startBroker(["--upstream", `http://127.0.0.1:${port}/`], { env: { PSIMBOLS_UPSTREAM_SECRET: SECRET } });
  try {
    const r2 = await Raw.open(b.url);
    const c2 = await handshake(r2, await generateSigningKey());
    for (let i = 0; i < 3; i++) assert.equal((await call(r2, c2, "any.op")).error?.code, "unavailable");
    assert.equal(await call(r2, c2, "echo", 1), { data: 1 });
    const text = await (await fetch(`http://127.0.0.1:${b.port}/metrics`)).text();
    assert.match(text, 'psimbols_upstream_requests_total{upstream="*",outcome="refused"} 3');
    r2.close();
  } finally {
    await b.stop();
  }
});

t("--upstream without PSIMBOLS_UPSTREAM_SECRET, or with a bad one, fails fast naming the setting and never the value", async () => {
  const env = { ...process.env } as Record<string, string>;
  delete env.PSIMBOLS_UPSTREAM_SECRET;
  for (const secret of [undefined, "whsec_tooshort", `${SECRET} ${SECRET} ${SECRET}`]) {
    const e: Record<string, string> = secret === undefined ? {} : { PSIMBOLS_UPSTREAM_SECRET: secret };
    const err = await startBroker(["--upstream", app.url("/rest")], { env: e }).then(
      () => "started",
      (x: Error) => x.message,
    );
    assert.match(err, "PSIMBOLS_UPSTREAM_SECRET");
    if (secret) assert.not.match(err, SECRET.slice(8));
  }
  const bad = await startBroker(["--upstream", "ftp://example/"], { env: { PSIMBOLS_UPSTREAM_SECRET: SECRET } }).then(
    () => "started",
    (x: Error) => x.message,
  );
  assert.match(bad, "--upstream: expected an http:// or https:// URL");
});

t.run();
