/**
 * The server API (docs/BACKEND.md "Server API"): a broker
 * and its API listener in this process, tokens made and revoked by the real
 * CLI (`psimbols api-token`), real HTTP calls, a real client on the broker.
 * Refusals (no token, a wrong one, a revoked one) change nothing; wrong
 * tokens are rate-limited per address; each operation does what it says.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { existsSync, readFileSync, statSync } from "node:fs";
import { generateSigningKey, type SigningKey, wirePublicKey } from "../../../shared/crypto.js";
import { CloseCode } from "../../../shared/errors.js";
import { connect, type Client } from "../../../client/node.js";
import { Broker, MAX_PUSH_BYTES } from "../../../server/broker.js";
import { FileRegistry, readKeysFile } from "../../../server/registry.js";
import { createLogger } from "../../../server/log.js";
import { ApiServer, parseListen } from "../../../server/api/server.js";
import { FileTokenStore, newToken, verifyToken } from "../../../server/api/tokens.js";
import { runCli, tempDir } from "../../helpers/broker.js";
import { call } from "../../helpers/api.js";
import { startRedis } from "../../helpers/redis.js";
import { RedisStore } from "../../../server/store/redis-store.js";
import { parseWrapKey } from "../../../server/store/wrap.js";
import { randomBytes } from "node:crypto";

const t = suite("server API");
const log = createLogger({ level: "error" });
let dir: string;
let tokensFile: string;
let keysFile: string;
let broker: Broker;
let api: ApiServer;
let serverKey: SigningKey;
let token: string;

const get = (path: string, tok = token) => call(api.url, "GET", path, { token: tok });
const post = (path: string, body: unknown, tok = token) => call(api.url, "POST", path, { token: tok, body });

async function cli(...args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.is(r.code, 0, r.stderr);
  return r.stdout.trim();
}

const client = (key: SigningKey, o: Record<string, unknown> = {}): Promise<Client> =>
  connect(`ws://127.0.0.1:${broker.port}/`, { key, serverKey: serverKey.public.fingerprint, reconnect: false, renew: false, ...o });

t.before(async () => {
  dir = tempDir();
  tokensFile = join(dir, "api-tokens.json");
  keysFile = join(dir, "keys.json");
  serverKey = await generateSigningKey();
  const registry = new FileRegistry(keysFile);
  broker = await Broker.start({ config: { port: 0, node: "api-node", keysFile, limits: { hellosPerAddress: 1000 } }, serverKey, registry, logger: log });
  api = await ApiServer.start({ broker, registry, tokens: new FileTokenStore(tokensFile), host: "127.0.0.1", port: 0, logger: log, failuresPerAddress: 1000 });
  token = await cli("api-token", "create", "--file", tokensFile, "--comment", "test backend");
});
t.after(async () => {
  await api.close();
  await broker.close();
});

t("api-token create prints the token once and stores only its SHA-256 (file mode 0600); list shows ids, never tokens", async () => {
  assert.match(token, /^psat_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
  const stored = readFileSync(tokensFile, "utf8");
  assert.not.ok(stored.includes(token.slice(22)), "the token's secret is in the tokens file");
  assert.is(statSync(tokensFile).mode & 0o777, 0o600);
  const list = JSON.parse(await cli("api-token", "list", "--file", tokensFile, "--json")) as { id: string; comment: string }[];
  assert.equal(list.map((x) => [x.id, x.comment]), [[token.slice(5, 21), "test backend"]]);
  assert.not.ok(JSON.stringify(list).includes(token.slice(22)));
});

t("no token, a malformed one, a wrong one, a right id with a wrong secret: 401 unauthorised, nothing happens", async () => {
  const key = await generateSigningKey();
  const c = await client(key);
  const pushes: unknown[] = [];
  c.on("push", (m) => pushes.push(m));
  const target = { identity: key.public.fingerprint, message: "nope" };
  const forged = newToken().token;
  const wrongSecret = token.slice(0, 22) + (token[22] === "A" ? "B" : "A") + token.slice(23);
  for (const [what, tok] of [["none", undefined], ["malformed", "hello"], ["unknown id", forged], ["wrong secret", wrongSecret]] as const) {
    const r = await call(api.url, "POST", "/v1/push", { ...(tok !== undefined ? { token: tok } : {}), body: target });
    assert.is(r.status, 401, what);
    assert.equal(r.json, { error: { code: "unauthorised", message: "a valid bearer token is required" } }, what);
    assert.is(r.headers.get("www-authenticate"), 'Bearer realm="psimbols"');
    const list = await call(api.url, "GET", "/v1/channels", { ...(tok !== undefined ? { token: tok } : {}) });
    assert.is(list.status, 401, what);
  }
  // An unknown path gets 401 too: without a token the API's routes are not revealed.
  assert.is((await call(api.url, "GET", "/nothing")).status, 401);
  assert.is(await broker.store.lastPush(key.public.fingerprint), 0, "a refused push landed");
  assert.equal(await c.request("echo", "still here"), "still here");
  assert.equal(pushes, []);
  await c.close();
});

t("a revoked token is refused at once (401), and the revoke is refused for a malformed or unknown id", async () => {
  const other = await cli("api-token", "create", "--file", tokensFile);
  assert.is((await get("/v1/stats", other)).status, 200);
  const id = other.slice(5, 21);
  assert.is(await cli("api-token", "revoke", id, "--file", tokensFile), `revoked ${id}`);
  const r = await get("/v1/stats", other);
  assert.is(r.status, 401);
  assert.is(r.json!.error.code, "unauthorised");
  const again = await runCli(["api-token", "revoke", id, "--file", tokensFile]);
  assert.is(again.code, 1);
  assert.match(again.stderr, /no token .* \(not_found\)/);
  const bad = await runCli(["api-token", "revoke", "../../etc", "--file", tokensFile]);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /16 hex digits .*\(bad_request\)/);
  assert.is((await get("/v1/stats")).status, 200, "the other token was revoked too");
});

t("wrong tokens are rate-limited per address: past the limit every call gets 429 with retry-after, the right token included", async () => {
  const tight = await ApiServer.start({ broker, tokens: new FileTokenStore(tokensFile), host: "127.0.0.1", port: 0, logger: log, failuresPerAddress: 3, failureWindowMs: 3600_000 });
  try {
    assert.is((await call(tight.url, "GET", "/v1/stats", { token })).status, 200);
    for (let i = 0; i < 3; i++) assert.is((await call(tight.url, "GET", "/v1/stats", { token: "wrong" })).status, 401);
    const limited = await call(tight.url, "GET", "/v1/stats", { token: "wrong" });
    assert.is(limited.status, 429);
    assert.is(limited.json!.error.code, "too_many");
    assert.ok(Number(limited.headers.get("retry-after")) > 0);
    const right = await call(tight.url, "POST", "/v1/push", { token, body: { identity: "SHA256:" + "A".repeat(43), message: 1 } });
    assert.is(right.status, 429);
    assert.is(await broker.store.lastPush("SHA256:" + "A".repeat(43)), 0, "a push passed the limit");
    // Successes do not count: the main listener still serves this address.
    assert.is((await get("/v1/stats")).status, 200);
  } finally {
    await tight.close();
  }
});

t("scopes: a call outside the token's scopes gets 403 forbidden and changes nothing; each scope opens its calls", async () => {
  const scoped = async (scope: string) => cli("api-token", "create", "--file", tokensFile, "--scope", scope);
  const pushRead = await scoped("push,read");
  const key = await generateSigningKey();
  const c = await client(key);
  const fp = key.public.fingerprint;
  // push,read: push and read, but neither revoke nor keys.
  assert.is((await post("/v1/push", { identity: fp, message: 1 }, pushRead)).status, 200);
  assert.is((await get("/v1/channels", pushRead)).status, 200);
  assert.is((await get("/v1/stats", pushRead)).status, 200);
  assert.is((await get("/v1/keys", pushRead)).status, 200);
  const keysBefore = existsSync(keysFile) ? readFileSync(keysFile, "utf8") : "(none)";
  for (const [path, body, scope] of [
    ["/v1/revoke", { identity: fp }, "revoke"],
    ["/v1/keys", { public_key: wirePublicKey(key.public) }, "keys"],
    ["/v1/keys/remove", { fingerprint: fp }, "keys"],
  ] as const) {
    const r = await post(path, body, pushRead);
    assert.equal([r.status, r.json], [403, { error: { code: "forbidden", message: `this token's scopes do not include ${scope}` } }], path);
  }
  assert.equal(await c.request("echo", "still"), "still", "a refused revoke revoked");
  assert.is(existsSync(keysFile) ? readFileSync(keysFile, "utf8") : "(none)", keysBefore, "a refused keys call changed the keys file");
  // revoke alone: no push, no read.
  const revokeOnly = await scoped("revoke");
  assert.is((await post("/v1/push", { identity: fp, message: 2 }, revokeOnly)).status, 403);
  assert.is((await get("/v1/channels", revokeOnly)).status, 403);
  assert.is(await broker.store.lastPush(fp), 1, "a refused push landed");
  // keys: client and blocked keys, never an operator key; keys:operator may.
  const keysOnly = await scoped("keys");
  const op = await generateSigningKey();
  let r = await post("/v1/keys", { public_key: wirePublicKey(op.public), role: "operator" }, keysOnly);
  assert.equal([r.status, r.json!.error.message], [403, "this token's scopes do not include keys:operator"]);
  assert.not.ok(existsSync(keysFile) && readKeysFile(keysFile).some((k) => k.fingerprint === op.public.fingerprint), "an operator key was added without keys:operator");
  const opKeys = await scoped("keys:operator");
  r = await post("/v1/keys", { public_key: wirePublicKey(op.public), role: "operator", comment: "admin" }, opKeys);
  assert.is(r.status, 201);
  // An existing operator key may not be demoted, blocked or removed with keys alone.
  for (const [path, body] of [
    ["/v1/keys", { public_key: wirePublicKey(op.public), role: "client" }],
    ["/v1/keys", { fingerprint: op.public.fingerprint, role: "blocked" }],
    ["/v1/keys/remove", { fingerprint: op.public.fingerprint }],
  ] as const) {
    r = await post(path, body, keysOnly);
    assert.is(r.status, 403, `${path} ${JSON.stringify(body).slice(0, 40)}`);
  }
  assert.is(readKeysFile(keysFile).find((k) => k.fingerprint === op.public.fingerprint)?.role, "operator");
  // keys:operator includes keys.
  const member = await generateSigningKey();
  assert.is((await post("/v1/keys", { public_key: wirePublicKey(member.public) }, opKeys)).status, 201);
  assert.is((await post("/v1/keys/remove", { fingerprint: member.public.fingerprint }, keysOnly)).status, 200);
  assert.is((await post("/v1/keys/remove", { fingerprint: op.public.fingerprint }, opKeys)).status, 200);
  assert.is((await get("/v1/keys", opKeys)).status, 403, "keys:operator reads without read");
  await c.close();
});

t("scopes: an unknown scope is refused at create; a token made before scopes keeps every scope and list marks it; the default leaves out operator keys", async () => {
  const bad = await runCli(["api-token", "create", "--file", tokensFile, "--scope", "push,admin"]);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /unknown scope "admin"; known: push, revoke, read, keys, keys:operator, or all/);
  // A token as an older version stored it: no scopes field.
  const old = newToken("before scopes");
  delete (old.entry as { scopes?: unknown }).scopes;
  await new FileTokenStore(tokensFile).add(old.entry);
  const op = await generateSigningKey();
  const r = await post("/v1/keys", { public_key: wirePublicKey(op.public), role: "operator" }, old.token);
  assert.is(r.status, 201, "a token made before scopes lost a scope");
  assert.is((await post("/v1/keys/remove", { fingerprint: op.public.fingerprint }, old.token)).status, 200);
  const list = JSON.parse(await cli("api-token", "list", "--file", tokensFile, "--json")) as { id: string; scopes: string[]; legacy?: boolean }[];
  const row = list.find((x) => x.id === old.entry.id)!;
  assert.equal([row.legacy, row.scopes], [true, ["push", "revoke", "read", "keys", "keys:operator"]]);
  const plain = await cli("api-token", "list", "--file", tokensFile);
  assert.match(plain, new RegExp(`^${old.entry.id} .* all \\(made before scopes\\)`, "m"));
  // `token` (made without --scope) has the default: no operator keys.
  const mine = list.find((x) => x.id === token.slice(5, 21))!;
  assert.equal([mine.legacy, mine.scopes], [undefined, ["push", "revoke", "read", "keys"]]);
  assert.is((await post("/v1/keys", { public_key: wirePublicKey(op.public), role: "operator" })).status, 403);
});

t("push to an identity and to one channel reaches the client; an unknown channel is 404, a message over the bound 413", async () => {
  const key = await generateSigningKey();
  const c = await client(key);
  const got: unknown[] = [];
  const seqs: unknown[] = [];
  c.on("push", (m, info) => (got.push(m), seqs.push(info)));
  let r = await post("/v1/push", { identity: key.public.fingerprint, message: { hello: "world" } });
  assert.equal([r.status, r.json], [200, { seq: 1 }]);
  r = await post("/v1/push", { channel: c.channel!.id, message: [1, 2] });
  assert.equal([r.status, r.json], [200, { seq: 2 }]);
  const deadline = Date.now() + 3000;
  while (got.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
  assert.equal(got, [{ hello: "world" }, [1, 2]]);
  // The handler gets each push's seq, the one the API answered with.
  assert.equal(seqs, [{ seq: 1, channel: c.channel!.id }, { seq: 2, channel: c.channel!.id }]);
  r = await post("/v1/push", { channel: "no-such-channel", message: 1 });
  assert.equal([r.status, r.json!.error.code], [404, "not_found"]);
  r = await post("/v1/push", { identity: key.public.fingerprint, message: "x".repeat(MAX_PUSH_BYTES) });
  assert.equal([r.status, r.json!.error.code], [413, "too_many"]);
  assert.is(await broker.store.lastPush(key.public.fingerprint), 2, "a refused push landed");
  await c.close();
});

t("revoke a channel, then an identity: each client gets `revoked` and close 4005", async () => {
  for (const by of ["channel", "identity"] as const) {
    const key = await generateSigningKey();
    const c = await client(key);
    const ch = c.channel!.id;
    const closed = new Promise<number>((res) => c.on("close", (e) => res(e.code)));
    const r = await post("/v1/revoke", by === "channel" ? { channel: ch } : { identity: key.public.fingerprint });
    assert.equal([r.status, r.json], [200, { revoked: [ch] }], by);
    assert.is(await closed, CloseCode.revoked.code, by);
    const again = await post("/v1/revoke", { channel: ch });
    assert.equal([again.status, again.json], [200, { revoked: [] }], "revoked twice");
  }
});

t("list channels, all or by identity (a fingerprint's + unencoded too), each with the node that holds it; never a key", async () => {
  const [k1, k2] = [await generateSigningKey(), await generateSigningKey()];
  const [c1, c2] = [await client(k1), await client(k2)];
  const all = await get("/v1/channels");
  assert.is(all.status, 200);
  const ids = (all.json!.channels as { channel: string }[]).map((x) => x.channel);
  assert.ok(ids.includes(c1.channel!.id) && ids.includes(c2.channel!.id));
  const fp = k1.public.fingerprint;
  for (const q of [encodeURIComponent(fp), fp]) {
    const one = await get(`/v1/channels?identity=${q}`);
    // held by the node whose socket it is (docs/BACKEND.md, Server API)
    assert.equal(one.json, { channels: [{ channel: c1.channel!.id, identity: fp, node: "api-node", valid_until: c1.channel!.validUntil, holder: "api-node", state: "held" }] });
  }
  assert.not.match(JSON.stringify(all.json), /"key"/);
  const bad = await get("/v1/channels?identity=alice");
  assert.equal([bad.status, bad.json!.error.code], [400, "bad_request"]);
  await Promise.all([c1.close(), c2.close()]);
});

t("keys: add a client key, block one by fingerprint, list, remove; the keys file the node reads changes, refusals (each saying what is valid) leave it alone", async () => {
  const member = await generateSigningKey();
  let r = await post("/v1/keys", { public_key: wirePublicKey(member.public), comment: "from the API" });
  assert.is(r.status, 201);
  assert.equal([r.json!.key.fingerprint, r.json!.key.role, r.json!.key.comment], [member.public.fingerprint, "client", "from the API"]);
  const bad = await generateSigningKey();
  r = await post("/v1/keys", { fingerprint: bad.public.fingerprint, role: "blocked" });
  assert.is(r.status, 201);
  const before = readFileSync(keysFile, "utf8");
  for (const [body, message] of [
    [{ fingerprint: bad.public.fingerprint }, undefined], // a client key needs its public key
    // a wrong value says what is valid (not "got string", which read as if a string were wrong)
    [{ public_key: wirePublicKey(member.public), role: "root" }, '"role" expected one of "client", "operator", "blocked", not another name'],
    [{ public_key: wirePublicKey(member.public), role: 7 }, '"role" expected one of "client", "operator", "blocked", got number'],
    [{ public_key: { type: "Ed25519", data: "AAAA" } }, undefined],
    [{ public_key: wirePublicKey(member.public), fingerprint: member.public.fingerprint }, undefined],
    [{ public_key: wirePublicKey(member.public), comment: "x".repeat(201) }, '"comment" refused: a comment is at most 200 characters, got 201; nothing was changed'],
    [{ public_key: wirePublicKey(member.public), comment: "a\nb" }, '"comment" refused: a comment is one line without control characters (found \\u000a at character 2); nothing was changed'],
  ] as const) {
    r = await post("/v1/keys", body);
    assert.equal([r.status, r.json!.error.code], [400, "bad_request"], JSON.stringify(body).slice(0, 80));
    if (message) assert.is(r.json!.error.message, message);
  }
  r = await post("/v1/keys/remove", { fingerprint: "SHA256:nope" });
  assert.equal([r.status, r.json!.error.message], [400, '"fingerprint" expected a fingerprint SHA256:…']);
  r = await post("/v1/keys", { public_key: { type: "DSA", data: "AAAA" } });
  assert.equal([r.status, r.json!.error.code], [501, "unsupported"]);
  assert.is(readFileSync(keysFile, "utf8"), before, "a refused add changed the keys file");
  r = await get("/v1/keys");
  assert.equal((r.json!.keys as { fingerprint: string; role: string }[]).map((k) => [k.fingerprint, k.role]), [[member.public.fingerprint, "client"], [bad.public.fingerprint, "blocked"]]);
  // The node reads the same file (re-read within a second): the blocked key is refused after its proof.
  await new Promise((res) => setTimeout(res, 1100));
  const refused = await client(bad).then(
    () => "connected",
    (e: { code?: string }) => e.code,
  );
  assert.is(refused, "forbidden");
  r = await post("/v1/keys/remove", { fingerprint: bad.public.fingerprint });
  assert.equal([r.status, r.json], [200, { removed: bad.public.fingerprint }]);
  r = await post("/v1/keys/remove", { fingerprint: bad.public.fingerprint });
  assert.equal([r.status, r.json!.error.code], [404, "not_found"]);
  assert.equal(readKeysFile(keysFile).map((k) => k.fingerprint), [member.public.fingerprint]);
});

t("stats: the node, its sockets and counters, exactly the fields docs/BACKEND.md lists", async () => {
  const c = await client(await generateSigningKey());
  const r = await get("/v1/stats");
  assert.is(r.status, 200);
  const shape = (v: unknown): unknown => (typeof v === "object" && v !== null ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)])) : typeof v);
  assert.equal(shape(r.json), {
    node: "string",
    connections: "number",
    bound: "number",
    stats: {
      handshakes: { started: "number", established: "number", rejected: "number", forbidden: "number", rateLimited: "number" },
      resumes: { ok: "number", rejected: "number" },
      requests: { ok: "number", failed: "number", unauthorised: "number", tooMany: "number" },
      notices: "number",
      pushes: "number",
      storeErrors: "number",
    },
  });
  assert.is(r.json!.node, "api-node");
  assert.ok(r.json!.connections >= 1 && r.json!.bound >= 1);
  assert.ok(r.json!.stats.handshakes.established >= 1);
  await c.close();
  const m = await (await broker.metrics.metrics());
  assert.match(m, /psimbols_api_requests_total\{status="200"\} \d+/);
  assert.match(m, /psimbols_api_requests_total\{status="401"\} \d+/);
});

t("an unknown path is 404, a known path with another method 405; a node without a registry answers keys calls 501", async () => {
  let r = await get("/v1/nothing");
  assert.equal([r.status, r.json!.error.code], [404, "not_found"]);
  r = await call(api.url, "DELETE", "/v1/push", { token });
  assert.equal([r.status, r.json!.error.code], [405, "bad_request"]);
  const bare = await ApiServer.start({ broker, tokens: new FileTokenStore(tokensFile), host: "127.0.0.1", port: 0, logger: log });
  try {
    r = await call(bare.url, "GET", "/v1/keys", { token });
    assert.equal([r.status, r.json!.error.code], [501, "unsupported"]);
  } finally {
    await bare.close();
  }
});

t("the store down: push, revoke and channels answer 503 unavailable, and the node keeps serving the API", async () => {
  const redis = await startRedis();
  const store = new RedisStore({ url: redis.url, wrapKey: parseWrapKey(randomBytes(32).toString("base64url")), node: "r" });
  const node = await Broker.start({ config: { port: 0, node: "r" }, serverKey, store, logger: log });
  const down = await ApiServer.start({ broker: node, tokens: new FileTokenStore(tokensFile), host: "127.0.0.1", port: 0, logger: log });
  try {
    assert.is((await call(down.url, "POST", "/v1/push", { token, body: { identity: "SHA256:" + "B".repeat(42) + "A", message: 1 } })).status, 200);
    redis.kill();
    for (const [method, path, body] of [
      ["POST", "/v1/push", { identity: "SHA256:" + "B".repeat(42) + "A", message: 2 }],
      ["POST", "/v1/push", { channel: "c", message: 2 }],
      ["POST", "/v1/revoke", { identity: "SHA256:" + "B".repeat(42) + "A" }],
      ["GET", "/v1/channels", undefined],
    ] as const) {
      const r = await call(down.url, method, path, { token, ...(body ? { body } : {}) });
      assert.equal([r.status, r.json!.error.code], [503, "unavailable"], `${method} ${path}`);
      assert.not.match(r.json!.error.message, /127\.0\.0\.1|ECONN|redis:/i, "the store's address or error leaks");
    }
    assert.is((await call(down.url, "GET", "/v1/stats", { token })).status, 200, "the API itself went down with the store");
  } finally {
    await down.close();
    await node.close().catch(() => undefined);
    await redis.stop();
  }
});

t("verifyToken compares hashes; --api-listen parses HOST:PORT and names itself in errors", async () => {
  const store = new FileTokenStore(join(dir, "other-tokens.json"));
  assert.not.ok(existsSync(join(dir, "other-tokens.json")));
  const { token: tok, entry } = newToken("x");
  await store.add(entry);
  assert.is((await verifyToken(store, tok))?.id, entry.id);
  assert.is(await verifyToken(store, tok + "A"), undefined);
  assert.is(await verifyToken(store, tok.toUpperCase()), undefined);
  assert.ok(await store.remove(entry.id));
  assert.is(await verifyToken(store, tok), undefined);
  assert.equal(parseListen("127.0.0.1:9394"), { host: "127.0.0.1", port: 9394 });
  assert.equal(parseListen("[::1]:0"), { host: "::1", port: 0 });
  assert.equal(parseListen("localhost:80"), { host: "localhost", port: 80 });
  for (const bad of ["9394", "127.0.0.1", "127.0.0.1:99999", "::1:80", "a b:1"]) assert.throws(() => parseListen(bad), /setting api-listen/);
});

t.run();
