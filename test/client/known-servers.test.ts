/**
 * FileKnownServers tells once when it learns a server's key (docs/CLI.md,
 * Known servers), as SSH does: on the first record of a URL only; never for a URL
 * already known, and not when a write fails.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FileKnownServers, type ServerKeyLearnt } from "../../client/node.js";
import { tempDir } from "../helpers/broker.js";

const t = suite("known servers: first use");
const A = "SHA256:" + "A".repeat(43);
const B = "SHA256:" + "B".repeat(43);

t("onLearn is called once, after the line is written, with the URL, fingerprint and file", async () => {
  const file = join(tempDir(), "sub", "known_servers");
  const seen: ServerKeyLearnt[] = [];
  const known = new FileKnownServers(file, { onLearn: (l) => seen.push({ ...l, fingerprint: `${l.fingerprint} ${readFileSync(file, "utf8").trim()}` }) });
  await known.set("ws://a/", A);
  assert.equal(seen, [{ url: "ws://a/", fingerprint: `${A} ws://a/ ${A}`, path: file }]);
  await known.set("ws://a/", A); // already known: nothing to tell
  assert.is(seen.length, 1);
  await known.set("ws://a/", B); // a deliberate replacement is not a first use
  assert.is(seen.length, 1);
  assert.is(await known.get("ws://a/"), B);
  await known.set("ws://b/", B);
  assert.equal(seen.map((s) => s.url), ["ws://a/", "ws://b/"]);
});

t("a write that fails tells nothing and throws", async () => {
  const dir = tempDir();
  writeFileSync(join(dir, "file"), "not a folder");
  const seen: ServerKeyLearnt[] = [];
  const known = new FileKnownServers(join(dir, "file", "known_servers"), { onLearn: (l) => seen.push(l) }); // its folder is a file: ENOTDIR, even for root
  const failed = await known.set("ws://a/", A).then(() => false, () => true);
  assert.ok(failed);
  assert.equal(seen, []);
});

t.run();
