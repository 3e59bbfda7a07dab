#!/usr/bin/env node
// Assembles the two npm packages from the built tree (dist/, from `npm run build`)
// and packs each into a tarball (DESIGN.md §8, §9: packaging is assembled from the
// top-level folders, it does not move them):
//
//   psimbols-client  the client only: dist/client (Node and browser-safe core),
//                    dist/shared, dist/node, the browser bundles; its dependencies
//                    are the client's (packages/client/package.json), sodium-native optional.
//   psimbols         the broker, its server API and the CLI: dist/server, dist/cli,
//                    the console bundle, bin/psimbols.js, the spec; it depends on
//                    psimbols-client, and its imports of ../shared, ../node and
//                    ../client are rewritten to "psimbols-client/internal/…", so one
//                    copy of the protocol code is installed.
//
// Usage: node bin/pack.mjs [--dest DIR] [--stage-only]
//   --dest DIR     where the tarballs go (default: the repository folder; *.tgz is git-ignored)
//   --stage-only   assemble dist/packages/<name>/ and stop (`npm publish --dry-run` runs there)
// Prints the tarball paths (or the staged folders), one a line.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const args = process.argv.slice(2);
const destArg = args.indexOf("--dest");
const dest = resolve(destArg >= 0 && args[destArg + 1] ? args[destArg + 1] : root);
const stageOnly = args.includes("--stage-only");

function fail(message, hint) {
  console.error(`error: ${message}${hint ? `\nhint: ${hint}` : ""}`);
  process.exit(1);
}

for (const f of ["dist/client/node.js", "dist/server/index.js", "dist/cli/main.js", "dist/browser/psimbols.js", "dist/browser/console.js"]) {
  if (!existsSync(join(root, f))) fail(`${f} is missing: psimbols is not built`, "run `npm run build` first");
}

const rootPkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const clientPkg = JSON.parse(readFileSync(join(root, "packages/client/package.json"), "utf8"));
if (clientPkg.version !== rootPkg.version) fail(`packages/client/package.json has version ${clientPkg.version}, package.json ${rootPkg.version}`, "both packages share one version (CHANGELOG.md)");

const stage = join(root, "dist/packages");
rmSync(stage, { recursive: true, force: true });

/** Copies the built .js and .d.ts files of `from` (a folder under dist/) into `to`, skipping `skip` (folder names). */
function copyBuilt(from, to, skip = []) {
  for (const name of readdirSync(from)) {
    const src = join(from, name);
    if (statSync(src).isDirectory()) {
      if (!skip.includes(name)) copyBuilt(src, join(to, name), skip);
    } else if (/\.(d\.ts|js)$/.test(name)) {
      mkdirSync(to, { recursive: true });
      cpSync(src, join(to, name));
    }
  }
}

// ------------------------------------------------------------------ psimbols-client
const client = join(stage, clientPkg.name);
for (const dir of ["client", "shared", "node"]) copyBuilt(join(root, "dist", dir), join(client, "dist", dir), ["console"]);
for (const f of ["psimbols.js", "psimbols.d.ts", "xwing.js"]) {
  mkdirSync(join(client, "dist/browser"), { recursive: true });
  cpSync(join(root, "dist/browser", f), join(client, "dist/browser", f));
}
writeFileSync(join(client, "package.json"), `${JSON.stringify(clientPkg, null, 2)}\n`);
cpSync(join(root, "packages/client/README.md"), join(client, "README.md"));
cpSync(join(root, "CHANGELOG.md"), join(client, "CHANGELOG.md"));

// ------------------------------------------------------------------ psimbols (broker and CLI)
const server = join(stage, rootPkg.name);
copyBuilt(join(root, "dist/server"), join(server, "dist/server"));
copyBuilt(join(root, "dist/cli"), join(server, "dist/cli"));
mkdirSync(join(server, "dist/browser"), { recursive: true });
for (const f of ["console.html", "console.js", "console.css"]) cpSync(join(root, "dist/browser", f), join(server, "dist/browser", f));
for (const f of ["bin/psimbols.js", "README.md", "CHANGELOG.md", "SECURITY.md", "docs/PROTOCOL.md", "docs/BACKEND.md"]) {
  mkdirSync(dirname(join(server, f)), { recursive: true });
  cpSync(join(root, f), join(server, f));
}

// Relative imports that leave dist/server or dist/cli for a folder psimbols-client ships become package imports.
const CLIENT_DIRS = ["shared", "node", "client"];
const SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}\/[^"']+)\2/g;
function rewrite(dir) {
  for (const name of readdirSync(dir)) {
    const file = join(dir, name);
    if (statSync(file).isDirectory()) {
      rewrite(file);
      continue;
    }
    const text = readFileSync(file, "utf8");
    const out = text.replace(SPECIFIER, (all, lead, q, spec) => {
      const target = relative(join(server, "dist"), resolve(dirname(file), spec)).split("\\").join("/");
      const top = target.split("/")[0];
      if (!CLIENT_DIRS.includes(top)) return all;
      return `${lead}${q}${clientPkg.name}/internal/${target.replace(/\.js$/, "")}${q}`;
    });
    if (out !== text) writeFileSync(file, out);
  }
}
rewrite(join(server, "dist/server"));
rewrite(join(server, "dist/cli"));

/** The packages the staged broker imports (bare specifiers, not node: built-ins). */
function importedPackages(dir, found = new Set()) {
  for (const name of readdirSync(dir)) {
    const file = join(dir, name);
    if (statSync(file).isDirectory()) importedPackages(file, found);
    else if (name.endsWith(".js")) {
      for (const m of readFileSync(file, "utf8").matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^."'][^"']*)["']/g)) {
        const spec = m[1];
        if (spec.startsWith("node:")) continue;
        found.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]);
      }
    }
  }
  return found;
}
// The client's optional X-Wing engine (@hpke/hybridkem-x-wing, mlkem) is a dependency of the broker:
// a broker always runs every KEM it offers, even installed with --omit=optional.
const serverDeps = { "@hpke/hybridkem-x-wing": rootPkg.dependencies["@hpke/hybridkem-x-wing"], mlkem: rootPkg.dependencies.mlkem };
for (const name of importedPackages(join(server, "dist/server"), importedPackages(join(server, "dist/cli")))) {
  if (name === clientPkg.name) serverDeps[name] = clientPkg.version;
  else if (rootPkg.dependencies[name]) serverDeps[name] = rootPkg.dependencies[name];
  else fail(`dist/server or dist/cli imports "${name}", which is not a dependency in package.json`);
}
const serverPkg = {
  name: rootPkg.name,
  version: rootPkg.version,
  description: rootPkg.description,
  type: "module",
  license: rootPkg.license,
  engines: clientPkg.engines,
  bin: rootPkg.bin,
  exports: {
    ".": { types: "./dist/server/index.d.ts", default: "./dist/server/index.js" },
    "./server": { types: "./dist/server/index.d.ts", default: "./dist/server/index.js" },
    "./package.json": "./package.json",
  },
  types: "./dist/server/index.d.ts",
  typesVersions: { "*": { server: ["./dist/server/index.d.ts"] } },
  dependencies: Object.fromEntries(Object.entries(serverDeps).sort(([a], [b]) => a.localeCompare(b))),
};
writeFileSync(join(server, "package.json"), `${JSON.stringify(serverPkg, null, 2)}\n`);

if (stageOnly) {
  console.log(client);
  console.log(server);
  process.exit(0);
}
mkdirSync(dest, { recursive: true });
for (const dir of [client, server]) {
  const r = spawnSync("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", dest], { cwd: dir, encoding: "utf8", env: { ...process.env, npm_config_update_notifier: "false" } });
  if (r.status !== 0) fail(`npm pack in ${relative(root, dir)} failed:\n${r.stderr}`);
  console.log(join(dest, JSON.parse(r.stdout)[0].filename));
}
