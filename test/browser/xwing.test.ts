/**
 * X-Wing in the browser (PROTOCOL.md §5.3): the bundle in Chromium offers
 * X-Wing and gets a channel from a real broker process; requests flow.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { Browser, Page } from "playwright-core";
import { type RunningBroker, startBroker } from "../helpers/broker.js";
import { type PageServer, launch, loud, preflight, servePage } from "./harness.js";

/* eslint-disable @typescript-eslint/no-explicit-any -- page code sees the bundle's module as `any` */

const t = suite("browser client with X-Wing (Chromium)");
let broker: RunningBroker;
let browser: Browser;
let pages: PageServer;
let page: Page;

preflight();

t.before(
  loud(async () => {
    browser = await launch();
    pages = await servePage();
    broker = await startBroker(["--hellos-per-address", "1000"]);
    page = await (await browser.newContext()).newPage();
    await page.goto(pages.url);
    await page.waitForFunction(() => document.title === "ready");
  }),
);
t.after(async () => {
  await browser?.close();
  await pages?.close();
  await broker?.stop();
});

t("a page offering X-Wing gets a channel from the broker and makes requests; detectAlgorithms never picks X-Wing", async () => {
  const r = await page.evaluate(
    async ({ url, fp }) => {
      const p = (window as any).psimbols;
      const c = await p.connect(url, { key: await p.loadOrCreateKey(), serverKey: fp, kem: "X-Wing" });
      const echo = await c.request("echo", { pq: "yes" });
      await c.renew();
      const again = await c.request("echo", 3);
      await c.close();
      return { echo, again, detected: (await p.detectAlgorithms()).kem };
    },
    { url: broker.url, fp: broker.fingerprint },
  );
  assert.equal(r, { echo: { pq: "yes" }, again: 3, detected: "X25519" });
});

t.run();
