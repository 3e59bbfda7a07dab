#!/usr/bin/env node
// Builds the browser bundles with esbuild: ESM, one file each,
// platform browser, no Node polyfills.
//   dist/browser/psimbols.js   the client library ("psimbols/browser"), from client/browser.ts
//   dist/browser/xwing.js      the X-Wing KEM (PROTOCOL.md §5.3.1), self-contained; psimbols.js imports it on first use only
//   dist/browser/psimbols.d.ts its types (re-exports dist/client/browser.d.ts, written by tsc)
//   dist/browser/console.js    the web console, from client/console/console.ts
//   dist/browser/console.html, console.css
// Fails (exit 1) when a bundle would pull in a Node module.
import { build } from "esbuild";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = `${root}dist/browser/`;

// @hpke/common falls back to `await import("crypto")` only when globalThis.crypto
// is missing (Node ≤ 18), which never happens in a browser. Resolve that import
// to a stub that yields no WebCrypto, so the bundle holds no bare Node import
// and never polyfills one; any other Node import is a build error.
const noNodeCrypto = {
  name: "no-node-crypto",
  setup(b) {
    b.onResolve({ filter: /^(node:)?crypto$/ }, (a) => ({ path: a.path, namespace: "psimbols-stub" }));
    b.onLoad({ filter: /.*/, namespace: "psimbols-stub" }, () => ({
      contents: "export const webcrypto = undefined; export default undefined;",
      loader: "js",
    }));
  },
};

// The console never offers X-Wing (its handshake uses X25519 or P-256, client/browser.ts
// detectAlgorithms), and the broker serves a fixed list of its files (server/console.ts):
// X-Wing's module is a stub there that refuses to load, so console.js does not grow.
const noXWing = {
  name: "no-x-wing",
  setup(b) {
    b.onResolve({ filter: /^@hpke\/hybridkem-x-wing$/ }, (a) => ({ path: a.path, namespace: "psimbols-no-x-wing" }));
    b.onLoad({ filter: /.*/, namespace: "psimbols-no-x-wing" }, () => ({
      contents: 'throw new Error("X-Wing is not part of the web console bundle");',
      loader: "js",
    }));
  },
};

// In psimbols.js, shared/hpke.ts's `import("@hpke/hybridkem-x-wing")` becomes `import("./xwing.js")`,
// a bundle of its own: a client that never asks for X-Wing never fetches ML-KEM-768, a JavaScript
// X25519 and SHA-3, and psimbols.js does not grow. (esbuild's code splitting would do it too, but
// puts @hpke/common's X-Wing-only modules in a chunk every client loads: +24 KB.)
const XWING_BUNDLE = "./xwing.js";
const lazyXWing = {
  name: "lazy-x-wing",
  setup(b) {
    b.onResolve({ filter: /^@hpke\/hybridkem-x-wing$/ }, () => ({ path: XWING_BUNDLE, external: true }));
  },
};

const common = {
  absWorkingDir: root,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022", "chrome111", "firefox130", "safari17"],
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
  metafile: true,
  plugins: [noNodeCrypto],
};

await mkdir(out, { recursive: true });
try {
  const results = await Promise.all([
    build({ ...common, entryPoints: ["client/browser.ts"], outfile: `${out}psimbols.js`, plugins: [noNodeCrypto, lazyXWing] }),
    build({ ...common, entryPoints: ["node_modules/@hpke/hybridkem-x-wing/esm/mod.js"], outfile: `${out}xwing.js` }),
    build({ ...common, entryPoints: ["client/console/console.ts"], outfile: `${out}console.js`, minify: true, plugins: [noNodeCrypto, noXWing] }),
  ]);
  for (const r of results) {
    for (const [file, meta] of Object.entries(r.metafile.outputs)) {
      const bare = (meta.imports ?? []).filter((i) => i.external && !(file.endsWith("/psimbols.js") && i.path === XWING_BUNDLE && i.kind === "dynamic-import"));
      if (bare.length > 0) throw new Error(`${file} imports ${bare.map((i) => i.path).join(", ")}: a browser bundle must be self-contained`);
    }
  }
} catch (e) {
  console.error(`error: browser build failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}
await writeFile(`${out}psimbols.d.ts`, 'export * from "../client/browser.js";\n');
await copyFile(`${root}client/console/console.html`, `${out}console.html`);
await copyFile(`${root}client/console/console.css`, `${out}console.css`);
