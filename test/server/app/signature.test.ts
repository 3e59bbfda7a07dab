import { test } from "uvu";
import * as assert from "uvu/assert";
import { WebhookHeader, WebhookSecret, signWebhook, verifyWebhook } from "../../../server/app/signature.js";

// Standard Webhooks 1.0, the specification's worked example (its reference libraries' tests use the same).
const SPEC = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};

test("signs the specification's example to its published signature", () => {
  const h = signWebhook([WebhookSecret.parse(SPEC.secret)], SPEC.id, SPEC.body, SPEC.timestamp);
  assert.equal(h, { [WebhookHeader.id]: SPEC.id, [WebhookHeader.timestamp]: String(SPEC.timestamp), [WebhookHeader.signature]: SPEC.signature });
});

test("verifies the specification's example, and refuses a changed body, id, timestamp or secret", () => {
  const s = [WebhookSecret.parse(SPEC.secret)];
  const h = { [WebhookHeader.id]: SPEC.id, [WebhookHeader.timestamp]: String(SPEC.timestamp), [WebhookHeader.signature]: SPEC.signature };
  const now = SPEC.timestamp + 10;
  assert.ok(verifyWebhook(s, h, SPEC.body, { now }));
  assert.not.ok(verifyWebhook(s, h, SPEC.body + " ", { now }), "body");
  assert.not.ok(verifyWebhook(s, { ...h, [WebhookHeader.id]: SPEC.id + "x" }, SPEC.body, { now }), "id");
  assert.not.ok(verifyWebhook(s, { ...h, [WebhookHeader.timestamp]: String(SPEC.timestamp + 1) }, SPEC.body, { now }), "timestamp");
  assert.not.ok(verifyWebhook([WebhookSecret.parse(WebhookSecret.generate())], h, SPEC.body, { now }), "other secret");
});

test("refuses a timestamp outside the tolerance (a replay days later)", () => {
  const s = [WebhookSecret.parse(SPEC.secret)];
  const h = signWebhook(s, SPEC.id, SPEC.body, SPEC.timestamp);
  assert.ok(verifyWebhook(s, h, SPEC.body, { now: SPEC.timestamp + 299 }));
  assert.not.ok(verifyWebhook(s, h, SPEC.body, { now: SPEC.timestamp + 301 }));
  assert.not.ok(verifyWebhook(s, h, SPEC.body, { now: SPEC.timestamp - 301 }));
});

test("during a rotation signs with both secrets, and a receiver holding either one accepts", () => {
  const oldS = WebhookSecret.parse(WebhookSecret.generate());
  const newS = WebhookSecret.parse(WebhookSecret.generate());
  const h = signWebhook([newS, oldS], "msg_1", "{}", 1000);
  assert.is(h[WebhookHeader.signature]!.split(" ").length, 2);
  assert.ok(verifyWebhook([oldS], h, "{}", { now: 1000 }));
  assert.ok(verifyWebhook([newS], h, "{}", { now: 1000 }));
});

test("a malformed secret is refused with the setting's name and never its value", () => {
  for (const bad of [undefined, "", "abc", "whsec_", "whsec_!!!!", "whsec_" + Buffer.alloc(8).toString("base64"), "whsec_" + Buffer.alloc(100).toString("base64")]) {
    try {
      WebhookSecret.parse(bad, "PSIMBOLS_UPSTREAM_SECRET");
      assert.unreachable(String(bad));
    } catch (e) {
      assert.instance(e, TypeError);
      assert.match((e as Error).message, /^PSIMBOLS_UPSTREAM_SECRET: /);
      if (typeof bad === "string" && bad.length > 8) assert.not.match((e as Error).message, bad.slice(6));
    }
  }
  assert.is(JSON.stringify({ s: WebhookSecret.parse(SPEC.secret) }), '{"s":"[webhook secret]"}');
});

test.run();
