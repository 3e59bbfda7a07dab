/**
 * The package as others install it (issue 11, item 11): `npm pack` makes a
 * tarball holding only what a user needs; installed into a fresh project
 * (its dependencies from the npm cache, --prefer-offline), "psimbols/node",
 * "psimbols/server" and "psimbols/browser" import and work, TypeScript
 * (NodeNext) resolves their types, and `npx psimbols --help` runs.
 * Packs the dist/ the test script built (--ignore-scripts: no rebuild).
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, tempDir } from "../helpers/broker.js";
import { skip } from "../helpers/skip.js";

const npmPresent = spawnSync("npm", ["--version"], { stdio: "ignore" }).status === 0;
const t = suite("npm pack");
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

/** Runs a command to completion (bounded), collecting its output. */
function run(cmd: string, args: string[], cwd: string, timeoutMs = 60_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd, env: { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    p.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.once("exit", (code) => (clearTimeout(timer), resolve({ code, out, err })));
  });
}

let files: string[] = [];
let project = "";

if (npmPresent) {
  t.before(async () => {
    const dest = tempDir("psimbols-pack-");
    const packed = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", dest], ROOT);
    assert.is(packed.code, 0, packed.err);
    files = (JSON.parse(packed.out) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    project = tempDir("psimbols-consumer-");
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
    const installed = await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", join(dest, `psimbols-${version}.tgz`)], project, 120_000);
    assert.is(installed.code, 0, `npm install of the tarball failed:\n${installed.err}`);
  });

  t("the tarball holds the built library, the CLI and the spec, and no tests, bench or source maps", () => {
    for (const f of ["bin/psimbols.js", "dist/cli/main.js", "dist/client/node.js", "dist/client/node.d.ts", "dist/server/index.js", "dist/node/key-files.js", "dist/browser/psimbols.js", "dist/browser/psimbols.d.ts", "dist/browser/console.html", "docs/PROTOCOL.md", "docs/BACKEND.md", "README.md", "package.json"]) {
      assert.ok(files.includes(f), `${f} missing from the tarball`);
    }
    const unwanted = files.filter((f) => /^(dist\/)?(test|bench|examples)\/|\.map$|\.ts$(?<!\.d\.ts)|tsbuildinfo|^bin\/test_|^deploy\//.test(f));
    assert.equal(unwanted, [], `unwanted files in the tarball: ${unwanted.join(", ")}`);
  });

  t("psimbols/server, psimbols/node and psimbols/browser import from the installed package and talk to each other", async () => {
    writeFileSync(
      join(project, "smoke.mjs"),
      `import { Broker, createLogger, generateKeyFile as serverKeyFile } from "psimbols/server";
import { connect, generateKeyFile } from "psimbols/node";
import * as browser from "psimbols/browser";
if (typeof browser.connect !== "function" || typeof browser.loadOrCreateKey !== "function") throw new Error("psimbols/browser lacks connect");
const serverKey = await serverKeyFile("Ed25519", "server.pem");
const broker = await Broker.start({ serverKey, config: { port: 0 }, logger: createLogger({ level: "error" }) });
broker.handle("sum", (d) => d.reduce((a, b) => a + b, 0));
const key = await generateKeyFile("Ed25519", "me.pem");
const client = await connect(\`ws://127.0.0.1:\${broker.port}/\`, { key, serverKey: serverKey.public.fingerprint, reconnect: false });
console.log(JSON.stringify(await client.request("sum", [1, 2, 3])));
await client.close();
await broker.close();
`,
    );
    const r = await run(process.execPath, ["smoke.mjs"], project);
    assert.is(r.code, 0, r.err);
    assert.is(r.out.trim(), "6");
  });

  t("TypeScript (NodeNext) resolves the types of every entry point", async () => {
    writeFileSync(
      join(project, "check.ts"),
      `import { connect, type Client } from "psimbols/node";
import { Broker } from "psimbols/server";
import { connect as browserConnect } from "psimbols/browser";
import { PsimbolsError } from "psimbols";
export async function f(url: string): Promise<Client> {
  void Broker; void browserConnect; void PsimbolsError;
  return connect(url, { key: "me.pem" });
}
// must fail to compile if the types were "any": a number is not a Client
// @ts-expect-error
export const wrong: Client = 1;
`,
    );
    writeFileSync(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, skipLibCheck: true, types: ["node"], typeRoots: [join(ROOT, "node_modules", "@types")] },
        files: ["check.ts"],
      }),
    );
    const r = await run(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], project);
    assert.is(r.code, 0, r.out + r.err);
  });

  t("npx psimbols --help and --version run the installed CLI", async () => {
    const help = await run("npx", ["--offline", "psimbols", "--help"], project);
    assert.is(help.code, 0, help.err);
    for (const cmd of ["serve", "keygen", "call", "keys"]) assert.match(help.out, new RegExp(`\\b${cmd}\\b`));
    const v = await run("npx", ["--offline", "psimbols", "--version"], project);
    assert.is(v.out.trim(), version);
  });
} else {
  skip(t, "the tarball's files, its entry points, their types and its CLI", "npm is not on PATH");
}

t.run();
