/**
 * What a newcomer sees in the repository: key files made by following the
 * README at the top level are ignored by git, committed fixtures elsewhere
 * are not hidden, tarballs of `npm run pack` are ignored; the README says
 * near the top what "channel" means here, fits in 250 lines, sets up in two
 * commands, does not send people to the public registry, and its TypeScript
 * compiles under strict; every relative link of the README and the guides
 * leads to a file (and heading) that exists; every guide has its contents.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { ROOT } from "../helpers/broker.js";
import { skip } from "../helpers/skip.js";

const inGit = spawnSync("git", ["rev-parse", "--git-dir"], { cwd: ROOT, stdio: "ignore" }).status === 0;
const t = suite("repository");

/** Whether git would ignore `path` (it need not exist). */
const ignored = (path: string) => spawnSync("git", ["check-ignore", "--no-index", "-q", path], { cwd: ROOT }).status === 0;

if (inGit) {
  t("the README's key files at the top level are ignored, .pem files in folders are not", () => {
    for (const f of ["k.pem", "k.pub.pem", "alice.pem", "alice.pub.pem", "operator.pem", "me.pem"]) assert.ok(ignored(f), `${f} is not ignored`);
    for (const f of ["test/vectors/k.pem", "deploy/server-key.pem", "examples/k.pem"]) assert.not.ok(ignored(f), `${f} is ignored`);
    assert.ok(ignored(".psimbols/cluster/wrap-key"), "a local cluster directory in the repository is not ignored");
    assert.ok(ignored("psimbols-client-0.1.0.tgz") && ignored("psimbols-0.1.0.tgz"), "the tarballs of npm run pack are not ignored");
  });
} else {
  skip(t, "the README's key files at the top level are ignored, .pem files in folders are not", "not a git checkout, or git is absent");
}

t("the README says what \"channel\" means before its first section", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const intro = readme.slice(0, readme.indexOf("\n## "));
  assert.match(intro, /"Channel" here means an encrypted session[\s\S]*not a pub\/sub topic/);
});

const readme = readFileSync(join(ROOT, "README.md"), "utf8");
const guides = readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md") && !["PROTOCOL.md", "BACKEND.md"].includes(f));

t("the README is at most 250 lines and indexes every guide in docs/", () => {
  const lines = readme.split("\n").length - (readme.endsWith("\n") ? 1 : 0);
  assert.ok(lines <= 250, `README.md has ${lines} lines`);
  for (const g of [...guides, "PROTOCOL.md", "BACKEND.md"]) assert.match(readme, `](docs/${g})`, `the README's index lacks docs/${g}`);
});

t("the README's Set up is two commands, says which never returns and how long the tests take", () => {
  const setup = readme.slice(readme.indexOf("### Set up"), readme.indexOf("### ", readme.indexOf("### Set up") + 1));
  const block = setup.match(/```sh\n([\s\S]*?)```/)?.[1] ?? "";
  assert.equal(block.trim().split("\n"), ["npm install && npm start", "bin/test_psimbols.sh"]);
  assert.match(setup, "in another shell");
  assert.match(setup, /never returns/);
  assert.match(setup, /about \d+ minutes/);
});

t("the README does not tell people to install from the public registry", () => {
  assert.not.match(readme, /npm install psimbols\b/);
  assert.match(readme, /not on the public npm registry/);
});

t("every guide in docs/ has a table of contents whose links are its own headings", () => {
  for (const g of guides) {
    const text = readFileSync(join(ROOT, "docs", g), "utf8");
    const contents = text.slice(text.indexOf("## Contents"), text.indexOf("\n## ", text.indexOf("## Contents") + 1));
    assert.ok(text.includes("## Contents"), `docs/${g} has no "## Contents"`);
    const listed = [...contents.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]);
    const headings = anchors(text).filter((a) => a !== "contents");
    const top = [...text.matchAll(/^## (.+)$/gm)].map((m) => slug(m[1]!)).filter((a) => a !== "contents");
    assert.equal(listed, top, `docs/${g}: the contents do not list its sections in order`);
    for (const a of listed) assert.ok(headings.includes(a!), `docs/${g}: no heading for #${a}`);
  }
});

/** GitHub's anchor of a heading. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\- ]/gu, "").replace(/ /g, "-");
}
function anchors(markdown: string): string[] {
  return [...markdown.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1]!));
}

t("every relative link in the README, the guides, CHANGELOG.md and examples/README.md leads to a file and heading that exist", () => {
  const files = ["README.md", "CHANGELOG.md", "examples/README.md", ...guides.map((g) => `docs/${g}`)];
  const broken: string[] = [];
  for (const f of files) {
    const text = readFileSync(join(ROOT, f), "utf8").replace(/```[\s\S]*?```/g, "");
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const link = m[1]!;
      if (/^[a-z]+:/.test(link)) continue; // https:, mailto:
      const [path, anchor] = link.split("#") as [string, string | undefined];
      const target = path === "" ? join(ROOT, f) : join(ROOT, dirname(f), path);
      if (!existsSync(target)) {
        broken.push(`${f}: ${link} (no ${relative(ROOT, target)})`);
        continue;
      }
      if (anchor && target.endsWith(".md") && !anchors(readFileSync(target, "utf8")).includes(anchor)) broken.push(`${f}: ${link} (no heading #${anchor})`);
    }
  }
  assert.equal(broken, []);
});

t("the README's TypeScript compiles under strict against the built packages", () => {
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 1, "the README has no TypeScript block");
  // under dist/, so "psimbols-client/…" (the workspace link) and "psimbols/server" (the package's own name) resolve as in a user's project
  const dir = join(ROOT, "dist", "readme-snippets");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
  const names = blocks.map((b, i) => (writeFileSync(join(dir, `snippet-${i}.ts`), `${b}\nexport {};\n`), `snippet-${i}.ts`));
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({ compilerOptions: { module: "nodenext", target: "es2022", strict: true, noEmit: true, skipLibCheck: true, noUncheckedIndexedAccess: true, types: ["node"], typeRoots: [join(ROOT, "node_modules", "@types")] }, files: names }),
  );
  const r = spawnSync(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", join(dir, "tsconfig.json")], { encoding: "utf8" });
  assert.is(r.status, 0, r.stdout + r.stderr);
});

t.run();
