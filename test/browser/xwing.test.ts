/**
 * X-Wing (PROTOCOL.md §5.3.1) in Debian's Chromium: the browser bundle does an X-Wing
 * handshake with a real broker, fetching dist/browser/xwing.js only then;
 * a Node client on X-Wing pushes to it through the broker; its renewal
 * handshakes stay on X-Wing.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { KeyType } from "../../shared/crypto.js";
import { type Client, connect, generateKeyFile } from "../../client/node.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { type PageServer, collectErrors, launch, loud, preflight, servePage, until } from "./harness.js";

/* eslint-disable @typescript-eslint/no-explicit-any -- page code sees the bundle's module as `any` */

const t = suite("browser client X-Wing (Chromium)");
let broker: RunningBroker;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let pages: PageServer;
let operator: Client;
let errors: string[];
let fetched: string[];
const dir = tempDir();

preflight();

t.before(
  loud(async () => {
    browser = await launch();
    pages = await servePage();
    const opKey = join(dir, "operator.pem");
    await generateKeyFile(KeyType.ed25519, opKey);
    const keys = join(dir, "keys.json");
    const added = await runCli(["keys", "add", opKey, "--role", "operator", "--file", keys]);
    assert.is(added.code, 0, added.stderr);
    broker = await startBroker(["--keys", keys, "--channel-ttl", "6", "--expiring-before", "2", "--hellos-per-address", "1000"]);
    // the Node side of the interop: an operator whose own handshake is X-Wing
    operator = await connect(broker.url, { key: opKey, serverKey: broker.fingerprint, kem: "X-Wing" });
  }),
);

t.before.each(async () => {
  context = await browser.newContext();
  page = await context.newPage();
  errors = collectErrors(page);
  fetched = [];
  page.on("request", (r) => fetched.push(new URL(r.url()).pathname));
  await page.goto(pages.url);
  await page.waitForFunction(() => document.title === "ready");
  // record the kem.type of every hello the page sends
  await page.evaluate(() => {
    (window as any).kems = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (d: any) {
      if (typeof d === "string" && d.startsWith('{"type":"hello"')) (window as any).kems.push(JSON.parse(d).kem.type);
      return send.call(this, d);
    };
  });
});

t.after.each(async () => {
  await page?.evaluate(() => (window as any).c?.close()).catch(() => {});
  await context?.close();
});

t.after(async () => {
  await operator?.close();
  await browser?.close();
  await pages?.close();
  await broker?.stop();
});

async function connectInPage(kem?: string): Promise<string> {
  return page.evaluate(
    async ({ url, serverKey, kem }) => {
      const p = (window as any).psimbols;
      const key = await p.loadOrCreateKey();
      const c = await p.connect(url, { key, serverKey, ...(kem ? { kem } : {}) });
      const ev = ((window as any).events = [] as any[]);
      c.on("push", (m: unknown) => ev.push({ type: "push", message: m }));
      c.on("established", (i: any) => ev.push({ type: "established", renewed: i.renewed }));
      (window as any).c = c;
      return key.public.fingerprint as string;
    },
    { url: broker.url, serverKey: broker.fingerprint, kem },
  );
}

t("by default the page does an X25519 handshake and never fetches xwing.js", async () => {
  await connectInPage();
  assert.equal(await page.evaluate(() => (window as any).c.request("echo", "classic")), "classic");
  assert.equal(await page.evaluate(() => (window as any).kems), ["X25519"]);
  assert.not.ok(fetched.includes("/xwing.js"), fetched.join(" "));
  // Chromium's first page asks for /favicon.ico (not a page request playwright reports), which the test server 404s
  assert.equal(errors.filter((e) => !/status of 404/.test(e)), []);
});

t("an X-Wing handshake between the browser and the broker: xwing.js is fetched then, requests work, and a Node client on X-Wing pushes to it", async () => {
  const fp = await connectInPage("X-Wing");
  assert.ok(fetched.includes("/xwing.js"), fetched.join(" "));
  assert.equal(await page.evaluate(() => (window as any).kems), ["X-Wing"]);
  assert.equal(await page.evaluate(() => (window as any).c.request("echo", { pq: "é\u{1F510}" })), { pq: "é\u{1F510}" });
  assert.is((await page.evaluate(() => (window as any).c.request("whoami"))).identity, fp);
  await operator.request("admin.push", { identity: fp, message: { from: "node over X-Wing" } });
  await until("the push", async () => (await page.evaluate(() => (window as any).events)).some((e: any) => e.type === "push"), 10_000);
  const push = (await page.evaluate(() => (window as any).events)).find((e: any) => e.type === "push");
  assert.equal(push.message, { from: "node over X-Wing" });
  assert.equal(errors, []);
});

t("renewal handshakes of an X-Wing client stay on X-Wing", async () => {
  await connectInPage("X-Wing");
  // ttl 6 s: the client renews at 0.6–0.7 of it
  await until("a renewal", async () => (await page.evaluate(() => (window as any).events)).some((e: any) => e.type === "established" && e.renewed), 12_000);
  const kems = (await page.evaluate(() => (window as any).kems)) as string[];
  assert.ok(kems.length >= 2, kems.join(","));
  assert.ok(kems.every((k) => k === "X-Wing"), kems.join(","));
  assert.equal(await page.evaluate(() => (window as any).c.request("echo", 2)), 2);
});

t.run();
