/**
 * `npx psimbols …` inside the repository (README, Quick start): npm links the
 * project into its npx cache and runs its `prepare` script; with dist/ built
 * that must be a no-op, so the command starts at once and never rebuilds
 * (bin/prepare.mjs). A fresh npx cache stands for a newcomer's first run.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { ROOT, tempDir } from "../helpers/broker.js";
import { skip } from "../helpers/skip.js";

const npmPresent = spawnSync("npm", ["--version"], { stdio: "ignore" }).status === 0;
const t = suite("npx inside the repository");
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

function npx(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn("npx", args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    p.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    p.once("exit", (code) => (clearTimeout(timer), resolve({ code, out, err })));
  });
}

if (npmPresent) {
  t("a first `npx psimbols --version` with an empty npx cache runs the built CLI and rebuilds nothing", async () => {
    const built = join(ROOT, "dist", "cli", "main.js");
    const before = statSync(built).mtimeMs;
    const r = await npx(["--prefer-offline", "psimbols", "--version"], { npm_config_cache: tempDir("psimbols-npx-cache-"), npm_config_update_notifier: "false" });
    assert.is(r.code, 0, r.err);
    assert.is(r.out.trim(), version);
    assert.not.match(r.err, /building/);
    assert.is(statSync(built).mtimeMs, before, "dist/ was rebuilt behind the user's back");
  });

} else {
  skip(t, "a first `npx psimbols --version` runs the built CLI and rebuilds nothing", "npm is not on PATH");
}

t.run();
