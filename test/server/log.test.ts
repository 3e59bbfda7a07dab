/**
 * server/log.ts: a line below the logger's level is dropped before winston
 * formats it (winston runs the formats first and lets the transport drop it:
 * on a node at `--log-level error`, every resume paid for an info line no one
 * saw, docs/PERFORMANCE.md); lines at the level are written as before, from
 * children too, and a level changed later applies.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createLogger } from "../../server/log.js";

/** Runs `f` with stdout and stderr captured; returns what was written. */
function capture(f: () => void): string {
  let out = "";
  const writes = [process.stdout, process.stderr].map((s) => {
    const write = s.write;
    s.write = ((chunk: string | Uint8Array) => ((out += String(chunk)), true)) as typeof s.write;
    return () => (s.write = write);
  });
  try {
    f();
  } finally {
    for (const restore of writes) restore();
  }
  return out;
}

/** Meta whose serialisation is counted: the JSON format calls toJSON when it formats the line. */
function counted(): { meta: { toJSON(): string }; calls: () => number } {
  let n = 0;
  return { meta: { toJSON: () => (n++, "meta") }, calls: () => n };
}

test("a line below the level is not formatted, nor written; one at the level is", () => {
  const log = createLogger({ level: "warn", json: true });
  const below = counted();
  const at = counted();
  const out = capture(() => {
    log.info("below the level", { m: below.meta });
    log.child({ component: "c" }).debug("below, from a child", { m: below.meta });
    log.warn("at the level", { m: at.meta });
    log.child({ component: "child-component" }).error("from a child");
  });
  assert.is(below.calls(), 0, "formatted although below the level");
  assert.ok(at.calls() > 0);
  assert.not.match(out, /below/);
  assert.match(out, /at the level/);
  assert.match(out, /"component":"child-component"/);
});

test("a level set later applies", () => {
  const log = createLogger({ level: "error", json: true });
  const child = log.child({ component: "c" });
  log.level = "info";
  const out = capture(() => child.info("now at the level"));
  assert.match(out, /now at the level/);
});

test.run();
