/**
 * Hostile rows for the server API (docs/BACKEND.md): malformed bodies,
 * wrong types, oversize and chunked bodies, broken UTF-8, odd headers, each
 * sent with a valid token to a real `psimbols serve --api-listen` process.
 * Every row names the status and error code it must get; after each, nothing
 * changed: the registered keys, the live channels, the victim's push counter,
 * and the victim's channel still answers.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { request } from "node:http";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { connect, type Client } from "../../client/node.js";
import { type RunningBroker, runCli, startBroker } from "../helpers/broker.js";
import { join } from "node:path";

interface ApiRow {
  name: string;
  method: string;
  path: string;
  /** The body's bytes (a string is sent as UTF-8). */
  body?: string | Buffer | ((victim: string) => string);
  headers?: Record<string, string>;
  /** Send the body chunked, without a content-length. */
  chunked?: boolean;
  /** Replaces the bearer token header. */
  authorization?: string;
  status: number;
  code: string;
}

const FP = "SHA256:" + "A".repeat(43);
const BODY_BOUND = 48_880 + 1024; // MAX_PUSH_BYTES + 1024 (server/api/server.ts API_DEFAULTS.maxBodyBytes)

const rows: ApiRow[] = [
  { name: "a body that is not JSON", method: "POST", path: "/v1/push", body: '{"identity":', status: 400, code: "bad_request" },
  { name: "an empty body", method: "POST", path: "/v1/push", body: "", status: 400, code: "bad_request" },
  { name: "a JSON null", method: "POST", path: "/v1/push", body: "null", status: 400, code: "bad_request" },
  { name: "a JSON array", method: "POST", path: "/v1/revoke", body: "[]", status: 400, code: "bad_request" },
  { name: "a JSON string", method: "POST", path: "/v1/keys", body: '"key"', status: 400, code: "bad_request" },
  { name: "an array nested 20 000 deep", method: "POST", path: "/v1/push", body: "[".repeat(20_000) + "]".repeat(20_000), status: 400, code: "bad_request" },
  { name: "both identity and channel", method: "POST", path: "/v1/push", body: (v) => JSON.stringify({ identity: v, channel: "c", message: 1 }), status: 400, code: "bad_request" },
  { name: "neither identity nor channel", method: "POST", path: "/v1/revoke", body: "{}", status: 400, code: "bad_request" },
  { name: "an identity that is a number", method: "POST", path: "/v1/push", body: '{"identity":1,"message":1}', status: 400, code: "bad_request" },
  { name: "a push to a malformed fingerprint", method: "POST", path: "/v1/push", body: '{"identity":"SHA256:x","message":1}', status: 400, code: "bad_request" },
  { name: "a push to a fingerprint whose last character is not canonical (no key has it)", method: "POST", path: "/v1/push", body: `{"identity":"${FP.slice(0, -1)}${FP.endsWith("B") ? "C" : "B"}","message":1}`, status: 400, code: "bad_request" },
  { name: "a push to an identity that is not a fingerprint", method: "POST", path: "/v1/push", body: '{"identity":"alice","message":1}', status: 400, code: "bad_request" },
  { name: "a revoke of a malformed fingerprint", method: "POST", path: "/v1/revoke", body: `{"identity":"${FP.slice(0, -1)}"}`, status: 400, code: "bad_request" },
  { name: "a channel that is an object", method: "POST", path: "/v1/revoke", body: '{"channel":{"$ne":null}}', status: 400, code: "bad_request" },
  { name: "a push without a message", method: "POST", path: "/v1/push", body: (v) => JSON.stringify({ identity: v }), status: 400, code: "bad_request" },
  { name: "a __proto__ member carrying the target", method: "POST", path: "/v1/revoke", body: (v) => `{"__proto__":{"identity":"${v}"}}`, status: 400, code: "bad_request" },
  { name: "a body whose bytes are not UTF-8", method: "POST", path: "/v1/push", body: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), status: 400, code: "bad_request" },
  { name: "a declared content-length over the bound", method: "POST", path: "/v1/push", body: (v) => JSON.stringify({ identity: v, message: "x".repeat(BODY_BOUND) }), status: 413, code: "too_many" },
  { name: "a chunked body over the bound (no content-length)", method: "POST", path: "/v1/push", chunked: true, body: (v) => JSON.stringify({ identity: v, message: "x".repeat(BODY_BOUND) }), status: 413, code: "too_many" },
  { name: "a push message just over the push bound", method: "POST", path: "/v1/push", body: (v) => JSON.stringify({ identity: v, message: "x".repeat(48_880) }), status: 413, code: "too_many" },
  { name: "a key whose type is unknown", method: "POST", path: "/v1/keys", body: '{"public_key":{"type":"DSA","data":"AAAA"}}', status: 501, code: "unsupported" },
  { name: "a key whose data is not base64url", method: "POST", path: "/v1/keys", body: '{"public_key":{"type":"Ed25519","data":"!!!"}}', status: 400, code: "bad_request" },
  { name: "a key whose data is 100 KB", method: "POST", path: "/v1/keys", body: `{"public_key":{"type":"RSA","data":"${"A".repeat(40_000)}"}}`, status: 400, code: "bad_request" },
  { name: "a key that is a string", method: "POST", path: "/v1/keys", body: '{"public_key":"ssh-ed25519 AAAA"}', status: 400, code: "bad_request" },
  { name: "a role that does not exist", method: "POST", path: "/v1/keys", body: `{"fingerprint":"${FP}","role":"admin"}`, status: 400, code: "bad_request" },
  { name: "a fingerprint with a path in it", method: "POST", path: "/v1/keys/remove", body: '{"fingerprint":"SHA256:../../../etc/passwd"}', status: 400, code: "bad_request" },
  { name: "a fingerprint that is an array", method: "POST", path: "/v1/keys/remove", body: `{"fingerprint":["${FP}"]}`, status: 400, code: "bad_request" },
  { name: "an identity filter that is not a fingerprint", method: "GET", path: "/v1/channels?identity=*", status: 400, code: "bad_request" },
  { name: "a GET on a POST route", method: "GET", path: "/v1/push", status: 405, code: "bad_request" },
  { name: "a path outside the API", method: "GET", path: "/../../etc/passwd", status: 404, code: "not_found" },
  { name: "a Basic authorization", method: "GET", path: "/v1/stats", authorization: "Basic dXNlcjpwYXNz", status: 401, code: "unauthorised" },
  { name: "a bearer token of 8 KB", method: "GET", path: "/v1/stats", authorization: `Bearer ${"a".repeat(8192)}`, status: 401, code: "unauthorised" },
  { name: "a bearer token with a second token after a space", method: "GET", path: "/v1/stats", authorization: "Bearer psat_0000000000000000_x psat_1", status: 401, code: "unauthorised" },
];

const t = suite("hostile API rows");
let broker: RunningBroker;
let apiUrl: URL;
let token: string;
let victimKey: SigningKey;
let victim: Client;

function send(row: ApiRow, victimId: string): Promise<{ status: number; json: Record<string, any> | undefined }> {
  return new Promise((resolve, reject) => {
    const body = typeof row.body === "function" ? row.body(victimId) : row.body;
    const bytes = body === undefined ? undefined : typeof body === "string" ? Buffer.from(body, "utf8") : body;
    const headers: Record<string, string> = { authorization: row.authorization ?? `Bearer ${token}`, "content-type": "application/json", ...row.headers };
    if (bytes && !row.chunked) headers["content-length"] = String(bytes.length);
    const req = request(new URL(row.path.replace(/^\//, ""), apiUrl), { method: row.method, headers, timeout: 5000, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (d: string) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as Record<string, any>) : undefined }));
    });
    req.on("error", reject);
    // A refused upload is answered before it is all sent; the server may close while we still write.
    if (bytes && row.chunked) {
      for (let i = 0; i < bytes.length; i += 4096) req.write(bytes.subarray(i, i + 4096));
      req.end();
    } else req.end(bytes);
  });
}

async function api(method: string, path: string): Promise<Record<string, any>> {
  const r = await fetch(new URL(path.replace(/^\//, ""), apiUrl), { method, headers: { authorization: `Bearer ${token}` } });
  assert.is(r.status, 200);
  return (await r.json()) as Record<string, any>;
}

/** What no row may change. */
async function snapshot() {
  return {
    keys: JSON.stringify((await api("GET", "/v1/keys")).keys),
    channels: JSON.stringify(((await api("GET", "/v1/channels")).channels as { channel: string }[]).map((c) => c.channel).sort()),
  };
}

t.before(async () => {
  const dataDir = (await import("../helpers/broker.js")).tempDir();
  broker = await startBroker(["--api-listen", "127.0.0.1:0", "--hellos-per-address", "1000"], { dataDir });
  const m = /server API listening on (http:\/\/\S+)/.exec(broker.output());
  assert.ok(m, broker.output());
  apiUrl = new URL(m[1]!);
  const created = await runCli(["api-token", "create", "--file", join(dataDir, "api-tokens.json")]);
  assert.is(created.code, 0, created.stderr);
  token = created.stdout.trim();
  victimKey = await generateSigningKey();
  victim = await connect(broker.url, { key: victimKey, serverKey: broker.fingerprint, reconnect: false, renew: false });
});
t.after(async () => {
  await victim?.close();
  await broker?.stop();
});

for (const row of rows) {
  t(`${row.name}: ${row.status} ${row.code}, and nothing changes`, async () => {
    const before = await snapshot();
    const pushes: unknown[] = [];
    const off = victim.on("push", (m) => pushes.push(m));
    const r = await send(row, victimKey.public.fingerprint);
    assert.is(r.status, row.status);
    assert.is(r.json?.error?.code, row.code);
    assert.type(r.json?.error?.message, "string");
    assert.equal(await snapshot(), before);
    assert.equal(await victim.request("echo", row.name), row.name, "the victim's channel no longer answers");
    off();
    assert.equal(pushes, [], "a refused push reached the victim");
    assert.ok(broker.proc.exitCode === null, "the broker died");
  });
}

t("a push whose message looks like a server frame reaches the client as data inside the sealed push, not as a frame", async () => {
  const got = new Promise((r) => victim.on("push", r));
  const frame = { type: "established", source: "evil", response: "AAAA" };
  const r = await fetch(new URL("v1/push", apiUrl), { method: "POST", headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ identity: victimKey.public.fingerprint, message: frame }) });
  assert.is(r.status, 200);
  assert.equal(await got, frame);
  assert.equal(await victim.request("echo", 1), 1);
});

t.run();
