/**
 * The pure parts of the calls to applications (docs/BACKEND.md): route parsing and
 * longest-prefix routing, the upstream answer and the authorize answer
 * decoders (every shape the contract refuses, docs/BACKEND.md), and the
 * signing-secret setting.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { CallError, CallFailure } from "../../../server/app/http.js";
import { Upstream, decodeAnswer, parseUpstreamRoute, requestBody } from "../../../server/app/upstream.js";
import { decodeDecision } from "../../../server/app/authorize.js";
import { parseSecrets } from "../../../server/app/setup.js";
import { WebhookSecret } from "../../../server/app/signature.js";

function refusedWith(f: () => unknown, reason: CallFailure): void {
  try {
    f();
    assert.unreachable("accepted");
  } catch (e) {
    assert.instance(e, CallError);
    assert.is((e as CallError).reason, reason);
  }
}

test("--upstream values: a bare URL is the default route, PREFIX=URL a prefix route, a URL with = in its query stays whole", () => {
  assert.equal(parseUpstreamRoute("http://app:8080/rpc").prefix, "");
  const r = parseUpstreamRoute("kv.=http://kv:9000/x");
  assert.equal([r.prefix, r.url.href], ["kv.", "http://kv:9000/x"]);
  const q = parseUpstreamRoute("http://app/rpc?a=b");
  assert.equal([q.prefix, q.url.href], ["", "http://app/rpc?a=b"]);
  for (const bad of ["", "app:8080", "ftp://x/", "kv.=ws://x/", "http://user:pw@app/"]) {
    assert.throws(() => parseUpstreamRoute(bad), (e: Error) => e instanceof TypeError && e.message.startsWith("--upstream: "), bad);
  }
});

test("a route prefix is 1 to 64 of letters, digits and _ . : -, with a letter or digit; anything else before an = is refused, saying what a prefix may be", () => {
  for (const ok of ["kv.", "kv.slow", "Billing_v2:", "a", "9", "x-y", "k".repeat(64)]) assert.is(parseUpstreamRoute(`${ok}=http://app/x`).prefix, ok, ok);
  for (const [bad, why] of [
    ["kv/", 'the character "/" (U+002F)'],
    ["kv slow", 'the character " " (U+0020)'],
    ["café.", 'the character "é" (U+00E9)'],
    ["kv*", 'the character "*"'],
    ["k".repeat(65), "65 characters"],
    ["", "is empty"],
    ["-._", "no letter or digit"],
    ["app:8080/rpc?a", 'the character "/"'],
  ] as const) {
    assert.throws(
      () => parseUpstreamRoute(`${bad}=http://app/x`),
      (e: Error) => e instanceof TypeError && e.message.startsWith("--upstream: the text before \"=\" is not a route prefix") && e.message.includes(why) && e.message.includes("1 to 64 of letters, digits and _ . : -"),
      bad,
    );
  }
});

test("the longest matching prefix wins; the default route takes the rest; no default: no route", async () => {
  const secrets = [WebhookSecret.parse(WebhookSecret.generate())];
  const signed = (x: string) => ({ ...parseUpstreamRoute(x), secrets });
  const routes = ["http://d/", "kv.=http://kv/", "kv.slow=http://slow/"].map(signed);
  const u = new Upstream({ routes });
  const noDefault = new Upstream({ routes: [signed("kv.=http://kv/")] });
  try {
    const h = (op: string) => u.route(op);
    assert.ok(h("kv.put") && h("kv.put") === h("kv.get"));
    assert.ok(h("kv.slow.x") && h("kv.slow.x") !== h("kv.put"));
    assert.ok(h("other") && h("other") !== h("kv.put"));
    assert.is(noDefault.route("other"), undefined);
    assert.is(noDefault.route("KV.put"), undefined, "a prefix matches exactly, case-sensitive");
    assert.throws(() => new Upstream({ routes: [signed("kv.=http://a/"), signed("kv.=http://b/")] }), /given twice/);
    assert.throws(() => new Upstream({ routes, timeoutMs: 0 }), /upstream-timeout/);
  } finally {
    await u.close();
    await noDefault.close();
  }
});

test("the request body carries the documented fields, the caller's role, info spliced in as JSON", () => {
  const ctx = { identity: "SHA256:x", channel: "c", connection: "k", node: "n", op: "kv.put", requestId: "req_1", publicKey: { type: "Ed25519", data: "AA" }, info: '{"a":[1]}', role: async () => null };
  assert.equal(JSON.parse(requestBody(ctx, { k: 1 }, "operator")), { kind: "request", type: "request", id: "req_1", op: "kv.put", data: { k: 1 }, identity: { fingerprint: "SHA256:x", public_key: { type: "Ed25519", data: "AA" } }, role: "operator", channel: "c", node: "n", info: { a: [1] } });
  const bare = JSON.parse(requestBody({ ...ctx, info: undefined, publicKey: undefined }, undefined, null));
  assert.equal([bare.info, bare.role], [null, null]);
});

test("the admin. namespace, in any case, is never routed to an upstream: not by a default route, not by a prefix that matches it, and no admin. route is accepted", async () => {
  const secrets = [WebhookSecret.parse(WebhookSecret.generate())];
  const u = new Upstream({ routes: ["http://d/", "adm=http://a/", "a=http://b/"].map((x) => ({ ...parseUpstreamRoute(x), secrets })) });
  try {
    for (const op of ["admin.deleteUser", "admin.", "admin.channels", "Admin.deleteUser", "ADMIN.channels", "aDmIn.x", "adm\u0131n.x"]) assert.is(u.route(op), undefined, op);
    assert.ok(u.route("administrator") && u.route("admins.x") && u.route("other") && u.route(" admin.x") && u.route("adm\u0130n.x"));
    for (const bad of ["admin.=http://x/", "admin.users=http://x/", "Admin.=http://x/", "ADMIN.x=http://x/"]) {
      assert.throws(() => parseUpstreamRoute(bad), (e: Error) => e instanceof TypeError && /^--upstream: .*reserved admin\. namespace/.test(e.message), bad);
    }
  } finally {
    await u.close();
  }
});

test("upstream answers: data or a documented error; everything else (another member in error too) is bad_body", () => {
  assert.equal(decodeAnswer('{"data":null}'), { data: null });
  assert.equal(decodeAnswer('{"data":{"x":[1]}}'), { data: { x: [1] } });
  assert.equal(decodeAnswer('{"error":{"code":"forbidden","message":"no"}}'), { error: { code: "forbidden", message: "no" } });
  for (const bad of [
    "", "null", "[]", '"data"', "{}", '{"data":1,"x":1}', '{"result":1}',
    '{"error":"forbidden"}', '{"error":{"code":"teapot","message":"x"}}', '{"error":{"code":"unauthorised","message":"x"}}',
    '{"error":{"code":"timeout","message":"x"}}', '{"error":{"code":"forbidden"}}', `{"error":{"code":"internal","message":"${"m".repeat(1025)}"}}`,
    '{"data":1,"error":{"code":"internal","message":"x"}}', "{'data':1}",
    // a member of "error" besides code and message: refused as the answer's own extra keys are, never dropped unseen
    '{"error":{"code":"forbidden","message":"no","extra":1}}', '{"error":{"code":"forbidden","message":"no","details":{"field":"x"}}}',
  ]) refusedWith(() => decodeAnswer(bad), CallFailure.badBody);
});

test("authorize answers: allow false, allow true with an optional ttl and info; everything else refused", () => {
  assert.equal(decodeDecision('{"allow":false}', 3600, 4096), { allow: false });
  assert.equal(decodeDecision('{"allow":true}', 3600, 4096), { allow: true, ttl: undefined, info: undefined });
  assert.equal(decodeDecision('{"allow":true,"ttl":60,"info":{"u":1}}', 3600, 4096), { allow: true, ttl: 60, info: '{"u":1}' });
  assert.equal(decodeDecision('{"allow":true,"info":null}', 3600, 4096), { allow: true, ttl: undefined, info: undefined });
  for (const bad of ['{"allow":"true"}', '{"allow":1}', "{}", '{"allow":true,"ttl":1}', '{"allow":true,"ttl":3601}', '{"allow":true,"ttl":60.5}', '{"allow":true,"ttl":"60"}', '{"allow":true,"channel":"x"}', "[true]", "yes"]) {
    refusedWith(() => decodeDecision(bad, 3600, 4096), CallFailure.badBody);
  }
  refusedWith(() => decodeDecision(JSON.stringify({ allow: true, info: "i".repeat(4095) }), 3600, 4096), CallFailure.tooLarge);
  assert.is(decodeDecision(JSON.stringify({ allow: true, info: "i".repeat(4094) }), 3600, 4096).allow, true);
});

test("PSIMBOLS_UPSTREAM_SECRET: one or two secrets; none, three or a malformed one refused naming the variable, never the value", () => {
  const a = WebhookSecret.generate();
  const b = WebhookSecret.generate();
  assert.is(parseSecrets(a).length, 1);
  assert.is(parseSecrets(` ${a}  ${b} `).length, 2);
  for (const bad of [undefined, "", "  ", `${a} ${b} ${a}`, "whsec_short", `${a} nope`]) {
    try {
      parseSecrets(bad);
      assert.unreachable(String(bad));
    } catch (e) {
      assert.instance(e, TypeError);
      assert.match((e as Error).message, /^PSIMBOLS_UPSTREAM_SECRET: /);
      assert.not.match((e as Error).message, a.slice(6, 20));
    }
  }
});

test.run();
