/**
 * deploy/redis-start.sh, the start of every Redis server under Sentinel
 * (docker-compose.sentinel.yml; the soak with faults): a server that died
 * and restarts (no persistence: empty) must come back as the replica of the
 * master the sentinels name, never as a second, empty master. Started plainly
 * (`redis-server` alone, as before) the old master answers as a master, empty,
 * until the sentinels convert it (~10–20 s here): a node that asked a sentinel
 * not yet told of the failover used it, and lost channels and push numbers.
 * Real redis-server and sentinel processes.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Redis } from "ioredis";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../cli/cluster/net.js";
import { REDIS_START, SENTINEL_MASTER_NAME } from "../../cli/cluster/sentinel.js";
import { testSentinels } from "../helpers/sentinel.js";

const sentinelSet = testSentinels();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
// --dir: a replica writes the RDB of its full sync to its directory (it left dump.rdb in the checkout).
const BASE = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning", "--dir", mkdtempSync(join(tmpdir(), "psimbols-redis-start-"))];

/** The ROLE of the server on `port` ("master", "slave", or "down"), and the master it follows. */
async function role(port: number): Promise<{ role: string; master?: number }> {
  const c = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, commandTimeout: 1000 });
  c.on("error", () => {});
  try {
    const r = (await c.call("ROLE")) as unknown[];
    return r[0] === "slave" ? { role: "slave", master: Number(r[2]) } : { role: String(r[0]) };
  } catch {
    return { role: "down" };
  } finally {
    c.disconnect();
  }
}

/** Runs the script for 127.0.0.1:`port` with `env`; every role it shows until `until` holds (or 15 s). */
async function start(port: number, env: Record<string, string>, until: (r: { role: string; master?: number }) => boolean, onPoll?: (output: string) => Promise<void>, timeoutMs = 15_000) {
  const p = sentinelSet.launch(`redis-${port}`, "sh", [REDIS_START, "127.0.0.1", String(port), "--port", String(port), ...BASE], { ...process.env, ...env });
  const seen = new Set<string>();
  for (const deadline = Date.now() + timeoutMs; ; await sleep(50)) {
    await onPoll?.(p.output());
    const r = await role(port);
    seen.add(r.role);
    if (until(r)) return { proc: p, seen, last: r };
    if (!p.alive() || Date.now() > deadline) {
      const sentinels = sentinelSet.started().filter((s) => s.name.startsWith("sentinel")).map((s) => `${s.name}:\n${s.output()}`);
      assert.unreachable(`redis-start.sh on :${port}: roles ${[...seen].join(",")}; output:\n${p.output()}\n${sentinels.join("\n")}`);
    }
  }
}

/**
 * Sets every sentinel's down-after-milliseconds for the test master (SENTINEL SET), and a
 * failover-timeout of 2 s: a sentinel that led a failover starts no other for twice that
 * timeout (20 s with deploy/sentinel.conf's 10 s), and when such a sentinel wins the vote,
 * the failover stalls until then (seen: the case below ran 1 s after the one above).
 */
async function downAfter(sentinels: { port: number }[], ms: number): Promise<void> {
  for (const s of sentinels) {
    const c = new Redis({ host: "127.0.0.1", port: s.port, lazyConnect: true, maxRetriesPerRequest: 0, commandTimeout: 2000 });
    try {
      await c.call("SENTINEL", "SET", SENTINEL_MASTER_NAME, "down-after-milliseconds", String(ms), "failover-timeout", "2000");
    } finally {
      c.disconnect();
    }
  }
}

/** The master every sentinel names, once they all name the same one (10 s at most). */
async function agreedMaster(sentinels: { port: number }[]): Promise<number> {
  let named: string[] = [];
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(100)) {
    named = await Promise.all(
      sentinels.map(async (s) => {
        const c = new Redis({ host: "127.0.0.1", port: s.port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, commandTimeout: 1000 });
        c.on("error", () => {});
        try {
          const r = (await c.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME)) as [string, string] | null;
          return r ? r[1] : "none";
        } catch {
          return "down";
        } finally {
          c.disconnect();
        }
      }),
    );
    if (named.every((p) => p === named[0]) && /^\d+$/.test(named[0]!)) return Number(named[0]);
  }
  throw new Error(`the sentinels do not agree on a master: ${named.join(", ")}`);
}

const t = suite("deploy/redis-start.sh: a restarted Redis follows the sentinels");
t.after(() => sentinelSet.stopAll());

t("no sentinel answers: the first start is the master, or the replica of PSIMBOLS_INITIAL_MASTER", async () => {
  const nobody = `127.0.0.1:${await freePort()}`;
  const a = await freePort();
  const first = await start(a, { PSIMBOLS_SENTINELS: nobody }, (r) => r.role === "master");
  assert.match(first.proc.output(), /no sentinel answers; starting as the master/);
  const b = await freePort();
  const second = await start(b, { PSIMBOLS_SENTINELS: nobody, PSIMBOLS_INITIAL_MASTER: `127.0.0.1 ${a}` }, (r) => r.role === "slave");
  assert.is(second.last.master, a);
  assert.ok(!second.seen.has("master"), "the replica never answered as a master");
  await Promise.all([first.proc.kill("SIGKILL"), second.proc.kill("SIGKILL")]);
});

t("a sentinel address that answers but not with an address (here a plain Redis): it does not start, rather than guess master", async () => {
  const notSentinel = await freePort();
  const plain = await start(notSentinel, { PSIMBOLS_SENTINELS: `127.0.0.1:${await freePort()}` }, (r) => r.role === "master");
  const port = await freePort();
  const p = sentinelSet.launch(`redis-${port}`, "sh", [REDIS_START, "127.0.0.1", String(port), "--port", String(port), ...BASE], { ...process.env, PSIMBOLS_SENTINELS: `127.0.0.1:${notSentinel}` });
  const code = await new Promise<number | null>((r) => p.proc.once("exit", (c) => r(c)));
  assert.is(code, 1);
  assert.match(p.output(), new RegExp(`127\\.0\\.0\\.1:${notSentinel} answered "ERR unknown command 'SENTINEL'.*not starting`));
  assert.is((await role(port)).role, "down", "nothing listens on its port");
  await plain.proc.kill("SIGKILL");
});

t("after a failover, the old master restarts as the new master's replica at once, never an empty master", async () => {
  const set = await sentinelSet.start();
  const sentinels = set.sentinels.map((s) => `127.0.0.1:${s.port}`).join(" ");
  const old = (await set.masterPort())!;
  (old === set.master.port ? set.master : set.replica).proc.kill("SIGKILL");
  let now: number | undefined;
  for (const deadline = Date.now() + 20_000; (now = await set.masterPort()) === old || now === undefined; await sleep(100)) {
    if (Date.now() > deadline) assert.unreachable("no failover in 20 s");
  }
  const started = Date.now();
  const back = await start(old, { PSIMBOLS_SENTINELS: sentinels, PSIMBOLS_MASTER_NAME: SENTINEL_MASTER_NAME }, (r) => r.role === "slave");
  assert.is(back.last.master, now, "it follows the master the sentinels name");
  assert.ok(!back.seen.has("master"), `it answered as a master: ${[...back.seen].join(",")}`);
  assert.ok(Date.now() - started < 5000, `a replica at once, not after the sentinels' conversion (${Date.now() - started} ms)`);
  assert.match(back.proc.output(), new RegExp(`starting as a replica of 127\\.0\\.0\\.1 ${now} \\(named by the sentinels\\)`));
});

t("restarted before the sentinels noticed its death: it waits for their failover, then follows the new master", async () => {
  const set = await sentinelSet.start();
  const sentinels = set.sentinels.map((s) => `127.0.0.1:${s.port}`).join(" ");
  // Every sentinel must name the same master first: after the failover above, one that had not yet
  // heard of it named the old master, and the script (rightly) followed that one without waiting.
  const old = await agreedMaster(set.sentinels);
  // Hold the sentinels: with their usual 2 s they may fail over before the script asks (a loaded
  // machine once took that long to start it), and this case is about a script that asks first.
  await downAfter(set.sentinels, 600_000);
  // The master of the test above came back through the script: stop whichever process holds it.
  const holder = [set.master, set.replica].find((p) => p.port === old && p.alive());
  if (holder) await holder.kill("SIGKILL");
  else {
    const c = new Redis({ host: "127.0.0.1", port: old, lazyConnect: true, maxRetriesPerRequest: 0 });
    await c.call("SHUTDOWN", "NOSAVE").catch(() => {});
    c.disconnect();
  }
  // At once: every sentinel still names this server as the master.
  // Once the script says it waits, let the sentinels notice the death (it is long past 1 s): they fail over within its wait.
  let released = false;
  const release = async (output: string) => {
    if (released || !/waiting \d+ s for a failover/.test(output)) return;
    released = true;
    await downAfter(set.sentinels, 1000);
  };
  const back = await start(old, { PSIMBOLS_SENTINELS: sentinels, PSIMBOLS_MASTER_NAME: SENTINEL_MASTER_NAME, PSIMBOLS_FAILOVER_WAIT: "12" }, (r) => r.role === "slave", release, 30_000);
  assert.match(back.proc.output(), /still name 127\.0\.0\.1:\d+ as master; waiting 12 s for a failover/, `the script's output:\n${back.proc.output()}`);
  assert.ok(!back.seen.has("master"), `it answered as a master while the sentinels still named it: ${[...back.seen].join(",")}`);
  assert.is(back.last.master, await set.masterPort(), "it follows the promoted replica");
  assert.is.not(back.last.master, old);
});

t.run();
