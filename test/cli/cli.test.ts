/**
 * The CLI as a newcomer meets it (docs/CLI.md): each failure is
 * an `error:` line with a `hint:` that points at the right place, exit code
 * 1, and nothing changed on disk. Every test spawns the real CLI
 * (bin/psimbols.js) against real brokers and a real redis-server.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { freePort } from "../../cli/cluster/net.js";
import { type RunningBroker, ROOT, operatorKeys, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { type TestRedis, startRedis } from "../helpers/redis.js";
import { AppServer, json } from "../helpers/app-server.js";
import { startBusyRelay } from "../helpers/busy-relay.js";
import { generateSigningKey } from "../../shared/crypto.js";
import { ADMIN_OPS } from "../../server/operator.js";

const t = suite("cli");
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

/** Runs the CLI with its own PSIMBOLS_HOME (known_servers, default keys file), no wrap key from the environment. */
async function cli(args: string[], home: string, env: Record<string, string> = {}) {
  return runCli(args, { PSIMBOLS_HOME: home, PSIMBOLS_WRAP_KEY: "", PSIMBOLS_LOG_LEVEL: "warn", ...env });
}

let redis: TestRedis;
let broker: RunningBroker;
let dir: string;
let key: string;

t.before(async () => {
  redis = await startRedis();
  broker = await startBroker();
  dir = tempDir();
  key = join(dir, "me.pem");
  const r = await cli(["keygen", "-o", key], join(dir, "home"));
  assert.is(r.code, 0, r.stderr);
});
t.after(async () => {
  await broker.stop();
  await redis.stop();
});

t("freePort (the cluster launcher's and the tests' ports): below the kernel's ephemeral range, distinct, bindable", async () => {
  // A port of that range, picked and bound seconds later by HAProxy, was once taken meanwhile by an outgoing connection.
  const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0]);
  const ports = await Promise.all(Array.from({ length: 40 }, () => freePort()));
  assert.is(new Set(ports).size, ports.length, `a port handed out twice: ${ports.join(",")}`);
  for (const p of ports) {
    assert.ok(p >= 10_000 && p < low && p !== 6379, `port ${p} (ephemeral range from ${low})`);
    const s = createServer();
    await new Promise<void>((ok, no) => s.once("error", no).listen(p, "127.0.0.1", () => ok()));
    await new Promise<void>((r) => s.close(() => r()));
  }
});

t("--version prints the package version", async () => {
  const r = await cli(["--version"], dir);
  assert.is(r.code, 0);
  assert.is(r.stdout.trim(), version);
});

t("an unknown option is reported as unknown, before any missing required option", async () => {
  const r = await cli(["call", broker.url, "echo", "--kye", key], join(dir, "home"));
  assert.is(r.code, 1);
  assert.match(r.stderr, "unknown option '--kye'");
  assert.match(r.stderr, "Did you mean --key?");
  assert.not.match(r.stderr, "required option");
});

t("a missing required option is still named when nothing else is wrong", async () => {
  const r = await cli(["call", broker.url, "echo"], join(dir, "home"));
  assert.is(r.code, 1);
  assert.match(r.stderr, "error: required option '--key <file>' not specified");
});

t("keygen writes the private key (0600) and the public PEM beside it (0644), and says where", async () => {
  const home = tempDir();
  const out = join(home, "alice.pem");
  const r = await cli(["keygen", "-o", out], home);
  assert.is(r.code, 0, r.stderr);
  const printed = JSON.parse(r.stdout) as { fingerprint: string; public_file: string };
  assert.is(printed.public_file, join(home, "alice.pub.pem"));
  assert.is(statSync(out).mode & 0o777, 0o600);
  assert.is(statSync(printed.public_file).mode & 0o777, 0o644);
  assert.match(readFileSync(printed.public_file, "utf8"), /^-----BEGIN PUBLIC KEY-----\n/);
  assert.match(r.stderr, `public key:  ${printed.public_file}`);
  const fp = await cli(["fingerprint", printed.public_file], home);
  assert.is(fp.stdout.trim(), printed.fingerprint);
  // --no-public: only the private key
  const lone = join(home, "lone.pem");
  assert.is((await cli(["keygen", "-o", lone, "--no-public"], home)).code, 0);
  assert.not.ok(existsSync(join(home, "lone.pub.pem")));
});

t("keygen over an existing key refuses, names --force, and leaves both files alone", async () => {
  const home = tempDir();
  const out = join(home, "k.pem");
  assert.is((await cli(["keygen", "-o", out], home)).code, 0);
  const before = [readFileSync(out, "utf8"), readFileSync(join(home, "k.pub.pem"), "utf8")];
  const r = await cli(["keygen", "-o", out], home);
  assert.is(r.code, 1);
  assert.match(r.stderr, `error: ${out} exists; refusing to overwrite a key`);
  assert.match(r.stderr, "hint: pass --force to overwrite it");
  assert.equal([readFileSync(out, "utf8"), readFileSync(join(home, "k.pub.pem"), "utf8")], before);
  const forced = await cli(["keygen", "-o", out, "--force"], home);
  assert.is(forced.code, 0, forced.stderr);
  assert.is.not(readFileSync(out, "utf8"), before[0]);
});

t("a key file of an unsupported type (X25519) gets a local hint, not one about the server", async () => {
  const x = join(dir, "x25519.pem");
  writeFileSync(x, generateKeyPairSync("x25519").privateKey.export({ type: "pkcs8", format: "pem" }));
  const r = await cli(["call", broker.url, "echo", "--key", x], join(dir, "home"));
  assert.is(r.code, 1);
  assert.match(r.stderr, "error: " + x + " is a key of type x25519");
  assert.match(r.stderr, "hint: --key takes a PKCS#8 PEM private key of type Ed25519, ECDSA P-256 or RSA");
  assert.not.match(r.stderr, /server/i);
  const served = await cli(["serve", "--port", "0", "--data-dir", tempDir(), "--server-key-file", x], join(dir, "home"));
  assert.is(served.code, 1);
  assert.match(served.stderr, "hint: --server-key-file takes a PKCS#8 PEM private key");
  assert.not.match(served.stderr, "the server does not accept");
});

t("keys add --file DIR/keys.json creates a missing DIR, private to its owner", async () => {
  const home = tempDir();
  const file = join(home, "new", "deeper", "keys.json");
  const r = await cli(["keys", "add", key.replace(/\.pem$/, ".pub.pem"), "--file", file], home);
  assert.is(r.code, 0, r.stderr);
  assert.is(statSync(join(home, "new")).mode & 0o777, 0o700);
  assert.is(statSync(join(home, "new", "deeper")).mode & 0o777, 0o700);
  const list = await cli(["keys", "list", "--file", file, "--json"], home);
  assert.is((JSON.parse(list.stdout) as unknown[]).length, 1);
});

t("keys add refuses a comment over 200 characters or not one line of printable text, and changes nothing", async () => {
  const home = tempDir();
  const file = join(home, "keys.json");
  const pub = key.replace(/\.pem$/, ".pub.pem");
  assert.is((await cli(["keys", "add", pub, "--file", file, "--comment", "x".repeat(200)], home)).code, 0);
  const before = readFileSync(file, "utf8");
  for (const [comment, why] of [
    ["x".repeat(201), "at most 200 characters, got 201"],
    ["y".repeat(5000), "at most 200 characters, got 5000"],
    ["laptop\nSHA256:forged  Ed25519  operator  admin", "one line without control characters"],
    ["\x1b[2Kred", "one line without control characters (found \\u001b"],
    ["abc\u202edcba", "\\u202e"],
    ["x\u2028y", "\\u2028"],
    ["tab\there", "\\u0009"],
  ] as const) {
    const r = await cli(["keys", "add", pub, "--file", file, "--comment", comment], home);
    assert.is(r.code, 1, `${JSON.stringify(comment).slice(0, 40)} accepted: ${r.stdout}`);
    assert.match(r.stderr, why);
    assert.is(readFileSync(file, "utf8"), before, "the file changed");
  }
});

t("keys list escapes control characters in comments written before they were checked, so an old file cannot forge rows", async () => {
  const home = tempDir();
  const file = join(home, "keys.json");
  const fp = (await generateSigningKey()).public.fingerprint;
  const forged = "ok\nSHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA  Ed25519  operator  \x1b[31mroot\u202e";
  writeFileSync(file, JSON.stringify({ version: 1, keys: [{ fingerprint: fp, role: "blocked", comment: forged, added: new Date().toISOString() }] }));
  const r = await cli(["keys", "list", "--file", file], home);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trimEnd().split("\n").length, 1, r.stdout);
  assert.match(r.stdout, "ok\\u000aSHA256:AAAA");
  assert.match(r.stdout, "\\u001b[31mroot\\u202e");
  assert.not.match(r.stdout, /[\x1b\u202e]/);
});

t("keys add FINGERPRINT --role blocked of a registered key keeps its public key and comment (a comment given replaces it); adding its PEM again restores it", async () => {
  const home = tempDir();
  const file = join(home, "keys.json");
  const pub = key.replace(/\.pem$/, ".pub.pem");
  assert.is((await cli(["keys", "add", pub, "--file", file, "--comment", "build agent"], home)).code, 0);
  const [entry] = JSON.parse(readFileSync(file, "utf8")).keys;
  const block = await cli(["keys", "add", entry.fingerprint, "--role", "blocked", "--file", file], home);
  assert.is(block.code, 0, block.stderr);
  const [blocked] = JSON.parse(readFileSync(file, "utf8")).keys;
  assert.equal([blocked.role, blocked.public_key, blocked.comment, blocked.added], ["blocked", entry.public_key, "build agent", entry.added]);
  const renamed = await cli(["keys", "add", entry.fingerprint, "--role", "blocked", "--comment", "stolen", "--file", file], home);
  assert.is(renamed.code, 0, renamed.stderr);
  const [again] = JSON.parse(readFileSync(file, "utf8")).keys;
  assert.equal([again.role, again.public_key, again.comment], ["blocked", entry.public_key, "stolen"]);
  const list = await cli(["keys", "list", "--file", file], home);
  assert.match(list.stdout, `${entry.fingerprint}  Ed25519  blocked  stolen`);
});

t("serve on a port in use says so and suggests --port, without a stack trace", async () => {
  const blocker = createServer();
  const port = await new Promise<number>((r) => blocker.listen(0, "127.0.0.1", () => r((blocker.address() as { port: number }).port)));
  try {
    const home = tempDir();
    const r = await cli(["serve", "--port", String(port), "--data-dir", home], home);
    assert.is(r.code, 1);
    assert.match(r.stderr, `error: port ${port} on 127.0.0.1 is already in use`);
    assert.match(r.stderr, "--port");
    assert.not.match(r.stderr, /\n\s+at /);
  } finally {
    blocker.close();
  }
});

t("serve --closed --keys FILE fails fast when FILE does not exist", async () => {
  const home = tempDir();
  const missing = join(home, "missing.json");
  const r = await cli(["serve", "--port", "0", "--data-dir", home, "--closed", "--keys", missing], home);
  assert.is(r.code, 1);
  assert.match(r.stderr, `error: the keys file ${missing} (--keys) does not exist`);
  assert.match(r.stderr, "psimbols keys add");
  assert.not.ok(existsSync(missing));
});

t("an open service with a --keys FILE not there yet starts, and watches it", async () => {
  const missing = join(tempDir(), "later.json");
  const b = await startBroker(["--keys", missing], { env: { PSIMBOLS_LOG_LEVEL: "info" } });
  try {
    assert.match(b.output(), "keys file does not exist yet");
    assert.not.ok(existsSync(missing));
  } finally {
    await b.stop();
  }
});

t("a closed service with no registered keys starts, with a warning", async () => {
  const b = await startBroker(["--closed"]);
  try {
    assert.match(b.output(), "closed service with no registered keys");
  } finally {
    await b.stop();
  }
});

t("a keys file that stops parsing while the broker runs logs a warning and keeps the last good keys", async () => {
  const home = tempDir();
  const keys = join(home, "keys.json");
  assert.is((await cli(["keys", "add", key, "--file", keys], home)).code, 0);
  const b = await startBroker(["--closed", "--keys", keys]);
  try {
    writeFileSync(keys, '{"version":1,"keys":[');
    await new Promise((r) => setTimeout(r, 1100)); // the file is checked at most once a second
    const r = await cli(["call", b.url, "echo", '{"still":"in"}', "--key", key, "--server-key", b.fingerprint], home);
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout.trim(), '{"still":"in"}');
    assert.match(b.output(), "keys file does not parse; keeping the last good set of keys");
  } finally {
    await b.stop();
  }
});

t("learning a server key on first use prints its fingerprint and the known-servers file, once", async () => {
  const home = tempDir();
  const first = await cli(["call", broker.url, "echo", "1", "--key", key], home);
  assert.is(first.code, 0, first.stderr);
  assert.is(first.stdout.trim(), "1");
  const file = join(home, "known_servers");
  assert.match(first.stderr, `learnt the key of ${broker.url}: ${broker.fingerprint}`);
  assert.match(first.stderr, `recorded in ${file}`);
  assert.is(readFileSync(file, "utf8"), `${broker.url} ${broker.fingerprint}\n`);
  const again = await cli(["call", broker.url, "echo", "2", "--key", key], home);
  assert.is(again.code, 0, again.stderr);
  assert.is(again.stderr, "");
});

t("call: an application's own forbidden is printed as it is, without the key-registration hint of a refused handshake; its unavailable does not blame the store", async () => {
  const app = await AppServer.start();
  app.on("/rpc", (_r, res) => json(res, { error: { code: "forbidden", message: "not your order" } }));
  const b = await startBroker(["--upstream", app.url("/rpc")], { env: { PSIMBOLS_UPSTREAM_SECRET: `whsec_${randomBytes(32).toString("base64")}` } });
  try {
    const r = await cli(["call", b.url, "orders.cancel", "--key", key, "--server-key", b.fingerprint], join(dir, "home"));
    assert.is(r.code, 1);
    assert.match(r.stderr, /^error: not your order \(forbidden\)$/m);
    assert.not.match(r.stderr, /keys add|registered|blocked/, r.stderr);
    assert.match(r.stderr, /^hint: .*"orders\.cancel".*not a refusal of your key/m);
    // An application that does not answer is not the store being down.
    app.on("/rpc", (_r, res) => void res.writeHead(503).end());
    const down = await cli(["call", b.url, "orders.cancel", "--key", key, "--server-key", b.fingerprint], join(dir, "home"));
    assert.is(down.code, 1);
    assert.match(down.stderr, /\(unavailable\)\nhint: the service, or the application that answers "orders\.cancel", could not answer/);
    assert.not.match(down.stderr, /store|Redis/, down.stderr);
  } finally {
    await b.stop();
    await app.close();
  }
});

t("call: the broker's own refusal of an admin.* op (in any case) says it is operator-only, never the application's handler; an operator's unknown admin. name lists the broker's", async () => {
  const app = await AppServer.start();
  app.on("/rpc", (_r, res) => json(res, { data: "reached the application" }));
  const op = await operatorKeys();
  const b = await startBroker(["--keys", op.keysFile, "--upstream", app.url("/rpc")], { env: { PSIMBOLS_UPSTREAM_SECRET: `whsec_${randomBytes(32).toString("base64")}` } });
  try {
    for (const name of ["admin.something", "Admin.channels"]) {
      const r = await cli(["call", b.url, name, "--key", key, "--server-key", b.fingerprint], join(dir, "home"));
      assert.is(r.code, 1, r.stdout);
      assert.match(r.stderr, /\(forbidden\)\nhint: the broker itself refused .*operator role.*--role operator/, r.stderr);
      assert.not.match(r.stderr, /handler|application/, r.stderr);
    }
    const unknown = await cli(["call", b.url, "admin.something", "--key", op.keyFile, "--server-key", b.fingerprint], join(dir, "home"));
    assert.is(unknown.code, 1, unknown.stdout);
    assert.match(unknown.stderr, `(not_found)\nhint: the broker implements ${ADMIN_OPS.join(", ")} (exact names)`, unknown.stderr);
    for (const name of ["admin.keys", "admin.keys.add", "admin.keys.block", "admin.keys.unblock", "admin.keys.remove"]) assert.match(unknown.stderr, name);
    // not_found from an op the broker implements is that op's answer (no such key), not an unknown op: no hint
    const fp = (await generateSigningKey()).public.fingerprint;
    const gone = await cli(["call", b.url, "admin.keys.remove", JSON.stringify({ fingerprint: fp }), "--key", op.keyFile, "--server-key", b.fingerprint], join(dir, "home"));
    assert.is(gone.code, 1, gone.stdout);
    assert.match(gone.stderr, "this key is not registered (not_found)", gone.stderr);
    assert.not.match(gone.stderr, "hint:", gone.stderr);
    assert.is(app.requests.length, 0);
  } finally {
    await b.stop();
    await app.close();
  }
});

t("a --server-key mismatch names the option; a known_servers mismatch names the file", async () => {
  const home = tempDir();
  const other = (JSON.parse((await cli(["keygen", "-o", join(home, "o.pem")], home)).stdout) as { fingerprint: string }).fingerprint;
  const pinned = await cli(["call", broker.url, "echo", "--key", key, "--server-key", other], home);
  assert.is(pinned.code, 1);
  assert.match(pinned.stderr, "(server_key_mismatch)");
  assert.match(pinned.stderr, "hint: the server's key is not the one --server-key pins");
  assert.not.match(pinned.stderr, "hint: the server's key is not the one recorded");
  const file = join(home, "known_servers");
  writeFileSync(file, `${broker.url} ${other}\n`);
  const known = await cli(["call", broker.url, "echo", "--key", key], home);
  assert.is(known.code, 1);
  assert.match(known.stderr, `hint: the server's key is not the one recorded in ${file}`);
  assert.match(known.stderr, `psimbols known-servers forget ${broker.url}`);
  assert.is(readFileSync(file, "utf8"), `${broker.url} ${other}\n`);
});

t("known-servers list prints what was learnt; forget removes one server's line, and the next call learns its key again", async () => {
  const home = tempDir();
  const file = join(home, "known_servers");
  const other = "SHA256:" + "B".repeat(43);
  writeFileSync(file, `# kept comment\nws://elsewhere/ ${other}\n${broker.url} ${other} next=${other}\n`);
  const list = await cli(["known-servers", "list"], home);
  assert.is(list.code, 0, list.stderr);
  assert.is(list.stdout, `ws://elsewhere/ ${other}\n${broker.url} ${other} next=${other}\n`);
  const mismatch = await cli(["call", broker.url, "echo", "--key", key], home);
  assert.match(mismatch.stderr, "(server_key_mismatch)");
  const forget = await cli(["known-servers", "forget", broker.url], home);
  assert.is(forget.code, 0, forget.stderr);
  assert.match(forget.stderr, `forgot ${broker.url} (${other})`);
  assert.is(readFileSync(file, "utf8"), `# kept comment\nws://elsewhere/ ${other}\n`);
  const again = await cli(["call", broker.url, "echo", "3", "--key", key], home);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stderr, `learnt the key of ${broker.url}: ${broker.fingerprint}`);
  const unknown = await cli(["known-servers", "forget", "ws://never/"], home);
  assert.is(unknown.code, 1);
  assert.match(unknown.stderr, `error: ws://never/ is not in ${file}`);
  assert.match(unknown.stderr, "hint: `psimbols known-servers list`");
  assert.is(readFileSync(file, "utf8"), `# kept comment\nws://elsewhere/ ${other}\n${broker.url} ${broker.fingerprint}\n`);
});

t("a CLI that cannot reach Redis names the URL, with the password redacted", async () => {
  const home = tempDir();
  const url = `redis://:hunter2@127.0.0.1:${await freePort()}/`;
  const wrap = join(home, "wrap-key");
  writeFileSync(wrap, randomBytes(32).toString("base64url"));
  for (const args of [["keys", "list", "--redis", url], ["channels", "list", "--redis", url, "--wrap-key-file", wrap]]) {
    const r = await cli(args, home);
    assert.is(r.code, 1, args.join(" "));
    assert.match(r.stderr, `error: cannot reach Redis at redis://:***@127.0.0.1:`);
    assert.not.match(r.stdout + r.stderr, "hunter2");
    assert.not.match(r.stderr, "Unhandled error event");
  }
});

t("--redis without a wrap key names both ways to give it; --wrap-key-file works; keys --redis needs none", async () => {
  const home = tempDir();
  const none = await cli(["channels", "list", "--redis", redis.url], home);
  assert.is(none.code, 1);
  assert.match(none.stderr, "PSIMBOLS_WRAP_KEY");
  assert.match(none.stderr, "--wrap-key-file");
  const wrap = join(home, "wrap-key");
  writeFileSync(wrap, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600 });
  const listed = await cli(["channels", "list", "--redis", redis.url, "--wrap-key-file", wrap], home);
  assert.is(listed.code, 0, listed.stderr);
  assert.match(listed.stderr, "no live channels");
  const bad = join(home, "bad-wrap-key");
  writeFileSync(bad, "short");
  const refused = await cli(["channels", "list", "--redis", redis.url, "--wrap-key-file", bad], home);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, "--wrap-key-file");
  assert.not.match(refused.stderr, "short");
  const keys = await cli(["keys", "add", key, "--redis", redis.url], home);
  assert.is(keys.code, 0, keys.stderr);
  assert.match(keys.stdout, "to redis");
});

t("an upgrade refused with HTTP 429 (connections per address) is too_many with the reason, not 'is the broker running?'", async () => {
  const b = await startBroker(["--max-connections-per-address", "1"]);
  const { Raw } = await import("../helpers/raw.js");
  const held = await Raw.open(b.url);
  try {
    const home = tempDir();
    assert.is((await cli(["keygen", "-o", join(home, "k.pem")], home)).code, 0);
    const r = await cli(["call", b.url, "whoami", "--key", join(home, "k.pem"), "--server-key", b.fingerprint], home);
    assert.is(r.code, 1, r.stdout);
    assert.match(r.stderr, "HTTP 429");
    assert.match(r.stderr, "(too_many)");
    assert.not.match(r.stderr, "is the broker running");
  } finally {
    held.close();
    await b.stop();
  }
});

t("call waits a busy node's retry_after_ms and tries again; a hint longer than --timeout is the error", async () => {
  const relay = await startBusyRelay(broker.url, (n) => (n === 1 ? { ms: 700 } : n === 3 ? { ms: 5000 } : undefined));
  try {
    const r = await cli(["call", relay.url, "echo", '{"n":1}', "--key", key, "--server-key", broker.fingerprint], join(dir, "home"));
    assert.is(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout), { n: 1 });
    assert.match(r.stderr, "this node is busy; try again in 700 ms; trying again in 700 ms");
    assert.ok(relay.opened[1]! - relay.refusedAt >= 700, `tried again ${relay.opened[1]! - relay.refusedAt} ms after the refusal`);
    // The third connection is refused with 5 s to wait: past --timeout 2000, so no second try.
    const late = await cli(["call", relay.url, "echo", "--key", key, "--server-key", broker.fingerprint, "--timeout", "2000"], join(dir, "home"));
    assert.is(late.code, 1);
    assert.match(late.stderr, "(too_many)");
    assert.is(relay.opened.length, 3, "no try after a refusal whose wait is past the timeout");
  } finally {
    relay.close();
  }
});

t("serve prints each upstream route (batched or not) and the console's address with the port it got (--port 0)", async () => {
  const secret = `whsec_${randomBytes(32).toString("base64")}`;
  const b = await startBroker(["--upstream", "http://127.0.0.1:1/rpc", "--upstream", "kv.=http://127.0.0.1:1/kv", "--upstream-batch", "kv."], { env: { PSIMBOLS_UPSTREAM_SECRET: secret } });
  try {
    // startBroker returns at the listening line; the lines after it follow in the same turn.
    for (const deadline = Date.now() + 5000; !b.output().includes("web console:"); await new Promise((r) => setTimeout(r, 20))) assert.ok(Date.now() < deadline, b.output());
    assert.match(b.output(), "upstream (default route) -> http://127.0.0.1:1/rpc\n");
    assert.match(b.output(), "upstream kv. -> http://127.0.0.1:1/kv (batches: --upstream-batch)\n");
    assert.match(b.output(), `web console: http://127.0.0.1:${b.port}/console/`);
    assert.not.match(b.output(), secret);
  } finally {
    await b.stop();
  }
});

t("serve --redis without --keys says the data dir's keys file is not read, when it holds keys", async () => {
  const dataDir = tempDir();
  const wrap = join(dataDir, "wrap-key");
  writeFileSync(wrap, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600 });
  const quiet = await startBroker(["--redis", redis.url, "--wrap-key-file", wrap], { dataDir });
  await quiet.stop();
  assert.not.match(quiet.output(), "keys file not read", "no file, no warning");
  assert.is((await cli(["keys", "add", key, "--role", "operator", "--file", join(dataDir, "keys.json")], dataDir)).code, 0);
  const b = await startBroker(["--redis", redis.url, "--wrap-key-file", wrap], { dataDir });
  try {
    assert.match(b.output(), `keys file not read: with --redis and no --keys, registered keys are read from Redis, and ${join(dataDir, "keys.json")} holds keys`);
    assert.match(b.output(), "psimbols keys add KEY --redis URL");
  } finally {
    await b.stop();
  }
});

t("api-token create --file in a folder that does not exist creates the folder, mode 0700", async () => {
  const file = join(dir, "no", "such", "api-tokens.json");
  const r = await cli(["api-token", "create", "--file", file, "--comment", "ci"], join(dir, "home"));
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(file));
  assert.is(statSync(join(dir, "no", "such")).mode & 0o777, 0o700);
});

t("api-token create says which file it wrote and which serve reads it; serve --api-listen says where it reads tokens, and a token made there works", async () => {
  const home = tempDir();
  const made = await cli(["api-token", "create"], home);
  assert.is(made.code, 0, made.stderr);
  const file = join(home, "server", "api-tokens.json");
  assert.match(made.stderr, `in ${file};`);
  assert.match(made.stderr, `read by a node whose keys file is ${join(home, "server", "keys.json")}`);
  assert.match(made.stderr, "--keys");
  const d = tempDir();
  const b = await startBroker(["--keys", join(d, "keys.json"), "--api-listen", "127.0.0.1:0"]);
  try {
    const m = /server API listening on (http:\/\/\S+) \(tokens: (\S+);/.exec(b.output());
    assert.ok(m, b.output());
    assert.is(m![2], join(d, "api-tokens.json"));
    const elsewhere = made.stdout.trim();
    const at = (token: string) => fetch(new URL("v1/stats", m![1]), { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
    assert.is(await at(elsewhere), 401, "a token in another file is unknown to this node");
    const here = await cli(["api-token", "create", "--file", m![2]!], home);
    assert.is(here.code, 0, here.stderr);
    assert.is(await at(here.stdout.trim()), 200);
  } finally {
    await b.stop();
  }
});

t.run();
