/**
 * The web console in Debian's Chromium against real broker processes
 * (`psimbols serve` serves it at /console/ by default): an operator logs in
 * with an imported PKCS#8 key, sees a second client connect, pushes to it and
 * revokes it; in the Keys view it lists, adds and blocks keys (checked
 * through the CLI); keys without the operator role get `forbidden`, and the
 * way docs/OPERATIONS.md (Web console) registers the console's own key works.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { type Client, type NoticeEvent, connect, generateSigningKey, loadKey } from "../../client/node.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { startRedis } from "../helpers/redis.js";
import { OUTPUT_DIR, collectErrors, launch, loud, preflight, until } from "./harness.js";

const t = suite("web console (Chromium)");
const dir = tempDir();
const keysFile = join(dir, "keys.json");
const opKey = join(dir, "operator.pem");
let broker: RunningBroker;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let errors: string[];
let operatorFp: string;

preflight();

t.before(
  loud(async () => {
    browser = await launch();
    // as docs/OPERATIONS.md (Web console) says: a key, registered with the operator role, and a broker reading that keys file
    const gen = await runCli(["keygen", "-o", opKey]);
    assert.is(gen.code, 0, gen.stderr);
    operatorFp = JSON.parse(gen.stdout).fingerprint;
    const added = await runCli(["keys", "add", opKey, "--role", "operator", "--comment", "ops laptop", "--file", keysFile]);
    assert.is(added.code, 0, added.stderr);
    broker = await startBroker(["--keys", keysFile, "--hellos-per-address", "1000"]);
  }),
);

t.before.each(async () => {
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  errors = collectErrors(page);
});

t.after.each(async () => {
  await context?.close();
});

t.after(async () => {
  await browser?.close();
  await broker?.stop();
});

/** Status of a GET with `path` sent exactly as given. */
function rawStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method: "GET" }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject).end();
  });
}

const http = (b: RunningBroker) => `http://127.0.0.1:${b.port}`;

async function openConsole(b: RunningBroker): Promise<void> {
  await page.goto(`${http(b)}/console`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 10_000 });
}

async function status(): Promise<string> {
  return (await page.textContent("#status")) ?? "";
}

/** Two clicks: the first arms the button, the second acts. */
async function confirmClick(selector: string): Promise<void> {
  await page.click(selector);
  await page.click(selector);
}

t("serves the page at /console/ with a strict content security policy, and nothing else under it", async () => {
  const redirect = await fetch(`${http(broker)}/console`, { redirect: "manual" });
  assert.is(redirect.status, 308);
  assert.is(redirect.headers.get("location"), "console/");
  const html = await fetch(`${http(broker)}/console/`);
  assert.is(html.status, 200);
  assert.match(html.headers.get("content-type") ?? "", "text/html");
  const csp = html.headers.get("content-security-policy") ?? "";
  assert.match(csp, "script-src 'self'");
  assert.match(csp, "connect-src 'self'");
  assert.match(csp, "frame-ancestors 'none'");
  assert.is(html.headers.get("x-content-type-options"), "nosniff");
  assert.match(await html.text(), "<title>psimbols console</title>");
  for (const path of ["/console/console.js", "/console/console.css"]) assert.is((await fetch(http(broker) + path)).status, 200, path);
  // sent verbatim (fetch would normalise the dots away)
  for (const path of ["/console/../server-key.pem", "/console/%2e%2e/server-key.pem", "/console/psimbols.js", "/console/console.html", "/consolex", "/console//console.js"]) {
    assert.is(await rawStatus(broker.port, path), 404, path);
  }
});

t("an operator logs in with an imported PKCS#8 key, sees a client connect, pushes to it and revokes it", async () => {
  await openConsole(broker);
  await page.setInputFiles("#key-file", opKey);
  await page.waitForFunction((fp) => document.querySelector("#key-fp")?.textContent === fp, operatorFp);
  assert.is(await page.textContent("#key-type"), "Ed25519");
  assert.is(await page.inputValue("#url"), `ws://127.0.0.1:${broker.port}/`);
  await page.fill("#pin", broker.fingerprint);
  await page.click("#connect");
  await page.waitForSelector("#status[data-state=ready]", { timeout: 10_000 });
  assert.is(await status(), "connected as operator");
  assert.ok(await page.isHidden("#login"));
  // the console's own channel is listed and marked
  await page.waitForSelector(`tr.self[data-identity="${operatorFp}"]`);

  // a second client, from Node
  const other: Client = await connect(broker.url, { key: await generateSigningKey(), serverKey: broker.fingerprint });
  const fp = ((await other.request("whoami")) as { identity: string }).identity;
  const pushes: unknown[] = [];
  const notices: NoticeEvent[] = [];
  let closeCode = 0;
  other.on("push", (m) => pushes.push(m));
  other.on("notice", (n) => notices.push(n));
  other.on("close", (e) => (closeCode = e.code));
  const row = `tr[data-identity="${fp}"]`;
  await page.waitForSelector(row, { timeout: 5000 });
  await page.waitForSelector(`#log li[data-kind=connected] >> text=${fp}`);
  assert.match((await page.textContent(`${row} td.expiry`)) ?? "", /^(59m|1h 0m)/);
  assert.is(await page.textContent("#s-channels"), "2");
  // a registered key's comment beside its fingerprint; an unregistered key has none
  assert.is(await page.textContent("#channels tr.self bdi.comment"), "ops laptop");
  assert.is(await page.locator(`${row} bdi.comment`).count(), 0);
  // the errors card says what it counts (docs/OPERATIONS.md, Web console), and its tooltip each kind
  assert.match((await page.textContent("#s-errors-note")) ?? "", "refused handshakes, resumes and requests, and store errors, since each node started");
  assert.match((await page.getAttribute("#s-errors", "title")) ?? "", /handshakes rejected \d+, forbidden \d+, rate-limited \d+/);

  // push: the row's button fills the form
  await page.click(`${row} button:has-text("push")`);
  assert.is(await page.inputValue("#push-target"), fp);
  await page.fill("#push-message", '{"from": "the console", "n": 42}');
  await page.click("#push-send");
  await until("the push to reach the client", () => pushes.length > 0);
  assert.equal(pushes[0], { from: "the console", n: 42 });
  await page.waitForSelector("#log li[data-kind=push][data-level=ok]");

  mkdirSync(OUTPUT_DIR, { recursive: true });
  const shot = join(OUTPUT_DIR, "console.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`    screenshot: ${shot}`);

  // revoke the identity (two clicks), and the client hears `revoked` and stays off
  await confirmClick(`${row} button[data-action=revoke-identity]`);
  await until("the client to get `revoked`", () => notices.some((n) => n.kind === "revoked"));
  await until("the client to close", () => closeCode !== 0);
  assert.is(closeCode, 4005);
  await page.waitForSelector(row, { state: "detached", timeout: 5000 });
  await page.waitForSelector("#log li[data-kind=revoke] >> text=revoked");
  await page.waitForSelector(`#log li[data-kind=gone] >> text=${fp}`);
  // the console itself is untouched
  assert.is(await status(), "connected as operator");
  assert.ok(await page.isVisible(`tr.self[data-identity="${operatorFp}"]`));
  await page.screenshot({ path: join(OUTPUT_DIR, "console-after-revoke.png"), fullPage: true });
  await other.close();
  assert.equal(errors, []);
});

t("Keys view: an operator lists the keys, adds one from its public PEM and blocks it; the CLI sees each change, and the blocked key's channel ends", async () => {
  await openConsole(broker);
  await page.setInputFiles("#key-file", opKey);
  await page.waitForFunction((fp) => document.querySelector("#key-fp")?.textContent === fp, operatorFp);
  await page.fill("#pin", broker.fingerprint);
  await page.click("#connect");
  await page.waitForSelector("#status[data-state=ready]", { timeout: 10_000 });
  await page.click("#tab-keys");
  assert.ok(await page.isHidden("#view-overview"));
  // list: the console's own key, with its comment and role; it cannot block or remove itself
  const selfRow = `#keys tr.self[data-fingerprint="${operatorFp}"]`;
  await page.waitForSelector(selfRow, { timeout: 5000 });
  assert.is(await page.textContent(`${selfRow} bdi.comment`), "ops laptop");
  assert.is(await page.textContent(`${selfRow} td.role-operator`), "operator");
  assert.ok(await page.isDisabled(`${selfRow} button[data-action=block]`));
  assert.ok(await page.isDisabled(`${selfRow} button[data-action=remove]`));
  // what persists: the keys file, and channels in this node's memory
  const where = (await page.textContent("#keys-where")) ?? "";
  assert.match(where, `keys file ${keysFile}`);
  assert.match(where, "they persist across restarts");
  assert.match(where, "Channels and kept pushes live in this node's memory only");

  // bad input changes nothing: a private key is refused in the page (never sent), a malformed one by the broker
  const pem = join(dir, "kiosk.pem");
  assert.is((await runCli(["keygen", "-o", pem])).code, 0);
  const kiosk = await loadKey(pem);
  const before = readFileSync(keysFile, "utf8");
  await page.fill("#key-add-pem", readFileSync(pem, "utf8"));
  await page.click("#key-add");
  await page.waitForSelector('#keys-status[data-level=error] >> text=this is a private key');
  await page.fill("#key-add-pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----");
  await page.click("#key-add");
  await page.waitForSelector('#keys-status[data-level=error] >> text=does not hold a SubjectPublicKeyInfo; nothing was sent');
  assert.is(readFileSync(keysFile, "utf8"), before);

  // add: the public PEM, a comment, the role client
  await page.fill("#key-add-pem", readFileSync(join(dir, "kiosk.pub.pem"), "utf8"));
  await page.fill("#key-add-comment", "kiosk 7");
  await page.selectOption("#key-add-role", "client");
  await page.click("#key-add");
  const row = `#keys tr[data-fingerprint="${kiosk.public.fingerprint}"]`;
  await page.waitForSelector(`${row}[data-role=client]`, { timeout: 5000 });
  assert.is(await page.textContent(`${row} bdi.comment`), "kiosk 7");
  const listed = async () => {
    const r = await runCli(["keys", "list", "--json", "--file", keysFile]);
    assert.is(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { fingerprint: string; role: string; comment: string }[]).find((k) => k.fingerprint === kiosk.public.fingerprint);
  };
  assert.equal({ role: (await listed())?.role, comment: (await listed())?.comment }, { role: "client", comment: "kiosk 7" });

  // block (two clicks): the key's open channel is revoked, the file says blocked, a new handshake is forbidden
  const kioskClient = await connect(broker.url, { key: kiosk, serverKey: broker.fingerprint, reconnect: false });
  let closeCode = 0;
  kioskClient.on("close", (e) => (closeCode = e.code));
  await confirmClick(`${row} button[data-action=block]`);
  await page.waitForSelector(`${row}[data-role=blocked]`, { timeout: 5000 });
  await page.waitForSelector('#keys-status[data-level=ok] >> text=1 channel revoked');
  await until("the blocked key's client to close", () => closeCode !== 0);
  assert.is(closeCode, 4005);
  assert.equal({ role: (await listed())?.role, comment: (await listed())?.comment }, { role: "blocked", comment: "kiosk 7" });
  const refused = await connect(broker.url, { key: kiosk, serverKey: broker.fingerprint, reconnect: false }).then(
    () => "connected",
    (e: { code?: string }) => e.code,
  );
  assert.is(refused, "forbidden");
  assert.ok(await page.isVisible(`${row} button[data-action=unblock]`));
  // added is the first registration; changed says when the block was written
  const [addedAt, changedAt] = await page.$$eval(`${row} td.when`, (tds) => tds.map((td) => td.textContent ?? ""));
  assert.match(addedAt!, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  assert.match(changedAt!, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  mkdirSync(OUTPUT_DIR, { recursive: true });
  await page.screenshot({ path: join(OUTPUT_DIR, "console-keys.png"), fullPage: true });
  // unblock offers the role: as operator, the CLI lists it so
  await page.selectOption(`${row} select[data-action=unblock-role]`, "operator");
  await page.click(`${row} button[data-action=unblock]`);
  await page.waitForSelector(`${row}[data-role=operator]`, { timeout: 5000 });
  assert.equal({ role: (await listed())?.role, comment: (await listed())?.comment }, { role: "operator", comment: "kiosk 7" });
  await confirmClick(`${row} button[data-action=remove]`);
  await page.waitForSelector(row, { state: "detached", timeout: 5000 });
  // the console itself is untouched
  assert.is(await status(), "connected as operator");
  assert.equal(errors, []);
});

/** Logs the console in with the key file `file` (its fingerprint `fp`) and opens the Keys view. */
async function loginToKeys(file: string, fp: string): Promise<void> {
  await openConsole(broker);
  await page.setInputFiles("#key-file", file);
  await page.waitForFunction((x) => document.querySelector("#key-fp")?.textContent === x, fp);
  await page.fill("#pin", broker.fingerprint);
  await page.click("#connect");
  await page.waitForSelector("#status[data-state=ready]", { timeout: 10_000 });
  await page.click("#tab-keys");
  await page.waitForSelector(`#keys tr.self[data-fingerprint="${fp}"]`, { timeout: 5000 });
}

t("Keys view: a private key in any form (PEM, bare base64 DER, the wire form, PKCS#8 under a PUBLIC KEY label) is refused in the page and never sent; so are a 201-character comment and a fingerprint without the role blocked", async () => {
  // every JSON the page makes, as the request it seals (client/connection.ts stringifies {op, data})
  await page.addInitScript(() => {
    const real = JSON.stringify;
    const sent: string[] = ((globalThis as any).__sent = []);
    JSON.stringify = function (this: unknown, ...args: Parameters<typeof real>) {
      const out = real.apply(this, args);
      if (typeof out === "string" && out.includes('"op":"admin.keys.add"')) sent.push(out);
      return out;
    } as typeof real;
  });
  await loginToKeys(opKey, operatorFp);
  const pem = join(dir, "form-check.pem");
  assert.is((await runCli(["keygen", "-o", pem])).code, 0);
  const privatePem = readFileSync(pem, "utf8");
  const der = privatePem.split("\n").filter((l) => l && !l.startsWith("-----")).join("");
  const before = readFileSync(keysFile, "utf8");
  const sent = () => page.evaluate(() => ((globalThis as any).__sent as string[]).length);
  const refusedWith = async (text: string, comment: string, role: string, reason: string) => {
    await page.fill("#key-add-pem", text);
    await page.fill("#key-add-comment", comment);
    await page.selectOption("#key-add-role", role);
    await page.click("#key-add");
    await page.waitForSelector(`#keys-status[data-level=error] >> text=${reason}`, { timeout: 3000 });
    assert.match((await page.textContent("#keys-status")) ?? "", "nothing was sent");
    assert.is(await sent(), 0, `${text.slice(0, 30)} was sent`);
    await page.evaluate(() => (document.getElementById("keys-status")!.hidden = true));
  };
  await refusedWith(privatePem, "", "client", "this is a private key");
  await refusedWith(der, "", "client", "this is not a PEM public key");
  await refusedWith(JSON.stringify({ type: "Ed25519", data: Buffer.from(der, "base64").toString("base64url") }), "", "client", "wire form {type, data}");
  await refusedWith(`-----BEGIN PUBLIC KEY-----\n${der.replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----`, "", "client", "this is a private key (PKCS#8) under a PUBLIC KEY label");
  const pub = readFileSync(join(dir, "form-check.pub.pem"), "utf8");
  // the comment field takes 201 characters, and the page refuses them rather than cutting
  await refusedWith(pub, "c".repeat(201), "client", "comment: a comment is at most 200 characters, got 201");
  assert.is((await page.inputValue("#key-add-comment")).length, 201);
  const fp = (await loadKey(pem)).public.fingerprint;
  await refusedWith(fp, "", "client", "a fingerprint alone only blocks");
  assert.is(readFileSync(keysFile, "utf8"), before);
  // the same public key is sent (the hook does see an add), and registered
  await page.fill("#key-add-pem", pub);
  await page.fill("#key-add-comment", "c".repeat(200));
  await page.click("#key-add");
  await page.waitForSelector(`#keys tr[data-fingerprint="${fp}"]`, { timeout: 5000 });
  assert.is(await sent(), 1);
  await confirmClick(`#keys tr[data-fingerprint="${fp}"] button[data-action=remove]`);
  await page.waitForSelector(`#keys tr[data-fingerprint="${fp}"]`, { state: "detached", timeout: 5000 });
  assert.equal(errors, []);
});

t("a 200-character comment without spaces is cut with an ellipsis (the whole in its title) in the Keys table and the live channels: the buttons stay on screen at 1280 px; control characters written before are escaped and isolated", async () => {
  const pem = join(dir, "long.pem");
  assert.is((await runCli(["keygen", "-o", pem])).code, 0);
  const long = await loadKey(pem);
  const comment = "W".repeat(200);
  assert.is((await runCli(["keys", "add", pem, "--comment", comment, "--file", keysFile])).code, 0);
  // an entry written before comments were checked: a newline, an ANSI escape, a bidi override
  const old = await generateSigningKey();
  const f = JSON.parse(readFileSync(keysFile, "utf8"));
  f.keys.push({ fingerprint: old.public.fingerprint, role: "blocked", comment: "a\nb\x1b[31m\u202eevil", added: new Date().toISOString() });
  writeFileSync(keysFile, JSON.stringify(f));
  const c = await connect(broker.url, { key: long, serverKey: broker.fingerprint, reconnect: false });
  try {
    await loginToKeys(opKey, operatorFp);
    const row = `#keys tr[data-fingerprint="${long.public.fingerprint}"]`;
    await page.waitForSelector(row, { timeout: 5000 });
    assert.is(await page.getAttribute(`${row} bdi.comment`, "title"), comment);
    const oldRow = `#keys tr[data-fingerprint="${old.public.fingerprint}"]`;
    await page.waitForSelector(oldRow, { timeout: 5000 });
    assert.is(await page.textContent(`${oldRow} bdi.comment`), "a\\u000ab\\u001b[31m\\u202eevil");
    const right = async (sel: string) => {
      const box = await page.locator(sel).boundingBox();
      assert.ok(box, sel);
      return box!.x + box!.width;
    };
    assert.ok((await right(`${row} button[data-action=remove]`)) <= 1280, "the Keys table's buttons are off screen");
    await page.screenshot({ path: join(OUTPUT_DIR, "console-keys-long-comment.png"), fullPage: true });
    await page.click("#tab-overview");
    const live = `#channels tr[data-identity="${long.public.fingerprint}"]`;
    await page.waitForSelector(live, { timeout: 5000 });
    assert.is(await page.getAttribute(`${live} bdi.comment`, "title"), comment);
    assert.ok((await right(`${live} button[data-action=revoke-identity]`)) <= 1280, "the live channels' buttons are off screen");
    assert.ok(await page.$eval(`${live} bdi.comment`, (e) => e.scrollWidth > e.clientWidth), "the comment is not cut");
    await page.screenshot({ path: join(OUTPUT_DIR, "console-channels-long-comment.png"), fullPage: true });
  } finally {
    await c.close();
    for (const fp of [long.public.fingerprint, old.public.fingerprint]) await runCli(["keys", "remove", fp, "--file", keysFile]);
  }
  assert.equal(errors, []);
});

t("a console whose key loses the operator role (psimbols keys) drops to the logged-out view on its next admin.keys, saying why in words for an imported key", async () => {
  const file = join(dir, "demoted.pem");
  assert.is((await runCli(["keygen", "-o", file])).code, 0);
  const fp = (await loadKey(file)).public.fingerprint;
  assert.is((await runCli(["keys", "add", file, "--role", "operator", "--file", keysFile])).code, 0);
  try {
    await loginToKeys(file, fp);
    assert.is((await runCli(["keys", "add", file, "--role", "client", "--file", keysFile])).code, 0);
    // the next admin.keys (Refresh) or admin.channels (polled each second) is forbidden
    await page.waitForSelector("#banner:not([hidden])", { timeout: 5000 });
    const text = (await page.textContent("#banner")) ?? "";
    assert.match(text, "no longer has the operator role");
    assert.match(text, ".pub.pem beside the imported key file");
    assert.not.match(text, "Download the public key and");
    assert.match(text, "by default keys.json in its data directory");
    assert.ok(await page.isHidden("#dash"));
    assert.is(await page.$$eval("#keys tbody tr", (r) => r.length), 0);
    assert.is(await status(), "not connected");
    assert.ok(await page.isVisible("#login"));
  } finally {
    await runCli(["keys", "remove", fp, "--file", keysFile]);
  }
});

t("HEAD /console/ is answered as GET, without a body", async () => {
  const head = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: broker.port, path: "/console/", method: "HEAD" }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]), body }));
    });
    req.on("error", reject).end();
  });
  assert.equal(head, { status: 200, type: "text/html; charset=utf-8", body: "" });
  const del = await fetch(`${http(broker)}/console/`, { method: "DELETE" });
  assert.equal([del.status, del.headers.get("allow")], [405, "GET, HEAD"]);
  const health = await fetch(`${http(broker)}/healthz`, { method: "HEAD" });
  assert.equal([health.status, await health.text()], [200, ""]);
});

t("a key without the operator role gets `forbidden`, and the page says how to register it", async () => {
  await openConsole(broker);
  await page.click("#key-generate");
  await page.waitForFunction(() => document.querySelector("#key-fp")?.textContent?.startsWith("SHA256:"));
  const fp = (await page.textContent("#key-fp"))!;
  await page.click("#connect");
  await page.waitForSelector("#banner:not([hidden])", { timeout: 10_000 });
  const text = (await page.textContent("#banner")) ?? "";
  assert.match(text, "forbidden");
  assert.match(text, fp);
  assert.match(text, "psimbols keys add");
  assert.match(text, "--role operator");
  assert.ok(await page.isHidden("#dash"));
  assert.is.not(await page.getAttribute("#status", "data-state"), "ready");
  await page.screenshot({ path: join(OUTPUT_DIR, "console-forbidden.png") });

  // the fix the page names: download the public key, register it as an operator, connect again
  const download = page.waitForEvent("download");
  await page.click("#key-download");
  const file = join(dir, (await download).suggestedFilename());
  await (await download).saveAs(file);
  assert.match(readFileSync(file, "utf8"), "-----BEGIN PUBLIC KEY-----");
  const added = await runCli(["keys", "add", file, "--role", "operator", "--file", keysFile]);
  assert.is(added.code, 0, added.stderr);
  assert.match(added.stdout, fp);
  await new Promise((r) => setTimeout(r, 1100)); // the broker re-reads the keys file at most once a second
  await page.click("#connect");
  await page.waitForSelector("#status[data-state=ready]", { timeout: 10_000 });
  assert.ok(await page.isHidden("#banner"));
});

t("a closed service refuses an unregistered key at the handshake with `forbidden`", async () => {
  const closedKeys = join(dir, "closed-keys.json");
  writeFileSync(closedKeys, '{"version":1,"keys":[]}\n'); // no key registered (a missing --keys file fails fast)
  const closed = await startBroker(["--closed", "--keys", closedKeys]);
  try {
    await openConsole(closed);
    await page.click("#key-generate");
    await page.waitForFunction(() => document.querySelector("#key-fp")?.textContent?.startsWith("SHA256:"));
    await page.click("#connect");
    await page.waitForSelector("#banner:not([hidden])", { timeout: 10_000 });
    assert.match((await page.textContent("#banner")) ?? "", "forbidden: the broker does not list this key as an operator");
    assert.ok(await page.isHidden("#dash"));
  } finally {
    await closed.stop();
  }
});

t("a wrong pinned server key is refused loudly and the console stays logged out", async () => {
  await openConsole(broker);
  await page.setInputFiles("#key-file", opKey);
  await page.waitForFunction((fp) => document.querySelector("#key-fp")?.textContent === fp, operatorFp);
  const wrong = (await generateSigningKey()).public.fingerprint;
  await page.fill("#pin", wrong);
  await page.click("#connect");
  await page.waitForSelector("#banner:not([hidden])", { timeout: 10_000 });
  const text = (await page.textContent("#banner")) ?? "";
  assert.match(text, "SERVER KEY MISMATCH");
  assert.match(text, wrong);
  assert.match(text, broker.fingerprint);
  assert.ok(await page.isHidden("#dash"));
});

t("with two nodes on one Redis, the console on node a lists a client of node b and revokes it", async () => {
  const redis = await startRedis();
  const shared = tempDir(); // both nodes share the server key made in it
  const env = { PSIMBOLS_WRAP_KEY: randomBytes(32).toString("base64url") };
  let a: RunningBroker | undefined;
  let b: RunningBroker | undefined;
  let other: Client | undefined;
  try {
    const added = await runCli(["keys", "add", opKey, "--role", "operator", "--redis", redis.url]);
    assert.is(added.code, 0, added.stderr);
    const args = ["--redis", redis.url, "--hellos-per-address", "1000"];
    a = await startBroker([...args, "--node", "node-a"], { dataDir: shared, env });
    b = await startBroker([...args, "--node", "node-b"], { dataDir: shared, env });
    await openConsole(a);
    await page.setInputFiles("#key-file", opKey);
    await page.waitForFunction((fp) => document.querySelector("#key-fp")?.textContent === fp, operatorFp);
    await page.click("#connect");
    await page.waitForSelector("#status[data-state=ready]", { timeout: 10_000 });

    other = await connect(b.url, { key: await generateSigningKey(), serverKey: b.fingerprint });
    const fp = ((await other.request("whoami")) as { identity: string }).identity;
    const notices: string[] = [];
    other.on("notice", (n) => notices.push(n.kind));
    const row = `tr[data-identity="${fp}"]`;
    await page.waitForSelector(row, { timeout: 5000 });
    const cells = await page.$$eval(`${row} td`, (tds) => tds.map((td) => td.textContent));
    assert.is(cells[2], "held by node-b"); // where the client's socket is (docs/CLI.md, channels list)
    assert.is(cells[3], "–"); // no socket on node a
    await page.screenshot({ path: join(OUTPUT_DIR, "console-two-nodes.png"), fullPage: true });
    await confirmClick(`${row} button[data-action=revoke-channel]`);
    await until("the client on node b to get `revoked`", () => notices.includes("revoked"));
    await page.waitForSelector(row, { state: "detached", timeout: 5000 });
  } finally {
    await other?.close().catch(() => {});
    await Promise.all([a?.stop(), b?.stop()]);
    await redis.stop();
  }
});

t("`serve --no-console` serves no console", async () => {
  const off = await startBroker(["--no-console"]);
  try {
    assert.is((await fetch(`${http(off)}/console/`)).status, 404);
  } finally {
    await off.stop();
  }
});

t.run();
