/**
 * One signing secret per destination (docs/BACKEND.md §1): each upstream
 * route, the authorize hook and the events URL sign with a variable of their
 * own, so a receiver holding one secret cannot verify (or mint) a call meant
 * for another; every signed body says its kind. A real broker process and a
 * real HTTP application.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../../shared/crypto.js";
import { WebhookSecret, verifyWebhook } from "../../../server/app/signature.js";
import { SECRET_ENV, createAppCalls, destinationSecrets, routeSecretEnv } from "../../../server/app/setup.js";
import winston from "winston";
import { Writable } from "node:stream";
import { startBroker } from "../../helpers/broker.js";
import { Raw, call, handshake } from "../../helpers/raw.js";
import { AppServer, json } from "../../helpers/app-server.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("each destination signs with its own secret only, and each body says its kind", async () => {
  const text = { rpc: WebhookSecret.generate(), kv: WebhookSecret.generate(), auth: WebhookSecret.generate(), events: WebhookSecret.generate() };
  const secret = Object.fromEntries(Object.entries(text).map(([k, v]) => [k, WebhookSecret.parse(v)])) as Record<keyof typeof text, WebhookSecret>;
  const app = await AppServer.start();
  app.on("/rpc", (r, res) => json(res, { data: r.json.op }));
  app.on("/kv", (r, res) => json(res, { data: r.json.op }));
  app.on("/auth", (_r, res) => json(res, { allow: true }));
  app.on("/events", (_r, res) => json(res, {}));
  // No shared PSIMBOLS_UPSTREAM_SECRET at all: every destination has its own.
  const broker = await startBroker(
    ["--upstream", app.url("/rpc"), "--upstream", `kv.=${app.url("/kv")}`, "--authorize", app.url("/auth"), "--events-url", app.url("/events"), "--hellos-per-address", "1000"],
    { env: { PSIMBOLS_UPSTREAM_SECRET: "", PSIMBOLS_UPSTREAM_SECRET_DEFAULT: text.rpc, PSIMBOLS_UPSTREAM_SECRET_KV: text.kv, PSIMBOLS_AUTHORIZE_SECRET: text.auth, PSIMBOLS_EVENTS_SECRET: text.events } },
  );
  try {
    const raw = await Raw.open(broker.url);
    const ch = await handshake(raw, await generateSigningKey());
    assert.equal(await call(raw, ch, "orders.list"), { data: "orders.list" });
    assert.equal(await call(raw, ch, "kv.get"), { data: "kv.get" });
    raw.close();
    for (let i = 0; i < 100 && app.to("/events").length === 0; i++) await sleep(20);
    const expect: [string, keyof typeof text, string][] = [["/rpc", "rpc", "request"], ["/kv", "kv", "request"], ["/auth", "auth", "authorize"], ["/events", "events", "event"]];
    for (const [path, own, kind] of expect) {
      const got = app.to(path);
      assert.ok(got.length > 0, `nothing reached ${path}`);
      for (const r of got) {
        assert.is(r.json.kind, kind, path);
        for (const k of Object.keys(secret) as (keyof typeof text)[]) {
          assert.is(verifyWebhook([secret[k]], r.headers, r.body), k === own, `${path} under the ${k} secret`);
        }
      }
    }
  } finally {
    await broker.stop();
    await app.close();
  }
});

test("the shared PSIMBOLS_UPSTREAM_SECRET signs every destination without a variable of its own; a malformed one is refused even when unused", () => {
  const shared = WebhookSecret.generate();
  const own = WebhookSecret.generate();
  assert.is(destinationSecrets({ [SECRET_ENV]: shared }, "PSIMBOLS_AUTHORIZE_SECRET", "--authorize").shared, true);
  assert.is(destinationSecrets({ [SECRET_ENV]: shared, PSIMBOLS_AUTHORIZE_SECRET: own }, "PSIMBOLS_AUTHORIZE_SECRET", "--authorize").shared, false);
  assert.is(destinationSecrets({ PSIMBOLS_AUTHORIZE_SECRET: `${own} ${shared}` }, "PSIMBOLS_AUTHORIZE_SECRET", "--authorize").secrets.length, 2);
  assert.throws(
    () => destinationSecrets({}, "PSIMBOLS_EVENTS_SECRET", "--events-url"),
    (e: Error) => e instanceof TypeError && e.message.startsWith("--events-url needs PSIMBOLS_EVENTS_SECRET (or the shared PSIMBOLS_UPSTREAM_SECRET)"),
  );
  assert.throws(
    () => destinationSecrets({ [SECRET_ENV]: "whsec_c2hvcnQ=", PSIMBOLS_EVENTS_SECRET: own }, "PSIMBOLS_EVENTS_SECRET", "--events-url"),
    (e: Error) => e.message.startsWith(`${SECRET_ENV}: `) && !e.message.includes("c2hvcnQ"),
  );
  assert.throws(
    () => destinationSecrets({ PSIMBOLS_EVENTS_SECRET: `${own.slice(0, 20)}` }, "PSIMBOLS_EVENTS_SECRET", "--events-url"),
    (e: Error) => e.message.startsWith("PSIMBOLS_EVENTS_SECRET: ") && !e.message.includes(own.slice(6, 20)),
  );
});

test("the start says so when two or more destinations share PSIMBOLS_UPSTREAM_SECRET, the events URL counted, and names each", async () => {
  const lines: string[] = [];
  const log = winston.createLogger({ level: "info", transports: [new winston.transports.Stream({ stream: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }) })] });
  const shared = { [SECRET_ENV]: WebhookSecret.generate() };
  const warned = async (settings: Parameters<typeof createAppCalls>[0]): Promise<string | undefined> => {
    lines.length = 0;
    const calls = createAppCalls({ ...settings, log });
    await calls.upstream?.close();
    await calls.authorize?.close();
    await sleep(10);
    return lines.find((l) => l.includes(`share ${SECRET_ENV}`));
  };
  const both = await warned({ upstreams: ["http://127.0.0.1:9/rpc"], eventsUrl: "http://127.0.0.1:9/events", env: shared });
  assert.ok(both?.includes("--upstream (default)") && both.includes("--events-url"), String(both));
  const three = await warned({ upstreams: ["http://127.0.0.1:9/rpc"], authorize: "http://127.0.0.1:9/auth", eventsUrl: "http://127.0.0.1:9/events", env: shared });
  assert.ok(three?.includes("--authorize") && three.includes("--events-url"), String(three));
  assert.is(await warned({ upstreams: ["http://127.0.0.1:9/rpc"], eventsUrl: "http://127.0.0.1:9/events", env: { ...shared, PSIMBOLS_EVENTS_SECRET: WebhookSecret.generate() } }), undefined, "the events URL has its own secret");
});

test("route secret variables: DEFAULT for the default route, the prefix upper-cased with _ for other characters; prefixes that would share one are refused at start", async () => {
  assert.is(routeSecretEnv(""), "PSIMBOLS_UPSTREAM_SECRET_DEFAULT");
  assert.is(routeSecretEnv("billing."), "PSIMBOLS_UPSTREAM_SECRET_BILLING");
  assert.is(routeSecretEnv("kv.slow"), "PSIMBOLS_UPSTREAM_SECRET_KV_SLOW");
  assert.is(routeSecretEnv("a-b:c"), "PSIMBOLS_UPSTREAM_SECRET_A_B_C");
  assert.throws(() => routeSecretEnv(".."), /no letter or digit/);
  const err = await startBroker(["--upstream", "kv.=http://127.0.0.1:1/", "--upstream", "kv-=http://127.0.0.1:1/"], { env: { PSIMBOLS_UPSTREAM_SECRET: WebhookSecret.generate() } }).then(
    () => "started",
    (x: Error) => x.message,
  );
  assert.match(err, /"kv\." and "kv-" would share the secret variable PSIMBOLS_UPSTREAM_SECRET_KV/);
});

test.run();
