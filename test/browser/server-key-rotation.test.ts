/**
 * A browser client (the bundle in Debian's Chromium, its localStorage store)
 * follows a server key rotation (PROTOCOL.md §5.6) on a three-node local
 * cluster, through HAProxy, without a `server_key_mismatch`; a page that did
 * not connect during the rollover fails loudly.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { type Cluster, startCluster } from "../../cli/cluster/local-cluster.js";
import { addNextServerKey, promoteNextServerKey } from "../../server/server-key.js";
import { type PageServer, collectErrors, launch, loud, preflight, servePage, until } from "./harness.js";

/* eslint-disable @typescript-eslint/no-explicit-any -- page code sees the bundle's module as `any` */

const t = suite("browser client follows a server key rotation (Chromium, three nodes)");
let cluster: Cluster;
let browser: Browser;
let pages: PageServer;
const contexts: BrowserContext[] = [];

preflight();

t.before(
  loud(async () => {
    browser = await launch();
    pages = await servePage();
    cluster = await startCluster({ nodes: 3, nodeArgs: ["--hellos-per-address", "1000", "--server-key-poll", "100"] });
  }),
);
t.after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  await pages?.close();
  await cluster?.stop();
});

async function newPage(): Promise<{ page: Page; errors: string[] }> {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  const errors = collectErrors(page);
  await page.goto(pages.url);
  await page.waitForFunction(() => document.title === "ready");
  return { page, errors };
}

/** Connects in the page (trust on first use into localStorage); `window.c` is the client, `window.keyEvents` its serverKey events. */
async function connectInPage(page: Page, url: string): Promise<{ code: string; serverKey?: string; message?: string }> {
  return page.evaluate(async (url) => {
    const p = (window as any).psimbols;
    try {
      const c = await p.connect(url, { key: await p.loadOrCreateKey() });
      (window as any).keyEvents = [];
      c.on("serverKey", (e: any) => (window as any).keyEvents.push(e));
      (window as any).c = c;
      return { code: "connected", serverKey: c.channel.serverKey };
    } catch (e: any) {
      return { code: e.code, message: e.message };
    }
  }, url);
}

const renew = (page: Page) => page.evaluate(async () => {
  const c = (window as any).c;
  await c.renew();
  return c.channel.serverKey as string;
});
const stored = (page: Page, url: string) =>
  page.evaluate((url) => ({ current: localStorage.getItem(`psimbols.known_server ${url}`), next: localStorage.getItem(`psimbols.known_server_next ${url}`) }), url);

async function allNodes(current: string, next: string | undefined): Promise<void> {
  await until(`every node presents ${current} (next ${next})`, async () => {
    const states = await Promise.all(
      cluster.nodes.map(async (n) => (await (await fetch(`http://127.0.0.1:${n.port}/.well-known/psimbols`)).json()) as { fingerprint: string; next_server_key?: { fingerprint: string } }),
    );
    return states.every((s) => s.fingerprint === current && s.next_server_key?.fingerprint === next);
  });
}

t("a page pinned by localStorage follows the rotation; a page that missed it gets server_key_mismatch", async () => {
  const old = cluster.fingerprint;
  const a = await newPage();
  const missed = await newPage();
  assert.equal(await connectInPage(a.page, cluster.url), { code: "connected", serverKey: old });
  assert.equal(await connectInPage(missed.page, cluster.url), { code: "connected", serverKey: old });
  await missed.page.evaluate(() => (window as any).c.close());

  const set = await addNextServerKey(cluster.serverKeyFile, { notBefore: new Date() });
  const next = set.next!.key.public.fingerprint;
  await allNodes(old, next);
  assert.is(await renew(a.page), old);
  await until("the next key is in localStorage", async () => (await stored(a.page, cluster.url)).next === next);
  assert.equal(await stored(a.page, cluster.url), { current: old, next });

  await promoteNextServerKey(cluster.serverKeyFile);
  await allNodes(next, undefined);
  assert.is(await renew(a.page), next);
  assert.is(await renew(a.page), next);
  assert.equal(await a.page.evaluate(() => (window as any).c.request("echo", 5)), 5);
  assert.equal(await stored(a.page, cluster.url), { current: next, next: null });
  const events = await a.page.evaluate(() => (window as any).keyEvents);
  assert.equal(events.map((e: any) => [e.rotated, e.current]), [[false, old], [true, next]]);
  // a reload (a fresh client over the same localStorage) connects with the new key
  await a.page.evaluate(() => (window as any).c.close());
  assert.equal(await connectInPage(a.page, cluster.url), { code: "connected", serverKey: next });
  await a.page.evaluate(() => (window as any).c.close());

  const r = await connectInPage(missed.page, cluster.url);
  assert.is(r.code, "server_key_mismatch");
  assert.equal(await stored(missed.page, cluster.url), { current: old, next: null });
  assert.ok(missed.errors.some((e) => /SERVER KEY MISMATCH/.test(e)), "the mismatch is written to the console");
  // (a favicon 404 from the test page server is not the client's)
  assert.equal(a.errors.filter((e) => !/Failed to load resource/.test(e)), []);
});

t.run();
