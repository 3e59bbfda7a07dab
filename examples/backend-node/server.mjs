#!/usr/bin/env node
// A psimbols backend in Node, node: modules only (docs/BACKEND.md); the same
// contract as examples/backend-python/app.py:
//
//   POST /rpc        the upstream (`psimbols serve --upstream http://HOST:PORT/rpc`):
//                    kv.put {key, value}, kv.get {key} per verified identity, app.whoami
//   POST /authorize  the authorize hook (`--authorize http://HOST:PORT/authorize`):
//                    allows the fingerprints in APP_ALLOW ("*" for all)
//
// Every call is verified as Standard Webhooks 1.0 says. Settings:
// PSIMBOLS_UPSTREAM_SECRET ("whsec_...", two space-separated during a rotation),
// APP_ALLOW (default "*"), APP_HOST / APP_PORT (default 127.0.0.1:8080; 0 = any free port).
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const TOLERANCE_S = 300; // refuse timestamps more than 5 minutes away
const MAX_BODY = 1024 * 1024;
const SEEN_KEEP_MS = 2 * TOLERANCE_S * 1000;

const secrets = (process.env.PSIMBOLS_UPSTREAM_SECRET ?? "").split(/\s+/).filter(Boolean).map((s) => {
  if (!s.startsWith("whsec_")) throw new Error("PSIMBOLS_UPSTREAM_SECRET: expected whsec_ followed by base64");
  return Buffer.from(s.slice(6), "base64");
});
if (secrets.length === 0) throw new Error("PSIMBOLS_UPSTREAM_SECRET is required");
const allow = new Set((process.env.APP_ALLOW ?? "*").split(",").map((s) => s.trim()).filter(Boolean));

/** fingerprint -> Map(key -> value) */
const stores = new Map();
/** webhook-id -> {at, answer}: a repeated id is answered once. */
const seen = new Map();

/** True when the headers carry a valid, fresh signature of `body` (a Buffer). */
export function verify(headers, body, now = Math.floor(Date.now() / 1000)) {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  const sigs = headers["webhook-signature"];
  if (!id || !ts || !sigs || !/^\d+$/.test(ts) || Math.abs(now - Number(ts)) > TOLERANCE_S) return false;
  const given = sigs.split(" ").filter((s) => s.startsWith("v1,")).map((s) => Buffer.from(s.slice(3), "base64"));
  for (const key of secrets) {
    const want = createHmac("sha256", key).update(`${id}.${ts}.`).update(body).digest();
    if (given.some((g) => g.length === want.length && timingSafeEqual(g, want))) return true;
  }
  return false;
}

function rpc(req) {
  const who = req.identity.fingerprint;
  const data = req.data ?? {};
  if (!stores.has(who)) stores.set(who, new Map());
  const store = stores.get(who);
  switch (req.op) {
    case "kv.put":
      if (typeof data.key !== "string") return { error: { code: "bad_request", message: "kv.put needs {key: string, value}" } };
      store.set(data.key, data.value ?? null);
      return { data: { ok: true, identity: who } };
    case "kv.get":
      if (typeof data.key !== "string") return { error: { code: "bad_request", message: "kv.get needs {key: string}" } };
      return { data: { value: store.get(data.key) ?? null, identity: who } };
    case "app.whoami":
      return { data: { identity: who, channel: req.channel, node: req.node, info: req.info } };
    default:
      return { error: { code: "not_found", message: "no such op" } };
  }
}

function once(id, run) {
  const now = Date.now();
  for (const [k, v] of seen) if (now - v.at > SEEN_KEEP_MS) seen.delete(k);
  if (!seen.has(id)) seen.set(id, { at: now, answer: run() });
  return seen.get(id).answer;
}

const server = createServer((req, res) => {
  const answer = (status, obj) => {
    const out = JSON.stringify(obj);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(out) }).end(out);
  };
  if (req.method !== "POST") return answer(405, { error: "POST only" });
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size > MAX_BODY) req.destroy();
    else chunks.push(c);
  });
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (!verify(req.headers, body)) return answer(401, { error: "bad or stale signature" });
    const msg = JSON.parse(body.toString("utf8"));
    if (req.url === "/rpc") return answer(200, once(req.headers["webhook-id"], () => rpc(msg)));
    if (req.url === "/authorize") {
      const ok = allow.has("*") || allow.has(msg.identity.fingerprint);
      return answer(200, ok ? { allow: true, info: { allowed_by: "allow-list" } } : { allow: false });
    }
    answer(404, { error: "not found" });
  });
});
server.keepAliveTimeout = 60_000; // longer than the broker's idle pool timeout

const host = process.env.APP_HOST ?? "127.0.0.1";
server.listen(Number(process.env.APP_PORT ?? 8080), host, () => {
  console.log(`backend listening on http://${host}:${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
