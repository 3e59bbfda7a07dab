/**
 * examples/ must keep running as the README and docs/CLIENT.md say: each
 * example is run as a newcomer runs it (`node examples/…`, importing
 * "psimbols-client/node" through the workspace link and "psimbols/server"
 * through the package's self-reference),
 * against real brokers; the browser page in Chromium (playwright-core).
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { type Browser } from "playwright-core";
import { ROOT, startBroker, tempDir } from "../helpers/broker.js";
import { collectErrors, launch, loud, preflight, until } from "../browser/harness.js";

preflight();
const t = suite("examples");

interface Proc {
  proc: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of children) p.kill("SIGKILL");
});

/** `node examples/<file> …args` in `cwd`, with its own PSIMBOLS_HOME. */
function example(file: string, args: string[], cwd: string, env: Record<string, string> = {}): Proc {
  const proc = spawn(process.execPath, [join(ROOT, "examples", file), ...args], {
    cwd,
    env: { ...process.env, PSIMBOLS_HOME: join(cwd, "home"), PSIMBOLS_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  proc.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  children.add(proc);
  return { proc, output: () => out, exited };
}

/** Waits for `re` in the process's output. */
async function waitFor(p: Proc, re: RegExp, ms = 15_000): Promise<RegExpMatchArray> {
  await until(`${re} in:\n${p.output()}`, () => re.test(p.output()) || p.proc.exitCode !== null, ms);
  const m = p.output().match(re);
  if (!m) throw new Error(`process exited (${p.proc.exitCode}) without printing ${re}:\n${p.output()}`);
  return m;
}

/** Starts examples/embedded-broker.mjs on a free port in `dir`; resolves with its URL. */
async function embeddedBroker(dir: string, port = 0): Promise<{ p: Proc; url: string; port: number; fingerprint: string }> {
  const p = example("embedded-broker.mjs", [], dir, { PORT: String(port), DATA_DIR: join(dir, "broker-data") });
  const m = await waitFor(p, /embedded broker on (ws:\/\/127\.0\.0\.1:(\d+)\/) fingerprint (SHA256:\S+)/);
  return { p, url: m[1]!, port: Number(m[2]), fingerprint: m[3]! };
}

async function stop(p: Proc): Promise<number | null> {
  if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGINT");
  return p.exited;
}

let browser: Browser | undefined;
t.after(async () => {
  await browser?.close();
});

t("node-client.mjs --once against embedded-broker.mjs: requests, the handlers' answers and a push", async () => {
  const dir = tempDir();
  const b = await embeddedBroker(dir);
  try {
    const c = example("node-client.mjs", [b.url, "--once"], dir);
    assert.is(await c.exited, 0, c.output());
    const out = c.output();
    assert.match(out, /^identity SHA256:\S+ \(me\.pem\)$/m);
    assert.match(out, /^whoami \{"identity":"SHA256:/m);
    assert.match(out, /^echo \{"hi":1\}$/m);
    assert.match(out, /^sum 6$/m);
    assert.match(out, /^push \{"reminder":"hello from the broker","at":"/m);
    assert.match(out, `learnt server key ${b.fingerprint}`);
  } finally {
    assert.is(await stop(b.p), 0, b.p.output());
  }
});

t("node-client.mjs reconnects when the broker restarts, and takes pushes again", async () => {
  const dir = tempDir();
  const first = await embeddedBroker(dir);
  const c = example("node-client.mjs", [first.url], dir);
  try {
    await waitFor(c, /waiting for pushes and notices/);
    await stop(first.p);
    await waitFor(c, /notice closing|state ready -> (connecting|reconnecting)/);
    const again = await embeddedBroker(dir, first.port); // same data dir: same server key, so the learnt key still matches
    try {
      await waitFor(c, /-> ready[\s\S]*-> ready|state \w+ -> ready/);
      assert.not.match(c.output(), /mismatch|error/i);
      // the restarted broker keeps channels in memory: it cannot have resumed the old one
      await waitFor(c, /^channel \S+, valid until/m);
      assert.not.match(c.output(), /resumed channel/);
    } finally {
      await stop(again.p);
    }
  } finally {
    assert.is(await stop(c), 0, c.output());
  }
});

t("node-client.mjs meeting another server key reports it as the CLI does, with the forget hint, at start and when reconnecting", async () => {
  const dir = tempDir();
  const first = await embeddedBroker(dir);
  const learnt = example("node-client.mjs", [first.url, "--once"], dir);
  assert.is(await learnt.exited, 0, learnt.output());
  const staying = example("node-client.mjs", [first.url], dir);
  await waitFor(staying, /waiting for pushes and notices/);
  await stop(first.p);
  // a new data directory: a new server key on the same URL
  const other = example("embedded-broker.mjs", [], dir, { PORT: String(first.port), DATA_DIR: join(dir, "other-broker-data") });
  await waitFor(other, /embedded broker on ws:/);
  try {
    const fresh = example("node-client.mjs", [first.url, "--once"], dir);
    for (const c of [fresh, staying]) {
      assert.is(await c.exited, 1, c.output());
      assert.match(c.output(), /^error: SERVER KEY MISMATCH for ws:\/\/127\.0\.0\.1:\d+\/: .* \(server_key_mismatch\)$/m);
      assert.match(c.output(), `hint: if you know why the server's key changed (a broker you restarted with a new key), run \`npx psimbols known-servers forget ${first.url}\``);
      assert.not.match(c.output(), /^\s+at /m, "a stack trace");
    }
  } finally {
    await stop(other);
  }
});

t("node-client.mjs against `psimbols serve` shows the example ops refused, with their code", async () => {
  const dir = tempDir();
  const b = await startBroker();
  try {
    const c = example("node-client.mjs", [b.url, "--once"], dir);
    assert.is(await c.exited, 0, c.output());
    assert.match(c.output(), /^echo \{"hi":1\}$/m);
    assert.match(c.output(), /^example op refused: not_found/m);
  } finally {
    await b.stop();
  }
});

t(
  "browser/index.html, served by embedded-broker.mjs, connects from Chromium and gets a push",
  loud(async () => {
    const dir = tempDir();
    const b = await embeddedBroker(dir);
    try {
      browser = await launch();
      const page = await browser.newPage();
      const errors = collectErrors(page);
      await page.goto(b.url.replace(/^ws/, "http"));
      const log = () => page.locator("#log").textContent().then((x) => x ?? "");
      await until("the page to get its push", async () => /^push /m.test(await log()), 20_000);
      const text = await log();
      assert.match(text, /^identity SHA256:/m);
      assert.match(text, /^sum 6$/m);
      assert.match(text, /^push \{"reminder":"hello, browser"/m);
      assert.not.match(text, /^error/m);
      assert.equal(errors, []);
    } finally {
      await stop(b.p);
    }
  }),
);

t.run();
