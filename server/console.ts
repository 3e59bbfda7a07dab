/**
 * The web console (docs/OPERATIONS.md, Web console): an {@link HttpHook} that serves a small page at
 * `/console/` and its bundled script and style from `dist/browser/` (built by
 * `bin/build-browser.mjs`). The page is itself a psimbols client: the
 * operator's browser does the handshake with its own key, and the broker
 * grants the `admin.*` operations only to keys registered with the operator
 * role (server/operator.ts). Serving the page grants nothing.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpHook } from "./broker.js";

/** Default directory of the built console: `dist/browser/`, beside `dist/server/`. */
export const DEFAULT_CONSOLE_DIR = fileURLToPath(new URL("../browser/", import.meta.url));

/** The files the console serves: URL path under the prefix → file and type. Nothing else is ever read. */
const FILES: Readonly<Record<string, { file: string; type: string }>> = {
  "": { file: "console.html", type: "text/html; charset=utf-8" },
  "console.js": { file: "console.js", type: "text/javascript; charset=utf-8" },
  "console.js.map": { file: "console.js.map", type: "application/json; charset=utf-8" },
  "console.css": { file: "console.css", type: "text/css; charset=utf-8" },
};

/**
 * Response headers of every console file. The page loads only its own script
 * and style, opens WebSockets only to its own origin (CSP 3: 'self' covers
 * ws: and wss: to the same host), and may not be framed.
 */
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cache-control": "no-cache",
} as const;

/** Options of {@link consoleHook}. */
export interface ConsoleOptions {
  /** Directory holding console.html, console.js and console.css. Default {@link DEFAULT_CONSOLE_DIR}. */
  dir?: string;
  /** URL path of the console, without a trailing slash. Default "/console". */
  path?: string;
}

/**
 * An {@link HttpHook} serving the console at `path + "/"` (and redirecting
 * `path` there, so the page's relative links also work behind a path
 * prefix). Returns false for every other path. When the files are missing
 * (the browser bundle was not built) it answers 503 naming the fix.
 *
 * Wire it with `Broker.start({ ..., http: consoleHook() })`.
 */
export function consoleHook(options: ConsoleOptions = {}): HttpHook {
  const dir = options.dir ?? DEFAULT_CONSOLE_DIR;
  const prefix = options.path ?? "/console";
  if (!/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/.test(prefix)) {
    throw new RangeError(`"path" expected a URL path like /console, without a trailing slash`);
  }
  return async (_req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> => {
    if (path === prefix) {
      const last = prefix.slice(prefix.lastIndexOf("/") + 1);
      res.writeHead(308, { location: `${last}/`, "cache-control": "no-cache" });
      res.end();
      return true;
    }
    if (!path.startsWith(prefix + "/")) return false;
    const entry = FILES[path.slice(prefix.length + 1)];
    if (!entry) return false;
    let body: Buffer;
    try {
      body = await readFile(join(dir, entry.file));
    } catch {
      res.writeHead(503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end("the web console is not built: run `npm run build` in the psimbols folder\n");
      return true;
    }
    res.writeHead(200, { "content-type": entry.type, "content-length": body.length, ...SECURITY_HEADERS });
    res.end(body);
    return true;
  };
}
