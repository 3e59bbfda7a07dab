/**
 * The two packages as others install them (DESIGN.md §8 and §9): bin/pack.mjs
 * assembles `psimbols-client` and `psimbols` from the dist/ the test script
 * built and packs both; each is installed from the tarballs into a fresh
 * project, its dependencies from the npm cache where npm ci left them and the
 * registry otherwise (--prefer-offline: npm ci caches tarballs but not the
 * registry's package documents an install asks for, so --offline failed on a
 * fresh machine):
 * - the client alone, without optional dependencies, takes at most 3 MB of
 *   node_modules and brings none of the server's dependencies;
 * - a CommonJS consumer (`require`), an ES module consumer, and TypeScript
 *   consumers (`tsc --init`'s options with module nodenext, and module
 *   commonjs) compile and connect to a broker started from the installed
 *   `psimbols` package;
 * - `npm publish --dry-run` passes for each tarball, and neither ships a
 *   lifecycle script.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn, spawnSync } from "node:child_process";
import { lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, type RunningBroker, startBroker, tempDir } from "../helpers/broker.js";
import { skip } from "../helpers/skip.js";

const npmPresent = spawnSync("npm", ["--version"], { stdio: "ignore" }).status === 0;
const t = suite("npm packages");
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");
const TYPE_ROOTS = [join(ROOT, "node_modules", "@types")];
/** The target of the client's install size, without optional dependencies (bytes of files). */
const CLIENT_MAX_BYTES = 3 * 1024 * 1024;

type Run = { code: number | null; out: string; err: string };
/** Runs a command to completion (bounded), collecting its output. */
function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd, env: { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    p.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.once("exit", (code) => (clearTimeout(timer), resolve({ code, out, err })));
  });
}

/** Bytes of the files under `dir` (symlinks not followed): what the install puts on disk, whatever the block size. */
function treeBytes(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const s = lstatSync(p);
    n += s.isDirectory() ? treeBytes(p) : s.size;
  }
  return n;
}

/** A fresh project with `tarballs` installed (dependencies from the npm cache first, then the registry). */
async function project(prefix: string, tarballs: string[], flags: string[] = []): Promise<{ dir: string; install: Run }> {
  const dir = tempDir(prefix);
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true }));
  const install = await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", ...flags, ...tarballs], dir);
  assert.is(install.code, 0, `npm install of ${tarballs.join(", ")} failed:\n${install.err}`);
  return { dir, install };
}

/** Writes `files` (path → text) under `dir`. */
function write(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
}

let tarballs: { client: string; server: string };
let clientFiles: string[] = [];
let serverFiles: string[] = [];
let clientOnly: { dir: string; install: Run };
let app: { dir: string; install: Run };
let broker: RunningBroker;
let env: Record<string, string>;

/** The files of a tarball, as `npm pack` would list them (tar's listing, without the "package/" prefix). */
function listTarball(file: string): string[] {
  const r = spawnSync("tar", ["-tzf", file], { encoding: "utf8" });
  assert.is(r.status, 0, r.stderr);
  return r.stdout.split("\n").filter(Boolean).map((f) => f.replace(/^package\//, ""));
}

if (npmPresent) {
  // uvu reports a failing before hook only as every test failing, without its error: say it here.
  t.before(() => setUp().catch((e: unknown) => (console.error("npm packages: setting up failed:", e), Promise.reject(e))));
  async function setUp(): Promise<void> {
    const dest = tempDir("psimbols-pack-");
    const packed = await run(process.execPath, [join(ROOT, "bin", "pack.mjs"), "--dest", dest], ROOT);
    assert.is(packed.code, 0, packed.err);
    const [client, server] = packed.out.trim().split("\n");
    assert.is(client, join(dest, `psimbols-client-${version}.tgz`));
    assert.is(server, join(dest, `psimbols-${version}.tgz`));
    tarballs = { client: client!, server: server! };
    clientFiles = listTarball(tarballs.client);
    serverFiles = listTarball(tarballs.server);
    clientOnly = await project("psimbols-client-only-", [tarballs.client], ["--omit=optional"]);
    app = await project("psimbols-app-", [tarballs.client, tarballs.server]);
    broker = await startBroker([], { cli: join(app.dir, "node_modules", "psimbols", "bin", "psimbols.js") });
    env = { URL: broker.url, FP: broker.fingerprint };
  }
  t.after(async () => {
    await broker?.stop();
  });

  t("the client tarball holds the client, the protocol code and the browser bundles, and nothing of the server", () => {
    for (const f of ["package.json", "README.md", "CHANGELOG.md", "dist/client/index.js", "dist/client/node.js", "dist/client/node.d.ts", "dist/shared/frames.js", "dist/node/engines.js", "dist/browser/psimbols.js", "dist/browser/psimbols.d.ts", "dist/browser/xwing.js"]) {
      assert.ok(clientFiles.includes(f), `${f} missing from the client tarball`);
    }
    const unwanted = clientFiles.filter((f) => /^dist\/(server|cli|test|bench)\/|^dist\/client\/console\/|console\.|\.map$|\.ts$(?<!\.d\.ts)|tsbuildinfo|^bin\//.test(f));
    assert.equal(unwanted, [], `unwanted files in the client tarball: ${unwanted.join(", ")}`);
  });

  t("the psimbols tarball holds the broker, the CLI, the console and the spec, and no copy of the client's code", () => {
    for (const f of ["package.json", "bin/psimbols.js", "dist/cli/main.js", "dist/server/index.js", "dist/server/index.d.ts", "dist/browser/console.html", "dist/browser/console.js", "docs/PROTOCOL.md", "docs/BACKEND.md", "SECURITY.md", "README.md", "CHANGELOG.md"]) {
      assert.ok(serverFiles.includes(f), `${f} missing from the psimbols tarball`);
    }
    const unwanted = serverFiles.filter((f) => /^dist\/(shared|node|client|test|bench)\/|^dist\/browser\/psimbols|\.map$|\.ts$(?<!\.d\.ts)|tsbuildinfo|^bin\/(?!psimbols\.js)|^deploy\//.test(f));
    assert.equal(unwanted, [], `unwanted files in the psimbols tarball: ${unwanted.join(", ")}`);
  });

  t("neither package ships a lifecycle script, and npm prints no warning installing them", () => {
    for (const name of ["psimbols-client", "psimbols"]) {
      const pkg = JSON.parse(readFileSync(join(app.dir, "node_modules", name, "package.json"), "utf8")) as { scripts?: unknown; version: string };
      assert.is(pkg.scripts, undefined, `${name} ships scripts: ${JSON.stringify(pkg.scripts)}`);
      assert.is(pkg.version, version);
    }
    assert.not.match(app.install.err, /npm warn/i, app.install.err);
  });

  t("the client alone, without optional dependencies, installs in at most 3 MB and brings no server dependency", () => {
    const modules = join(clientOnly.dir, "node_modules");
    const installed = readdirSync(modules).filter((n) => !n.startsWith(".")).flatMap((n) => (n.startsWith("@") ? readdirSync(join(modules, n)).map((s) => `${n}/${s}`) : [n]));
    assert.equal(installed.sort(), ["@hpke/common", "@hpke/core", "psimbols-client", "ws"]);
    const bytes = treeBytes(modules);
    console.log(`  client install without optional dependencies: ${bytes} bytes in node_modules`);
    assert.ok(bytes <= CLIENT_MAX_BYTES, `${bytes} bytes > ${CLIENT_MAX_BYTES}`);
  });

  t("the client without optional dependencies connects, and X-Wing says it needs an optional dependency", async () => {
    write(clientOnly.dir, {
      "lean.mjs": `import { connect, generateSigningKey, ErrorCode, PsimbolsError } from "psimbols-client/node";
const key = await generateSigningKey();
const client = await connect(process.env.URL, { key, serverKey: process.env.FP, reconnect: false });
const answer = await client.request("echo", { lean: true });
await client.close();
let xwing = "connected";
try {
  (await connect(process.env.URL, { key, serverKey: process.env.FP, reconnect: false, kem: "X-Wing" })).close();
} catch (e) {
  xwing = e instanceof PsimbolsError ? e.code + ": " + e.message : String(e);
}
console.log(JSON.stringify({ answer, xwing, unsupported: ErrorCode.unsupported }));
`,
    });
    const r = await run(process.execPath, ["lean.mjs"], clientOnly.dir, env);
    assert.is(r.code, 0, r.err);
    const out = JSON.parse(r.out) as { answer: unknown; xwing: string };
    assert.equal(out.answer, { lean: true });
    assert.match(out.xwing, /^unsupported: .*optional dependency/);
  });

  t("an ES module consumer: a broker from psimbols/server, a client from psimbols-client/node, one PsimbolsError class", async () => {
    write(app.dir, {
      "esm.mjs": `import { Broker, createLogger, generateKeyFile as serverKeyFile } from "psimbols/server";
import { connect, generateKeyFile } from "psimbols-client/node";
import { PsimbolsError } from "psimbols-client";
import * as browser from "psimbols-client/browser";
if (typeof browser.connect !== "function" || typeof browser.loadOrCreateKey !== "function") throw new Error("psimbols-client/browser lacks connect");
const serverKey = await serverKeyFile("Ed25519", "server.pem");
const broker = await Broker.start({ serverKey, config: { port: 0 }, logger: createLogger({ level: "error" }) });
broker.handle("sum", (d) => d.reduce((a, b) => a + b, 0));
const key = await generateKeyFile("Ed25519", "me.pem");
const client = await connect(\`ws://127.0.0.1:\${broker.port}/\`, { key, serverKey: serverKey.public.fingerprint, reconnect: false });
const sum = await client.request("sum", [1, 2, 3]);
const missing = await client.request("no-such-op").catch((e) => e);
if (!(missing instanceof PsimbolsError) || missing.code !== "not_found") throw new Error("expected a PsimbolsError not_found, got " + missing);
console.log(JSON.stringify(sum));
await client.close();
await broker.close();
`,
    });
    const r = await run(process.execPath, ["esm.mjs"], app.dir);
    assert.is(r.code, 0, r.err);
    assert.is(r.out.trim(), "6");
  });

  t("a CommonJS consumer require()s psimbols-client/node and connects", async () => {
    write(app.dir, {
      "cjs.cjs": `const { connect, generateSigningKey, ErrorCode, PsimbolsError } = require("psimbols-client/node");
(async () => {
  const client = await connect(process.env.URL, { key: await generateSigningKey(), serverKey: process.env.FP, reconnect: false });
  const answer = await client.request("echo", { from: "cjs" });
  const missing = await client.request("no-such-op").catch((e) => e);
  if (!(missing instanceof PsimbolsError) || missing.code !== ErrorCode.notFound) throw new Error("expected not_found, got " + missing);
  await client.close();
  console.log(JSON.stringify(answer));
})().catch((e) => { console.error(e); process.exit(1); });
`,
    });
    const r = await run(process.execPath, ["cjs.cjs"], app.dir, env);
    assert.is(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out), { from: "cjs" });
  });

  /** TypeScript source both TypeScript consumers compile: typed answers, PsimbolsError narrowing, client.channel. */
  const tsBody = (from: string) => `  const client: Client = await connect(process.env.URL!, { key: await generateSigningKey(), serverKey: process.env.FP!, reconnect: false });
  const answer = await client.request<{ from: string }>("echo", { from: "${from}" });
  const text: string = answer.from;
  // @ts-expect-error the answer is typed: its "from" is not a number
  const wrong: number = answer.from;
  void wrong;
  let code: string = "none";
  try {
    await client.request("no-such-op");
  } catch (e) {
    if (e instanceof PsimbolsError && e.code === ErrorCode.notFound) code = e.code;
    else throw e;
  }
  const channel: string | undefined = client.channel?.id;
  await client.close();
  console.log(JSON.stringify({ text, code, channel: typeof channel }));
`;

  t("a TypeScript consumer with tsc --init's options (module nodenext, ES module) compiles and connects", async () => {
    const dir = join(app.dir, "ts-nodenext");
    write(dir, {
      "package.json": JSON.stringify({ name: "ts-nodenext", private: true, type: "module" }),
      // tsc --init (TypeScript 5.9) with Node's types added: the program reads process.env
      "tsconfig.json": JSON.stringify({
        compilerOptions: { module: "nodenext", target: "esnext", types: ["node"], typeRoots: TYPE_ROOTS, sourceMap: true, declaration: true, declarationMap: true, noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true, strict: true, jsx: "react-jsx", verbatimModuleSyntax: true, isolatedModules: true, noUncheckedSideEffectImports: true, moduleDetection: "force", skipLibCheck: true, outDir: "out" },
        files: ["consumer.ts"],
      }),
      "consumer.ts": `import { type Client, ErrorCode, PsimbolsError, connect, generateSigningKey } from "psimbols-client/node";\n${tsBody("ts-nodenext")}`,
    });
    const c = await run(process.execPath, [TSC, "-p", "tsconfig.json"], dir);
    assert.is(c.code, 0, c.out + c.err);
    const r = await run(process.execPath, ["out/consumer.js"], dir, env);
    assert.is(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out), { text: "ts-nodenext", code: "not_found", channel: "string" });
  });

  t("a TypeScript consumer with module commonjs compiles to require() calls and connects", async () => {
    const dir = join(app.dir, "ts-commonjs");
    write(dir, {
      "package.json": JSON.stringify({ name: "ts-commonjs", private: true }),
      "tsconfig.json": JSON.stringify({
        compilerOptions: { module: "commonjs", target: "es2022", strict: true, esModuleInterop: true, skipLibCheck: true, types: ["node"], typeRoots: TYPE_ROOTS, outDir: "out" },
        files: ["consumer.ts"],
      }),
      "consumer.ts": `import { type Client, ErrorCode, PsimbolsError, connect, generateSigningKey } from "psimbols-client/node";\nasync function main(): Promise<void> {\n${tsBody("ts-commonjs")}}\nmain().catch((e) => { console.error(e); process.exit(1); });\n`,
    });
    const c = await run(process.execPath, [TSC, "-p", "tsconfig.json"], dir);
    assert.is(c.code, 0, c.out + c.err);
    assert.match(readFileSync(join(dir, "out", "consumer.js"), "utf8"), /require\("psimbols-client\/node"\)/);
    const r = await run(process.execPath, ["out/consumer.js"], dir, env);
    assert.is(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out), { text: "ts-commonjs", code: "not_found", channel: "string" });
  });

  t("npm publish --dry-run passes for each tarball", async () => {
    for (const [name, file] of [["psimbols-client", tarballs.client], ["psimbols", tarballs.server]] as const) {
      const r = await run("npm", ["publish", "--dry-run", "--json", file], tempDir("psimbols-publish-"));
      assert.is(r.code, 0, `${name}: ${r.err}`);
      const report = (JSON.parse(r.out.slice(r.out.indexOf("{"))) as Record<string, { id: string; files: { path: string }[] }>)[name];
      assert.is(report?.id, `${name}@${version}`, r.out);
      assert.ok(report!.files.some((f) => f.path === "package.json"));
    }
  });

  t("npx psimbols --help and --version run the installed CLI", async () => {
    const help = await run("npx", ["--offline", "psimbols", "--help"], app.dir);
    assert.is(help.code, 0, help.err);
    for (const cmd of ["serve", "keygen", "call", "keys"]) assert.match(help.out, new RegExp(`\\b${cmd}\\b`));
    const v = await run("npx", ["--offline", "psimbols", "--version"], app.dir);
    assert.is(v.out.trim(), version);
  });
} else {
  skip(t, "the tarball's files, its entry points, their types and its CLI", "npm is not on PATH");
}

t.run();
