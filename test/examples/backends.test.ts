/**
 * The example backends (examples/backend-python/app.py and
 * examples/backend-node/server.mjs; docs/BACKEND.md), each run as a real
 * process behind a real broker: kv.put/kv.get per verified identity, the
 * authorize allow-list, and their own signature check (a stale timestamp,
 * another secret, a changed body; for Python also the specification's example).
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { fromUtf8 } from "../../shared/encoding.js";
import { type Challenge, decodeServerFrame } from "../../shared/frames.js";
import { answerChallenge, createHello } from "../../shared/handshake.js";
import { WebhookSecret, signWebhook } from "../../server/app/signature.js";
import { findOnPath } from "../../cli/cluster/net.js";
import { ROOT, type RunningBroker, startBroker } from "../helpers/broker.js";
import { Raw, call, handshake, requestFrame } from "../helpers/raw.js";
import { FrameKind, openFrame } from "../../shared/channel.js";
import { Redis } from "ioredis";
import { type TestRedis, startRedis } from "../helpers/redis.js";
import { skip } from "../helpers/skip.js";

const PYTHON = findOnPath("python3");
// Each broker, Redis and example process adds an `exit` listener; this file starts many.
process.setMaxListeners(Math.max(process.getMaxListeners(), 50));
const APP_DIR = join(ROOT, "examples", "backend-python");
const SECRET = WebhookSecret.generate();
/** Per-destination secrets (docs/BACKEND.md §1), as the broker and the example both read them. */
const RPC_SECRET = WebhookSecret.generate();
const AUTH_SECRET = WebhookSecret.generate();
const SECRETS_ENV = { PSIMBOLS_UPSTREAM_SECRET_DEFAULT: RPC_SECRET, PSIMBOLS_AUTHORIZE_SECRET: AUTH_SECRET };
// Standard Webhooks 1.0, the specification's worked example.
const SPEC = { secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1614265330, body: '{"test": 2432232314}', signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" };

async function startApp(cmd: (string | undefined)[], env: Record<string, string>): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(cmd[0]!, cmd.slice(1) as string[], { env: { ...process.env, APP_PORT: "0", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  process.on("exit", () => proc.kill("SIGKILL"));
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the example did not start:\n${out}`)), 10_000);
    const on = (d: Buffer) => {
      out += d.toString();
      const m = /backend listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    proc.stdout!.on("data", on);
    proc.stderr!.on("data", on);
    proc.once("exit", (code) => reject(new Error(`the example exited (${code}):\n${out}`)));
  });
  return { proc, url };
}

function backend(name: string, cmd: (string | undefined)[]): void {
  const t = suite(`${name} example backend`);
  let py: ChildProcess;
  let appUrl: string;
  let broker: RunningBroker;
  let alice: SigningKey;
  let bob: SigningKey;
  t.before(async () => {
    if (!cmd[0]) return;
    alice = await generateSigningKey();
    bob = await generateSigningKey();
    ({ proc: py, url: appUrl } = await startApp(cmd, { ...SECRETS_ENV, APP_ALLOW: `${alice.public.fingerprint},${bob.public.fingerprint}` }));
    broker = await startBroker(["--upstream", `${appUrl}/rpc`, "--authorize", `${appUrl}/authorize`, "--hellos-per-address", "1000"], { env: { PSIMBOLS_UPSTREAM_SECRET: "", ...SECRETS_ENV } });
  });
  t.after(async () => {
    if (!cmd[0]) return;
    await broker.stop();
    py.kill("SIGTERM");
  });

  if (!cmd[0]) {
    skip(t, `the ${name} example backend: kv, the allow-list and its signature checks`, `${name} is not on PATH`);
  } else {
    t("kv.put then kv.get through the broker, one store per verified identity", async () => {
      const ra = await Raw.open(broker.url);
      const ca = await handshake(ra, alice);
      const rb = await Raw.open(broker.url);
      const cb = await handshake(rb, bob);
      assert.equal(await call(ra, ca, "kv.put", { key: "colour", value: "teal" }), { data: { ok: true, identity: alice.public.fingerprint } });
      assert.equal(await call(ra, ca, "kv.get", { key: "colour" }), { data: { value: "teal", identity: alice.public.fingerprint } });
      assert.equal(await call(rb, cb, "kv.get", { key: "colour" }), { data: { value: null, identity: bob.public.fingerprint } });
      assert.equal((await call(ra, ca, "kv.put", { nokey: 1 })).error?.code, "bad_request");
      assert.equal((await call(ra, ca, "no.such")).error?.code, "not_found");
      const who = await call(ra, ca, "app.whoami");
      assert.equal(who.data.info, { allowed_by: "allow-list" }, "the authorize hook's info reaches the upstream");
      ra.close();
      rb.close();
    });

    t("text beyond ASCII round-trips exactly through the example: café, an emoji, a lone surrogate, in a key and in a value", async () => {
      const raw = await Raw.open(broker.url);
      const ch = await handshake(raw, alice);
      // The request reaches the example as raw UTF-8, signed as sent; Python's json.dumps answers with \u escapes (ensure_ascii).
      for (const [key, value] of [
        ["clé", "café"],
        ["emoji 😀", { text: "naïve 😀 日本語", list: ["é", "\u{1F600}"] }],
        ["lone", "\ud800 alone"],
      ] as const) {
        assert.equal(await call(raw, ch, "kv.put", { key, value }), { data: { ok: true, identity: alice.public.fingerprint } }, key);
        const got = await call(raw, ch, "kv.get", { key });
        assert.equal(got, { data: { value, identity: alice.public.fingerprint } }, key);
        assert.is(JSON.stringify(got.data.value), JSON.stringify(value), `${key}: exactly the same text`);
      }
      raw.close();
    });

    t("a forwarded call pays no Nagle delay (TCP_NODELAY): 30 sequential calls, median under 25 ms", async () => {
      const raw = await Raw.open(broker.url);
      const ch = await handshake(raw, alice);
      const took: number[] = [];
      for (let i = 0; i < 30; i++) {
        const from = performance.now();
        assert.ok((await call(raw, ch, "kv.get", { key: "colour" })).data);
        took.push(performance.now() - from);
      }
      took.sort((a, b) => a - b);
      // Without TCP_NODELAY a stdlib Python server's second write waits for the broker's delayed ACK: about 40 ms a call.
      assert.ok(took[15]! < 25, `median ${took[15]!.toFixed(1)} ms per call`);
      raw.close();
    });

    t("a key not on the allow-list gets forbidden after its proof", async () => {
      const raw = await Raw.open(broker.url);
      const h = await createHello(await generateSigningKey());
      raw.send(fromUtf8(h.bytes));
      const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
      raw.send((await answerChallenge(h, c, () => {})).proof);
      assert.is((await raw.next()).error?.code, "forbidden");
    });

    t("the example refuses a stale timestamp, another secret (the authorize hook's too), a changed body with 401, a body of another kind with 400, and runs a repeated id once", async () => {
      const body = JSON.stringify({ kind: "request", type: "request", id: "req_x", op: "kv.put", data: { key: "k", value: 1 }, identity: { fingerprint: alice.public.fingerprint, public_key: null }, channel: "c", node: "n", info: null });
      const post = (headers: Record<string, string>, b = body) => fetch(`${appUrl}/rpc`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: b });
      const s = [WebhookSecret.parse(RPC_SECRET)];
      const now = Math.floor(Date.now() / 1000);
      assert.is((await post(signWebhook(s, "req_stale", body, now - 400))).status, 401, "stale");
      assert.is((await post(signWebhook(s, "req_future", body, now + 400))).status, 401, "future");
      assert.is((await post(signWebhook([WebhookSecret.parse(WebhookSecret.generate())], "req_other", body))).status, 401, "other secret");
      assert.is((await post(signWebhook([WebhookSecret.parse(AUTH_SECRET)], "req_auth", body))).status, 401, "the authorize hook's secret");
      const asAuthorize = body.replace('"kind":"request"', '"kind":"authorize"');
      assert.is((await post(signWebhook(s, "req_kind", asAuthorize), asAuthorize)).status, 400, "another kind");
      assert.is((await post(signWebhook(s, "req_body", body), body.replace('"value":1', '"value":2'))).status, 401, "changed body");
      assert.is((await post({}, body)).status, 401, "unsigned");
      const ok = await post(signWebhook(s, "req_once", body));
      assert.is(ok.status, 200);
      assert.equal(await ok.json(), { data: { ok: true, identity: alice.public.fingerprint } });
      const changed = body.replace('"value":1', '"value":9');
      const again = await post(signWebhook(s, "req_once", changed), changed);
      assert.is(again.status, 200);
      assert.equal(await again.json(), { data: { ok: true, identity: alice.public.fingerprint } });
      const get = JSON.stringify({ ...JSON.parse(body), op: "kv.get", data: { key: "k" } });
      const read = await post(signWebhook(s, "req_read", get), get);
      assert.equal(await read.json(), { data: { value: 1, identity: alice.public.fingerprint } }, "the repeated id ran again");
    });

    t("the example answers a batch line by line behind a broker with --upstream-batch", async () => {
      const b = await startBroker(["--upstream", `${appUrl}/rpc`, "--upstream-batch", "*", "--hellos-per-address", "1000"], { env: { PSIMBOLS_UPSTREAM_SECRET: "", ...SECRETS_ENV } });
      try {
        const raw = await Raw.open(b.url);
        const ch = await handshake(raw, alice);
        const ops: [string, unknown][] = [["kv.put", { key: "b", value: 7 }], ["kv.get", { key: "colour" }], ["no.such", null], ["kv.put", { nokey: 1 }]];
        const first = ch.seq + 1;
        const frames = await Promise.all(ops.map(([op, data]) => requestFrame(ch, op, data)));
        for (const f of frames) raw.send(f);
        const got = new Map<number, any>();
        while (got.size < ops.length) {
          const f = await raw.next();
          got.set(f.seq, JSON.parse(await openFrame(ch.keys.s2c, FrameKind.response, f.seq, f.channel, f.response)));
        }
        assert.equal(got.get(first), { data: { ok: true, identity: alice.public.fingerprint } });
        assert.equal(got.get(first + 1), { data: { value: "teal", identity: alice.public.fingerprint } });
        assert.is(got.get(first + 2).error?.code, "not_found");
        assert.is(got.get(first + 3).error?.code, "bad_request");
        raw.close();
        // Posted by hand: one line per request, by id; a request of another kind gets no line; the batch's signature covers it all.
        const req = (id: string, kind = "request") => ({ kind, type: "request", id, op: "kv.get", data: { key: "b" }, identity: { fingerprint: alice.public.fingerprint, public_key: null }, channel: "c", node: "n", info: null });
        const body = JSON.stringify({ kind: "batch", type: "batch", id: "bat_x", requests: [req("req_b1"), req("req_b2", "authorize")] });
        const s = [WebhookSecret.parse(RPC_SECRET)];
        const post = (headers: Record<string, string>, bytes = body) => fetch(`${appUrl}/rpc`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: bytes });
        const r = await post(signWebhook(s, "bat_x", body));
        assert.is(r.status, 200);
        assert.equal((await r.text()).trim().split("\n").map((l) => JSON.parse(l)), [{ id: "req_b1", data: { value: 7, identity: alice.public.fingerprint } }]);
        assert.is((await post(signWebhook(s, "bat_y", body), body.replace("req_b1", "req_b3"))).status, 401, "changed batch");
      } finally {
        await b.stop();
      }
    });

    if (name === "python") t("the example's verify accepts the specification's own example and refuses it changed", () => {
      const code = [
        "import app",
        `h = {"webhook-id": ${JSON.stringify(SPEC.id)}, "webhook-timestamp": "${SPEC.timestamp}", "webhook-signature": ${JSON.stringify(SPEC.signature)}}`,
        `b = ${JSON.stringify(SPEC.body)}.encode()`,
        `print(app.verify(h, b, now=${SPEC.timestamp + 10}), app.verify(h, b + b" ", now=${SPEC.timestamp + 10}), app.verify(h, b, now=${SPEC.timestamp + 400}))`,
      ].join("\n");
      const r = spawnSync(PYTHON!, ["-c", code], { cwd: APP_DIR, env: { ...process.env, PSIMBOLS_UPSTREAM_SECRET_DEFAULT: SPEC.secret, PSIMBOLS_AUTHORIZE_SECRET: SPEC.secret }, encoding: "utf8" });
      assert.is(r.status, 0, r.stderr);
      assert.is(r.stdout.trim(), "True False False");
    });
  }
  t.run();
}

backend("python", [PYTHON, join(APP_DIR, "app.py")]);
backend("node", [process.execPath, join(ROOT, "examples", "backend-node", "server.mjs")]);

// ---------------------------------------------------------------- the examples' events readers
// The broker's events stream (docs/BACKEND.md, Events) is written by the broker: here the entries are
// appended in the documented format (docs/BACKEND.md "Redis Stream": XADD psimbols:events … type
// <type> identity <fingerprint> event <JSON>) and read back through the example's app.events op.
function eventsReader(name: string, cmd: (string | undefined)[], group: string): void {
  const t = suite(`${name} example backend: events reader`);
  let redis: TestRedis;
  let db: Redis;
  let py: ChildProcess;
  let appUrl: string;
  let broker: RunningBroker;
  let alice: SigningKey;
  t.before(async () => {
    if (!cmd[0]) return;
    redis = await startRedis();
    db = new Redis(redis.url);
    alice = await generateSigningKey();
    ({ proc: py, url: appUrl } = await startApp(cmd, { PSIMBOLS_UPSTREAM_SECRET: SECRET, APP_REDIS_URL: redis.url, APP_EVENTS_CONSUMER: "test" }));
    broker = await startBroker(["--upstream", `${appUrl}/rpc`], { env: { PSIMBOLS_UPSTREAM_SECRET: SECRET } });
  });
  t.after(async () => {
    if (!cmd[0]) return;
    await broker.stop();
    py.kill("SIGTERM");
    db.disconnect();
    await redis.stop();
  });
  if (!cmd[0]) skip(t, `the ${name} example backend reads the events stream`, `${name} is not on PATH`);
  else
    t("reads the stream with a consumer group, in order, per identity, and acknowledges what it read", async () => {
      const other = "SHA256:" + "o".repeat(43);
      const kinds = ["channel.established", "push.delivered", "channel.renewed", "channel.closed"];
      for (const [i, type] of kinds.entries()) {
        for (const who of [alice.public.fingerprint, other]) {
          const ev = { id: `evt_${who === other ? "o" : "a"}${i}`, type, time: new Date().toISOString(), node: "n1", identity: who, data: { channel: `c${i}` } };
          await db.xadd("psimbols:events", "*", "type", type, "identity", who, "event", JSON.stringify(ev));
        }
      }
      const raw = await Raw.open(broker.url);
      const ch = await handshake(raw, alice);
      let got: { id: string; type: string }[] = [];
      for (const deadline = Date.now() + 8000; got.length < kinds.length && Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
        got = (await call(raw, ch, "app.events")).data;
      }
      assert.equal(got.map((e) => e.type), kinds);
      assert.equal(got.map((e) => e.id), ["evt_a0", "evt_a1", "evt_a2", "evt_a3"]);
      const groups = (await db.xinfo("GROUPS", "psimbols:events")) as unknown[][];
      const g = Object.fromEntries((groups[0] as unknown[]).reduce<[string, unknown][]>((acc, v, i, a) => (i % 2 === 0 ? [...acc, [String(v), a[i + 1]]] : acc), []));
      assert.is(g.name, group);
      assert.is(g.pending, 0, "entries read but not acknowledged");
      raw.close();
    });
  t.run();
}

eventsReader("python", [PYTHON, join(APP_DIR, "app.py")], "backend-python");
eventsReader("node", [process.execPath, join(ROOT, "examples", "backend-node", "server.mjs")], "backend-node");
