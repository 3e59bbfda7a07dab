#!/usr/bin/env node
// A psimbols backend in Node, node: modules only (docs/BACKEND.md); the same
// contract as examples/backend-python/app.py:
//
//   POST /rpc        the upstream (`psimbols serve --upstream http://HOST:PORT/rpc`):
//                    kv.put {key, value}, kv.get {key} per verified identity, app.whoami;
//                    also batches (`--upstream-batch '*'`, docs/BACKEND.md "Batches"):
//                    one line {id, data|error} per request, written as each is done
//   POST /authorize  the authorize hook (`--authorize http://HOST:PORT/authorize`):
//                    allows the fingerprints in APP_ALLOW ("*" for all)
//
// Every call is verified as Standard Webhooks 1.0 says, each endpoint with its own
// secret, and its body's "kind" checked ("request" at /rpc, "authorize" at
// /authorize), so a message signed for another destination or purpose is refused.
// Settings, the broker's names (docs/BACKEND.md §1): PSIMBOLS_UPSTREAM_SECRET_DEFAULT
// (/rpc) and PSIMBOLS_AUTHORIZE_SECRET (/authorize), "whsec_...", two space-separated
// during a rotation; PSIMBOLS_UPSTREAM_SECRET, the shared one, where those are not set;
// APP_ALLOW (default "*"), APP_HOST / APP_PORT (default 127.0.0.1:8080; 0 = any free port).
// With APP_REDIS_URL it also reads the broker's lifecycle events from the Redis
// stream (APP_EVENTS_STREAM, default psimbols:events) in the consumer group
// APP_EVENTS_GROUP (default backend-node) as APP_EVENTS_CONSUMER (default the
// host name), and answers app.events with the caller's latest ones.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { connect } from "node:net";
import { hostname } from "node:os";

const TOLERANCE_S = 300; // refuse timestamps more than 5 minutes away
const MAX_BODY = 8 * 1024 * 1024; // a batch holds up to 64 requests of up to ~64 KiB each
const SEEN_KEEP_MS = 2 * TOLERANCE_S * 1000;

/** The keys of the secrets in the variable `own`, else in the shared PSIMBOLS_UPSTREAM_SECRET. */
function loadSecrets(own) {
  const name = process.env[own] ? own : "PSIMBOLS_UPSTREAM_SECRET";
  const keys = (process.env[name] ?? "").split(/\s+/).filter(Boolean).map((s) => {
    if (!s.startsWith("whsec_")) throw new Error(`${name}: expected whsec_ followed by base64`);
    return Buffer.from(s.slice(6), "base64");
  });
  if (keys.length === 0) throw new Error(`${own} (or the shared PSIMBOLS_UPSTREAM_SECRET) is required`);
  return keys;
}
/** path -> the secrets that sign its calls and the kinds of body it takes. */
const endpoints = new Map([
  ["/rpc", { secrets: loadSecrets("PSIMBOLS_UPSTREAM_SECRET_DEFAULT"), kinds: ["request", "batch"] }],
  ["/authorize", { secrets: loadSecrets("PSIMBOLS_AUTHORIZE_SECRET"), kinds: ["authorize"] }],
]);
const allow = new Set((process.env.APP_ALLOW ?? "*").split(",").map((s) => s.trim()).filter(Boolean));

/** fingerprint -> Map(key -> value) */
const stores = new Map();
/** webhook-id -> {at, answer}: a repeated id is answered once. */
const seen = new Map();
/** fingerprint -> its latest lifecycle events (from the Redis stream). */
const events = new Map();
const EVENTS_KEPT = 50;

/** True when the headers carry a valid, fresh signature of `body` (a Buffer) under one of `secrets`. */
export function verify(secrets, headers, body, now = Math.floor(Date.now() / 1000)) {
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
    case "app.events":
      return { data: events.get(who) ?? [] };
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

/**
 * A batch (its signature verified over the whole body above): one line per request, each
 * written as soon as that request is done, in any order; the broker matches lines by id.
 * The ops here are synchronous; a slow one would be awaited in its own promise, so the
 * others' lines go first (docs/BACKEND.md "Batches": what an upstream keeps by streaming).
 */
async function batch(msg, res) {
  res.writeHead(200, { "content-type": "application/x-ndjson" }); // no content-length: chunked, each write goes out
  await Promise.all(
    (Array.isArray(msg.requests) ? msg.requests : []).map(async (req) => {
      if (req?.kind !== "request" || typeof req.id !== "string") return; // no line: that request alone is unavailable
      const answer = once(req.id, () => rpc(req));
      res.write(`${JSON.stringify({ id: req.id, ...answer })}\n`);
    }),
  );
  res.end();
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
    const endpoint = endpoints.get(req.url);
    if (!endpoint) return answer(404, { error: "not found" });
    if (!verify(endpoint.secrets, req.headers, body)) return answer(401, { error: "bad or stale signature" });
    const msg = JSON.parse(body.toString("utf8"));
    if (!endpoint.kinds.includes(msg?.kind)) return answer(400, { error: `this endpoint takes kind ${endpoint.kinds.join(" or ")}` });
    if (msg.kind === "batch") return batch(msg, res);
    if (req.url === "/rpc") return answer(200, once(req.headers["webhook-id"], () => rpc(msg)));
    const ok = allow.has("*") || allow.has(msg.identity.fingerprint);
    answer(200, ok ? { allow: true, info: { allowed_by: "allow-list" } } : { allow: false });
  });
});
server.keepAliveTimeout = 60_000; // longer than the broker's idle pool timeout

// ---------------------------------------------------------------- events reader
// The broker appends every lifecycle event to a Redis Stream (docs/BACKEND.md "Events"):
// XADD psimbols:events ... type <type> identity <fingerprint> event <JSON>. A consumer
// group reads it across all nodes and after restarts (unacknowledged entries come again).

/** Just enough RESP2 over node:net for XGROUP, XREADGROUP and XACK: one command at a time. */
function redisClient(url) {
  const u = new URL(url);
  const sock = connect(Number(u.port || 6379), u.hostname || "127.0.0.1");
  let buf = Buffer.alloc(0);
  let waiting;
  const parse = (i) => {
    const end = buf.indexOf("\r\n", i);
    if (end < 0) return undefined;
    const kind = String.fromCharCode(buf[i]);
    const line = buf.toString("utf8", i + 1, end);
    if (kind === "+") return [line, end + 2];
    if (kind === "-") return [new Error(line), end + 2];
    if (kind === ":") return [Number(line), end + 2];
    if (kind === "$") {
      const n = Number(line);
      if (n < 0) return [null, end + 2];
      if (buf.length < end + 2 + n + 2) return undefined;
      return [buf.toString("utf8", end + 2, end + 2 + n), end + 2 + n + 2];
    }
    if (kind === "*") {
      const n = Number(line);
      if (n < 0) return [null, end + 2];
      const out = [];
      let j = end + 2;
      for (let k = 0; k < n; k++) {
        const r = parse(j);
        if (!r) return undefined;
        out.push(r[0]);
        j = r[1];
      }
      return [out, j];
    }
    throw new Error("unexpected reply from redis");
  };
  sock.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    const r = parse(0);
    if (!r || !waiting) return;
    buf = buf.subarray(r[1]);
    const w = waiting;
    waiting = undefined;
    r[0] instanceof Error ? w.reject(r[0]) : w.resolve(r[0]);
  });
  const fail = (e) => {
    if (waiting) waiting.reject(e);
    waiting = undefined;
  };
  sock.on("error", fail);
  sock.on("close", () => fail(new Error("redis closed the connection")));
  const call = (...args) =>
    new Promise((resolve, reject) => {
      waiting = { resolve, reject };
      sock.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join(""));
    });
  const ready = new Promise((resolve, reject) => (sock.once("connect", resolve), sock.once("error", reject)));
  return { ready, call, close: () => sock.destroy() };
}

async function readEvents(url, stream, group, consumer) {
  for (let backoff = 200; ; backoff = Math.min(backoff * 2, 10_000)) {
    const r = redisClient(url);
    try {
      await r.ready;
      if (u.password) await r.call("AUTH", decodeURIComponent(u.password));
      await r.call("XGROUP", "CREATE", stream, group, "0", "MKSTREAM").catch((e) => {
        if (!String(e.message).includes("BUSYGROUP")) throw e;
      });
      backoff = 200;
      let start = "0"; // first what this consumer read before but did not acknowledge, then new entries
      for (;;) {
        const reply = await r.call("XREADGROUP", "GROUP", group, consumer, "COUNT", 100, "BLOCK", 5000, "STREAMS", stream, start);
        const entries = reply ? reply[0][1] : [];
        if (start === "0" && entries.length === 0) {
          start = ">";
          continue;
        }
        for (const [entryId, flat] of entries) {
          if (flat) {
            const f = {};
            for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i]] = flat[i + 1];
            const ev = JSON.parse(f.event);
            const kept = events.get(f.identity) ?? [];
            kept.push({ id: ev.id, type: ev.type, time: ev.time, node: ev.node, data: ev.data ?? {} });
            if (kept.length > EVENTS_KEPT) kept.shift();
            events.set(f.identity, kept);
          }
          await r.call("XACK", stream, group, entryId);
        }
      }
    } catch (e) {
      console.error(`backend: events reader: ${e.message}; again in ${backoff / 1000} s`);
      r.close();
      await new Promise((res) => setTimeout(res, backoff));
    }
  }
}
const u = process.env.APP_REDIS_URL ? new URL(process.env.APP_REDIS_URL) : undefined;
if (u) {
  const stream = process.env.APP_EVENTS_STREAM ?? "psimbols:events";
  const group = process.env.APP_EVENTS_GROUP ?? "backend-node";
  void readEvents(u.href, stream, group, process.env.APP_EVENTS_CONSUMER ?? hostname());
  console.log(`backend reading events from ${stream} (group ${group})`);
}

const host = process.env.APP_HOST ?? "127.0.0.1";
server.listen(Number(process.env.APP_PORT ?? 8080), host, () => {
  console.log(`backend listening on http://${host}:${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
