#!/usr/bin/env node
// Builds the browser bundles with esbuild (issue 6): ESM, one file each,
// platform browser, no Node polyfills.
//   dist/browser/psimbols.js   the client library ("psimbols/browser"), from client/browser.ts
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
    build({ ...common, entryPoints: ["client/browser.ts"], outfile: `${out}psimbols.js` }),
    build({ ...common, entryPoints: ["client/console/console.ts"], outfile: `${out}console.js`, minify: true }),
  ]);
  for (const r of results) {
    for (const [file, meta] of Object.entries(r.metafile.outputs)) {
      const bare = (meta.imports ?? []).filter((i) => i.external);
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
