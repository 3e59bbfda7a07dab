/**
 * The operator's key ops (PROTOCOL.md §6.6: `admin.keys`, `admin.keys.add`,
 * `admin.keys.block`, `admin.keys.unblock`, `admin.keys.remove`), which the
 * web console's Keys view calls: a real broker process, real WebSocket
 * clients, an operator key and keys without the role, on a keys file and on
 * a real Redis. Each write is checked through the registry itself (the file's
 * bytes, the Redis hash) and the CLI; every refusal leaves them exactly as
 * they were, and no `admin.keys*` request reaches the upstream.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Redis } from "ioredis";
import { type Client, type SigningKey, connect, generateSigningKey, loadKey } from "../../client/node.js";
import { PsimbolsError } from "../../shared/errors.js";
import { WebhookSecret } from "../../server/app/signature.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";
import { AppServer, json } from "../helpers/app-server.js";
import { Broker } from "../../server/broker.js";
import { createLogger } from "../../server/log.js";
import type { RegisteredKey } from "../../server/registry.js";
import { ADMIN_OPS, UNKNOWN_ADMIN_OP } from "../../server/operator.js";

/** The error code and message of a refused request (fails when it succeeds). */
async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    const r = await p;
    assert.unreachable(`expected a refusal, got ${JSON.stringify(r)}`);
  } catch (e) {
    if (!(e instanceof PsimbolsError)) throw e;
    return { code: e.code, message: e.message };
  }
  throw new Error("unreachable");
}

async function until(what: string, f: () => Promise<boolean> | boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const backend of ["keys file", "Redis"] as const) {
  const t = suite(`admin.keys ops (${backend})`);
  const dir = tempDir();
  const keysFile = join(dir, "keys.json");
  let redis: TestRedis | undefined;
  let redisClient: Redis | undefined;
  let broker: RunningBroker;
  let app: AppServer;
  let operator: SigningKey;
  let member: SigningKey;
  let op: Client;
  const where = () => (backend === "Redis" ? ["--redis", redis!.url] : ["--file", keysFile]);
  /** The registry exactly as stored: the file's bytes, or the Redis hash (sorted). */
  const snapshot = async (): Promise<string> =>
    backend === "Redis" ? JSON.stringify(Object.entries(await redisClient!.hgetall("psimbols:keys")).sort()) : readFileSync(keysFile, "utf8");
  /** `psimbols keys list --json`, by fingerprint. */
  const cliList = async (): Promise<Map<string, { role: string; comment: string; public_key?: { type: string } }>> => {
    const r = await runCli(["keys", "list", "--json", ...where()]);
    assert.is(r.code, 0, r.stderr);
    return new Map((JSON.parse(r.stdout) as { fingerprint: string; role: string; comment: string }[]).map((k) => [k.fingerprint, k]));
  };
  const keygen = async (name: string): Promise<{ key: SigningKey; pub: string; file: string }> => {
    const file = join(dir, `${name}.pem`);
    const g = await runCli(["keygen", "-o", file]);
    assert.is(g.code, 0, g.stderr);
    return { key: await loadKey(file), pub: readFileSync(join(dir, `${name}.pub.pem`), "utf8"), file };
  };
  const client = (key: SigningKey) => connect(broker.url, { key, serverKey: broker.fingerprint, reconnect: false, renew: false });

  t.before(async () => {
    app = await AppServer.start();
    // An application that answers anything: an admin.keys* request reaching it would be a leak.
    app.on("/rpc", (r, res) => json(res, { data: { done: r.json.op } }));
    const opKey = await keygen("operator");
    const mem = await keygen("member");
    operator = opKey.key;
    member = mem.key;
    const env: Record<string, string> = { PSIMBOLS_UPSTREAM_SECRET: WebhookSecret.generate(), PSIMBOLS_LOG_LEVEL: "info" };
    if (backend === "Redis") {
      redis = await startRedis();
      redisClient = new Redis(redis.url);
      env.PSIMBOLS_WRAP_KEY = randomBytes(32).toString("base64url");
    }
    for (const [file, role, comment] of [[opKey.file, "operator", "ops laptop"], [mem.file, "client", "member"]] as const) {
      const r = await runCli(["keys", "add", file, "--role", role, "--comment", comment, ...where()]);
      assert.is(r.code, 0, r.stderr);
    }
    const args = backend === "Redis" ? ["--redis", redis!.url] : ["--keys", keysFile];
    broker = await startBroker([...args, "--upstream", app.url("/rpc"), "--hellos-per-address", "1000"], { env });
    op = await client(operator);
  });
  t.after(async () => {
    await op?.close().catch(() => {});
    await broker?.stop();
    await app?.close();
    redisClient?.disconnect();
    await redis?.stop();
  });

  t("admin.keys lists every registered key (fingerprint, type, role, comment, when added) and says where keys and channels are kept", async () => {
    const r = (await op.request("admin.keys")) as any;
    assert.is(r.self, operator.public.fingerprint);
    assert.equal(r.registry, backend === "Redis" ? { kind: "redis" } : { kind: "file", path: keysFile });
    assert.is(r.store, backend === "Redis" ? "redis" : "memory");
    assert.is(r.total, 2);
    assert.is(r.next, null);
    const byFp = new Map((r.keys as any[]).map((k) => [k.fingerprint, k]));
    assert.equal({ ...byFp.get(operator.public.fingerprint), added: "" }, { fingerprint: operator.public.fingerprint, type: "Ed25519", role: "operator", comment: "ops laptop", added: "" });
    assert.equal({ ...byFp.get(member.public.fingerprint), added: "" }, { fingerprint: member.public.fingerprint, type: "Ed25519", role: "client", comment: "member", added: "" });
    assert.ok(!Number.isNaN(Date.parse(byFp.get(member.public.fingerprint).added)));
    assert.not.match(JSON.stringify(r), /"data"/); // never the key bytes
  });

  t("an operator adds a key from its PEM public key with a comment and a role; the CLI lists it and the key is served as that role", async () => {
    const k = await keygen("added");
    const r = (await op.request("admin.keys.add", { public_key: k.pub, comment: "build agent", role: "operator" })) as any;
    assert.is(r.key.fingerprint, k.key.public.fingerprint);
    assert.is(r.key.role, "operator");
    assert.equal(r.revoked, []);
    const listed = (await cliList()).get(k.key.public.fingerprint);
    assert.is(listed?.role, "operator");
    assert.is(listed?.comment, "build agent");
    assert.is(listed?.public_key?.type, "Ed25519");
    // the node reads its registry at once after its own write: the new key already has the role
    const c = await client(k.key);
    assert.is(((await c.request("admin.keys")) as any).self, k.key.public.fingerprint);
    await c.close();
  });

  t("block ends the key's channels (revoked, close 4005), its next handshake is forbidden; unblock gives back role and comment", async () => {
    const k = await keygen("victim");
    await op.request("admin.keys.add", { public_key: k.pub, comment: "victim laptop" });
    const c = await client(k.key);
    const notices: string[] = [];
    let closed = 0;
    c.on("notice", (n) => notices.push(n.kind));
    c.on("close", (e) => (closed = e.code));
    const r = (await op.request("admin.keys.block", { fingerprint: k.key.public.fingerprint })) as any;
    assert.is(r.key.role, "blocked");
    assert.is(r.key.comment, "victim laptop");
    assert.is(r.revoked.length, 1);
    await until("the blocked key's client to get revoked and close", () => notices.includes("revoked") && closed !== 0);
    assert.is(closed, 4005);
    const listed = (await cliList()).get(k.key.public.fingerprint);
    assert.is(listed?.role, "blocked");
    assert.is(listed?.comment, "victim laptop");
    assert.is(listed?.public_key?.type, "Ed25519"); // kept, so unblocking restores the registration
    assert.is((await refusal(client(k.key))).code, "forbidden");

    const u = (await op.request("admin.keys.unblock", { fingerprint: k.key.public.fingerprint })) as any;
    assert.is(u.key.role, "client");
    assert.is(u.key.comment, "victim laptop");
    // admin.keys says when the entry was first registered and when it last changed
    const row = ((await op.request("admin.keys")) as any).keys.find((x: any) => x.fingerprint === k.key.public.fingerprint);
    assert.ok(row.updated > row.added, JSON.stringify(row));
    assert.is(row.updated, u.key.updated);
    assert.is((await cliList()).get(k.key.public.fingerprint)?.role, "client");
    const again = await client(k.key);
    await again.close();
  });

  t("a key the service does not know is blocked by adding its fingerprint with the role blocked; unblocking that removes the entry", async () => {
    const stranger = await generateSigningKey();
    const fp = stranger.public.fingerprint;
    const c = await client(stranger);
    let closed = 0;
    c.on("close", (e) => (closed = e.code));
    const r = (await op.request("admin.keys.add", { fingerprint: fp, role: "blocked", comment: "stolen" })) as any;
    assert.equal({ ...r.key, added: "" }, { fingerprint: fp, type: null, role: "blocked", comment: "stolen", added: "" });
    assert.is(r.revoked.length, 1);
    await until("the stranger's client to close", () => closed !== 0);
    assert.is(closed, 4005);
    assert.is((await cliList()).get(fp)?.role, "blocked");
    assert.equal(await op.request("admin.keys.unblock", { fingerprint: fp }), { key: null, removed: true });
    assert.not.ok((await cliList()).has(fp));
  });

  t("remove unregisters a key; the CLI no longer lists it", async () => {
    const k = await keygen("leaving");
    await op.request("admin.keys.add", { public_key: k.pub });
    assert.equal(await op.request("admin.keys.remove", { fingerprint: k.key.public.fingerprint }), { removed: k.key.public.fingerprint });
    assert.not.ok((await cliList()).has(k.key.public.fingerprint));
  });

  t("bad input gets a clear error and changes nothing", async () => {
    const k = await keygen("bad");
    const privatePem = readFileSync(k.file, "utf8");
    assert.match(privatePem, "-----BEGIN PRIVATE KEY-----");
    const self = operator.public.fingerprint;
    const fpNotCanonical = member.public.fingerprint.slice(0, -1) + "B";
    const unknown = (await generateSigningKey()).public.fingerprint;
    const rows: [string, unknown, string, string | RegExp][] = [
      ["admin.keys.add", { public_key: "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n" }, "bad_request", `"public_key" is not a PEM key`],
      ["admin.keys.add", { public_key: "hello" }, "bad_request", `"public_key" is not a PEM key`],
      ["admin.keys.add", { public_key: privatePem }, "bad_request", "is a private key"],
      ["admin.keys.add", { public_key: k.pub, role: "root" }, "bad_request", `"role" expected one of "client", "operator", "blocked", not another name`],
      ["admin.keys.add", { public_key: k.pub, comment: "x".repeat(201) }, "bad_request", "at most 200 characters"],
      ["admin.keys.add", { public_key: k.pub, comment: 7 }, "bad_request", `"comment" expected`],
      ["admin.keys.add", { public_key: k.pub, comment: "laptop\nSHA256:forged operator" }, "bad_request", "one line without control characters"],
      ["admin.keys.add", { public_key: k.pub, comment: "\x1b[31mred" }, "bad_request", "one line without control characters (found \\u001b"],
      ["admin.keys.add", { public_key: k.pub, comment: "evil\u202Etxt.exe" }, "bad_request", "\\u202e"],
      ["admin.keys.add", { fingerprint: unknown, role: "blocked", comment: "\u2066x" }, "bad_request", "\\u2066"],
      ["admin.keys.add", { public_key: "x".repeat(9000) }, "bad_request", "at most 8192 characters"],
      ["admin.keys.add", { public_key: { type: "Ed25519", data: "AAAA" } }, "bad_request", "public_key"],
      ["admin.keys.add", { public_key: { type: "DSA", data: "AAAA" } }, "unsupported", "accepted"],
      ["admin.keys.add", { public_key: k.pub, fingerprint: k.key.public.fingerprint }, "bad_request", "not both"],
      ["admin.keys.add", { fingerprint: unknown }, "bad_request", "a fingerprint alone only blocks"],
      ["admin.keys.add", { fingerprint: fpNotCanonical, role: "blocked" }, "bad_request", `"fingerprint" expected a fingerprint`],
      ["admin.keys.add", { comment: "no key" }, "bad_request", `"public_key" expected`],
      ["admin.keys.add", "SHA256:x", "bad_request", `"body" expected a JSON object`],
      ["admin.keys.add", { fingerprint: self, role: "blocked" }, "bad_request", "the key this session is connected with"],
      ["admin.keys.block", { fingerprint: unknown }, "not_found", "add it with the role blocked"],
      ["admin.keys.block", { fingerprint: self }, "bad_request", "the key this session is connected with"],
      ["admin.keys.block", { fingerprint: "SHA256:short" }, "bad_request", `"fingerprint" expected`],
      ["admin.keys.block", {}, "bad_request", `"fingerprint" expected`],
      ["admin.keys.block", null, "bad_request", `"data" expected object {fingerprint}`],
      ["admin.keys.unblock", { fingerprint: member.public.fingerprint }, "bad_request", "not blocked (its role is client)"],
      ["admin.keys.unblock", { fingerprint: member.public.fingerprint, role: "blocked" }, "bad_request", `"role" expected client or operator`],
      ["admin.keys.unblock", { fingerprint: unknown }, "not_found", "not registered"],
      ["admin.keys.remove", { fingerprint: self }, "bad_request", "the key this session is connected with"],
      ["admin.keys.remove", { fingerprint: unknown }, "not_found", "not registered"],
      ["admin.keys", { offset: -1 }, "bad_request", `"offset" expected`],
    ];
    // the operator key's own registration with a new comment is fine, but not a demotion
    const selfPem = readFileSync(join(dir, "operator.pub.pem"), "utf8");
    rows.push(["admin.keys.add", { public_key: selfPem, role: "client" }, "bad_request", "the key this session is connected with"]);
    const before = await snapshot();
    for (const [opName, data, code, message] of rows) {
      const e = await refusal(op.request(opName, data));
      assert.is(e.code, code, `${opName} ${JSON.stringify(data).slice(0, 80)}: ${e.message}`);
      if (typeof message === "string") assert.ok(e.message.includes(message), `${opName}: "${e.message}" lacks "${message}"`);
      assert.not.ok(e.message.includes("PRIVATE KEY") || e.message.includes(privatePem.split("\n")[1]!), "the error echoes the private key");
      assert.is(await snapshot(), before, `${opName} ${JSON.stringify(data).slice(0, 80)} changed the registry`);
    }
    // the session goes on
    assert.is(((await op.request("admin.keys")) as any).self, self);
  });

  t("keys without the operator role get forbidden for every admin.keys op; nothing changes and nothing reaches the upstream", async () => {
    const k = await keygen("intruder");
    const before = await snapshot();
    const sent = app.requests.length;
    for (const key of [member, await generateSigningKey()]) {
      const c = await client(key);
      for (const [opName, data] of [
        ["admin.keys", undefined],
        ["admin.keys.add", { public_key: k.pub, role: "operator" }],
        ["admin.keys.block", { fingerprint: operator.public.fingerprint }],
        ["admin.keys.unblock", { fingerprint: member.public.fingerprint }],
        ["admin.keys.remove", { fingerprint: operator.public.fingerprint }],
        ["admin.keys.nope", {}],
      ] as const) {
        assert.is((await refusal(c.request(opName, data))).code, "forbidden", opName);
      }
      // the same channel still reaches the application with other ops
      assert.equal(await c.request("app.hello"), { done: "app.hello" });
      await c.close();
    }
    assert.is(await snapshot(), before);
    assert.equal(app.requests.slice(sent).map((r) => r.json.op), ["app.hello", "app.hello"]);
  });

  t("every change of the registry writes one info line: operator, op, key, role, channels revoked; never key bytes or the comment", async () => {
    const k = await keygen("logged");
    const c = await client(k.key);
    c.on("close", () => {});
    await op.request("admin.keys.add", { public_key: k.pub, comment: "private note" });
    const blocked = (await op.request("admin.keys.block", { fingerprint: k.key.public.fingerprint })) as any;
    await op.request("admin.keys.unblock", { fingerprint: k.key.public.fingerprint, role: "operator" });
    await op.request("admin.keys.remove", { fingerprint: k.key.public.fingerprint });
    const fp = k.key.public.fingerprint;
    await until("four log lines", () => broker.output().split("\n").filter((l) => l.includes("registered keys changed") && l.includes(fp)).length === 4);
    const lines = broker.output().split("\n").filter((l) => l.includes("registered keys changed") && l.includes(fp));
    const parsed = lines.map((l) => JSON.parse(l.slice(l.indexOf("{"))));
    assert.equal(
      parsed.map((x) => [x.level, x.operator, x.op, x.fingerprint, x.role, x.revoked]),
      [
        ["info", operator.public.fingerprint, "admin.keys.add", fp, "client", 0],
        ["info", operator.public.fingerprint, "admin.keys.block", fp, "blocked", 1],
        ["info", operator.public.fingerprint, "admin.keys.unblock", fp, "operator", 0],
        ["info", operator.public.fingerprint, "admin.keys.remove", fp, null, 0],
      ],
    );
    assert.equal(parsed[1].channels, blocked.revoked);
    const pubBase64 = k.pub.split("\n")[1]!;
    for (const l of lines) {
      assert.not.match(l, "private note");
      assert.not.match(l, pubBase64);
    }
  });

  t("a comment written before comments were checked is shown escaped: it cannot forge rows or reorder text", async () => {
    const fp = (await generateSigningKey()).public.fingerprint;
    const entry = { fingerprint: fp, role: "blocked", comment: "a\nb\x1b[31m\u202e" + "z".repeat(300), added: new Date().toISOString() };
    if (backend === "Redis") await redisClient!.hset("psimbols:keys", fp, JSON.stringify(entry));
    else {
      const f = JSON.parse(readFileSync(keysFile, "utf8"));
      f.keys.push(entry);
      writeFileSync(keysFile, JSON.stringify(f));
    }
    await until("the node to read the entry", async () => ((await op.request("admin.keys")) as any).keys.some((k: any) => k.fingerprint === fp));
    const row = ((await op.request("admin.keys")) as any).keys.find((k: any) => k.fingerprint === fp);
    assert.is(row.comment, "a\\u000ab\\u001b[31m\\u202e" + "z".repeat(200 - 24) + "…");
    await op.request("admin.keys.remove", { fingerprint: fp });
  });

  t("admin.channels shows a live channel's key comment written before comments were checked escaped, as admin.keys does", async () => {
    const { key: k, pub } = await keygen("old-comment");
    await op.request("admin.keys.add", { public_key: pub, comment: "ops" });
    // Then the comment as an older node could have written it, straight into the store.
    const forged = "ops\nSHA256:forged  operator\x1b[8m";
    if (backend === "Redis") {
      const entry = JSON.parse((await redisClient!.hget("psimbols:keys", k.public.fingerprint))!);
      await redisClient!.hset("psimbols:keys", k.public.fingerprint, JSON.stringify({ ...entry, comment: forged }));
    } else {
      const f = JSON.parse(readFileSync(keysFile, "utf8"));
      f.keys.find((e: any) => e.fingerprint === k.public.fingerprint).comment = forged;
      writeFileSync(keysFile, JSON.stringify(f));
    }
    const c = await client(k);
    try {
      const comment = async () => (((await op.request("admin.channels")) as any).channels as { identity: string; comment?: string }[]).find((r) => r.identity === k.public.fingerprint)?.comment;
      await until("the node to read the changed entry", async () => (await comment()) !== "ops");
      assert.is(await comment(), "ops\\u000aSHA256:forged  operator\\u001b[8m");
    } finally {
      await c.close();
      await op.request("admin.keys.remove", { fingerprint: k.public.fingerprint });
    }
  });

  if (backend === "keys file") {
    t("a write while the keys file does not parse is refused with unavailable naming the file, which stays as it was", async () => {
      const good = readFileSync(keysFile, "utf8");
      const k = await keygen("while-broken");
      writeFileSync(keysFile, good.slice(0, 40));
      try {
        for (const [opName, data] of [
          ["admin.keys.add", { public_key: k.pub }],
          ["admin.keys.block", { fingerprint: member.public.fingerprint }],
          ["admin.keys.remove", { fingerprint: member.public.fingerprint }],
        ] as const) {
          const e = await refusal(op.request(opName, data));
          assert.is(e.code, "unavailable", `${opName}: ${e.message}`);
          assert.is(e.message, `the keys file ${keysFile} does not parse (not valid JSON); fix it and try again`);
          assert.is(readFileSync(keysFile, "utf8"), good.slice(0, 40));
        }
      } finally {
        writeFileSync(keysFile, good);
      }
    });
  }

  t("every admin.* op the broker implements is listed in ADMIN_OPS, and an unknown one answers UNKNOWN_ADMIN_OP", async () => {
    for (const name of ADMIN_OPS) {
      const r = await op.request(name, { offset: 0 }).then(
        () => "ok",
        (e: PsimbolsError) => e.message,
      );
      assert.is.not(r, UNKNOWN_ADMIN_OP, name);
    }
    assert.is((await refusal(op.request("admin.keys.nope", {}))).message, UNKNOWN_ADMIN_OP);
  });

  t("admin.keys pages a long registry within one response", async () => {
    // 150 keys blocked by fingerprint through the CLI, each with a 200-character comment: more than one page
    const many = await Promise.all(Array.from({ length: 150 }, async () => (await generateSigningKey()).public.fingerprint));
    for (const fp of many) {
      if (backend === "Redis") {
        await redisClient!.hset("psimbols:keys", fp, JSON.stringify({ fingerprint: fp, role: "blocked", comment: "é".repeat(200), added: new Date().toISOString() }));
      }
    }
    if (backend === "keys file") {
      const f = JSON.parse(readFileSync(keysFile, "utf8"));
      f.keys.push(...many.map((fp) => ({ fingerprint: fp, role: "blocked", comment: "é".repeat(200), added: new Date().toISOString() })));
      writeFileSync(keysFile, JSON.stringify(f));
    }
    const seen: string[] = [];
    let offset: number | null = 0;
    let pages = 0;
    while (offset !== null) {
      const r = (await op.request("admin.keys", { offset })) as any;
      seen.push(...r.keys.map((k: any) => k.fingerprint));
      offset = r.next;
      pages++;
    }
    assert.ok(pages > 1, `pages ${pages}`);
    assert.is(new Set(seen).size, seen.length);
    for (const fp of many) assert.ok(seen.includes(fp));
  });

  t.run();
}

const e = suite("admin.keys ops (a registry of the embedding program)");

e("a broker given a lookup-only registry says so, lists nothing, and refuses every write with unsupported", async () => {
  const serverKey = await generateSigningKey();
  const operator = await generateSigningKey();
  const entry: RegisteredKey = { fingerprint: operator.public.fingerprint, role: "operator", comment: "the program's", added: new Date().toISOString() };
  let lookups = 0;
  const broker = await Broker.start({
    config: { port: 0, dataDir: "/nonexistent" },
    serverKey,
    registry: { lookup: async (fp) => (lookups++, fp === entry.fingerprint ? entry : undefined) },
    logger: createLogger({ level: "error", json: true }),
  });
  const c = await connect(`ws://127.0.0.1:${broker.port}/`, { key: operator, serverKey: serverKey.public.fingerprint, reconnect: false, renew: false });
  try {
    const r = (await c.request("admin.keys")) as any;
    assert.equal(r.registry, { kind: "program" });
    assert.is(r.store, "memory");
    assert.equal([r.total, r.keys, r.next], [0, [], null]);
    const other = (await generateSigningKey()).public.fingerprint;
    for (const [op, data] of [
      ["admin.keys.add", { fingerprint: other, role: "blocked" }],
      ["admin.keys.block", { fingerprint: other }],
      ["admin.keys.unblock", { fingerprint: other }],
      ["admin.keys.remove", { fingerprint: other }],
    ] as const) {
      const x = await refusal(c.request(op, data));
      assert.is(x.code, "unsupported", op);
      assert.match(x.message, "no keys file or Redis registry");
    }
    assert.is(entry.role, "operator");
    assert.ok(lookups > 0);
  } finally {
    await c.close();
    await broker.close();
  }
});

e.run();
