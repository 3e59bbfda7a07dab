#!/usr/bin/env node
// Entry point of the `psimbols` command; the code lives in cli/main.ts (built to dist/).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const cli = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(cli))) {
  console.error("error: psimbols is not built yet\nhint: run `npm install` (or `npm run build`) in the psimbols folder");
  process.exit(1);
}
const { main } = await import(cli.href);
await main(process.argv);
