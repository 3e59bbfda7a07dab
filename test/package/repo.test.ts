/**
 * What a newcomer sees in the repository (issue 11, items 9 and 10): key
 * files made by following the README at the top level are ignored by git,
 * committed fixtures elsewhere are not hidden; the README says near the top
 * what "channel" means here.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
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
    assert.ok(ignored(".psimbols/cluster/wrap-key"), "the README's local cluster directory is not ignored");
  });
} else {
  skip(t, "the README's key files at the top level are ignored, .pem files in folders are not", "not a git checkout, or git is absent");
}

t("the README says what \"channel\" means before its first section", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const intro = readme.slice(0, readme.indexOf("\n## "));
  assert.match(intro, /"Channel" here means an encrypted session[\s\S]*not a pub\/sub topic/);
});

t.run();
