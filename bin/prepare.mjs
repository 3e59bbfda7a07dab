#!/usr/bin/env node
// The `prepare` script: builds dist/ (tsc, then the browser bundles) after
// `npm install` in a clone and before `npm pack`. Under `npx psimbols …` /
// `npm exec` inside the repository, npm links the project into its npx cache
// and runs `prepare` again (about 35 s of tsc, silently); there a built tree
// is left alone, so every command of the README and docs/ starts at once.
// Run `npm run build` to rebuild on purpose.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const built = existsSync(`${root}dist/cli/main.js`) && existsSync(`${root}dist/browser/psimbols.js`);
if (process.env.npm_command === "exec") {
  if (built) process.exit(0);
  console.error("psimbols: not built yet, building once (about half a minute) ...");
}
let tsc;
try {
  tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
} catch {
  console.error("error: psimbols cannot be built: its dev dependencies are not installed\nhint: run `npm install` in the psimbols folder");
  process.exit(1);
}
for (const args of [[tsc, "-p", "tsconfig.json"], [`${root}bin/build-browser.mjs`]]) {
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
