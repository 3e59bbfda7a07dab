/**
 * Real-browser test harness: Debian's Chromium driven by playwright-core.
 * Chromium is installed through apt when missing (as root); when it cannot
 * be, the tests fail with a message saying what to install. Nothing is
 * skipped silently.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { type Socket, createConnection, createServer as createTcpServer } from "node:net";
import { join } from "node:path";
import { type Browser, type Page, chromium } from "playwright-core";
import { ROOT } from "../helpers/broker.js";

export const CHROMIUM = process.env.PSIMBOLS_CHROMIUM ?? "/usr/bin/chromium";
export const BUNDLE_DIR = join(ROOT, "dist", "browser");
export const OUTPUT_DIR = join(ROOT, "test-output");

/**
 * Flags for this machine (see the machine notes): headless, no sandbox (root),
 * no GPU, and no background networking, which the closed network refuses.
 * playwright-core adds a fresh temporary --user-data-dir to every launch and
 * removes it on close.
 */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Makes sure Chromium is there, installing Debian's package when possible. @throws Error saying what is missing. */
export function ensureChromium(): string {
  if (existsSync(CHROMIUM)) return CHROMIUM;
  const canApt = process.getuid?.() === 0 && spawnSync("sh", ["-c", "command -v apt-get"]).status === 0;
  if (!canApt) {
    throw new Error(
      `Chromium is missing (${CHROMIUM}) and cannot be installed here (needs root and apt-get).\n` +
        "hint: install the Debian package 'chromium' (apt-get install chromium), or set PSIMBOLS_CHROMIUM to a Chromium binary",
    );
  }
  console.error("installing chromium through apt ...");
  const r = spawnSync("sh", ["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null"], {
    stdio: ["ignore", "inherit", "inherit"],
    timeout: 600_000,
  });
  if (r.status !== 0) throw new Error(`apt-get could not install chromium (exit ${r.status ?? r.signal})`);
  if (!existsSync(CHROMIUM)) throw new Error(`apt-get installed chromium, but ${CHROMIUM} is still missing (set PSIMBOLS_CHROMIUM to its path)`);
  return CHROMIUM;
}

/** Builds dist/browser/ when it is missing (the broker serves the console from there). */
export function ensureBundle(): void {
  if (existsSync(join(BUNDLE_DIR, "psimbols.js")) && existsSync(join(BUNDLE_DIR, "console.html"))) return;
  console.error("building the browser bundle (node bin/build-browser.mjs) ...");
  const r = spawnSync(process.execPath, [join(ROOT, "bin", "build-browser.mjs")], { stdio: "inherit" });
  if (r.status !== 0) throw new Error("the browser build failed");
}

/**
 * Run at the top of a browser test file, before any broker starts: makes
 * sure Chromium and the bundle are there, or prints why not and exits 1
 * (the test script counts that file as failed; nothing is skipped).
 */
export function preflight(): void {
  try {
    ensureChromium();
    ensureBundle();
  } catch (e) {
    console.error(`error: the browser tests cannot run: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  }
}

/** Wraps a setup hook so its failure is printed (uvu reports a failing `before` only as "0 / N"). */
export function loud(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await fn();
    } catch (e) {
      console.error(`\nerror in the test setup: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      throw e;
    }
  };
}

export async function launch(): Promise<Browser> {
  const executablePath = ensureChromium();
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** Everything the page printed with console.error, and uncaught page errors. */
export function collectErrors(page: Page): string[] {
  const out: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") out.push(m.text());
  });
  page.on("pageerror", (e) => out.push(`pageerror: ${e.message}`));
  return out;
}

const TEST_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>loading</title>
<script type="module">
  import * as psimbols from "/psimbols.js";
  window.psimbols = psimbols;
  window.events = [];
  document.title = "ready";
</script>`;

export interface PageServer {
  /** http://127.0.0.1:port/ — a secure context (localhost), as WebCrypto requires. */
  url: string;
  close(): Promise<void>;
}

/** Serves a blank test page that imports dist/browser/psimbols.js as `window.psimbols`. */
export async function servePage(): Promise<PageServer> {
  const files: Record<string, [string, () => Buffer | string]> = {
    "/": ["text/html; charset=utf-8", () => TEST_PAGE],
    "/psimbols.js": ["text/javascript", () => readFileSync(join(BUNDLE_DIR, "psimbols.js"))],
    "/psimbols.js.map": ["application/json", () => readFileSync(join(BUNDLE_DIR, "psimbols.js.map"))],
    // X-Wing (PROTOCOL.md §5.3.1): imported by psimbols.js on first use only
    "/xwing.js": ["text/javascript", () => readFileSync(join(BUNDLE_DIR, "xwing.js"))],
    "/xwing.js.map": ["application/json", () => readFileSync(join(BUNDLE_DIR, "xwing.js.map"))],
  };
  const server: Server = createServer((req, res) => {
    const f = files[(req.url ?? "/").split("?")[0]!];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": f[0], "cache-control": "no-store" });
    res.end(f[1]());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Resolves when `check` turns true, polling every 20 ms; rejects after `ms` naming `what`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A TCP pass-through to `port` that counts the connections made through it. */
export async function countingProxy(port: number): Promise<{ url: string; connections(): number; close(): void }> {
  let n = 0;
  const sockets = new Set<Socket>();
  const server = createTcpServer((down) => {
    n++;
    const up = createConnection(port, "127.0.0.1");
    sockets.add(down).add(up);
    down.pipe(up).pipe(down);
    const end = () => (down.destroy(), up.destroy());
    down.on("error", end).on("close", end);
    up.on("error", end).on("close", end);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const p = (server.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${p}/`,
    connections: () => n,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
