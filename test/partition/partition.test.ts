/**
 * Partitions between hosts (SECURITY.md "Partitions"; docs/OPERATIONS.md):
 * Redis, two nodes, HAProxy and the clients each on a test host of its own
 * (a network namespace, test/partition/netns.ts), on two segments of one
 * private /24 that exists only inside the namespaces:
 *
 *   back  10.213.77.0/25    rd (Redis) · n1 · n2
 *   front 10.213.77.128/25  n1 · n2 · lb (HAProxy, deploy/haproxy.cfg) · cl (clients)
 *
 * Links are cut at the switch (`ip link set … down`) or slowed (netem where
 * the kernel has it, else tbf: a rate limit whose queue delays and drops).
 * Each scenario says what clients see, how long until they are served again,
 * and checks that no revoked or replaced channel is served past its bound.
 * The nodes run with --store-loss-bound 3. Without root (or without ip
 * netns) the suite is skipped and says why in its name.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ChildProcess } from "node:child_process";
import { generateKeyFile } from "../../node/key-files.js";
import { haproxyConfigFor } from "../../cli/cluster/local-cluster.js";
import { type Host, Lab, ip, netnsUnavailable, tc } from "./netns.js";
import { skip } from "../helpers/skip.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "bin", "psimbols.js");
const DRIVER = fileURLToPath(new URL("./driver.js", import.meta.url));
const BOUND_MS = 3000;
/** The store watch pings every second: a node notices the loss at most this late. */
const WATCH_MS = 1000;
/** Scheduling and request latency on a shared two-core machine. */
const SLACK_MS = 700;
const CLIENTS = 6;
const REDIS_PORT = "6390";
const PORT = "9393";

const why = netnsUnavailable();
const t = suite("partitions between hosts (network namespaces)");

if (why) {
  skip(t, "the five partition scenarios (topology, node cut from Redis, node cut from clients, Redis cut from all, slow lossy link)", why);
  t.run();
} else {
  defineSuite();
  t.run();
}

interface Ev {
  t: number;
  c?: number;
  ev: string;
  node?: string;
  channel?: string;
  ms?: number;
  code?: string;
  kind?: string;
  s?: string;
}

function defineSuite(): void {
  let lab: Lab;
  let dir: string;
  let rd: Host, n1: Host, n2: Host, lb: Host, cl: Host;
  let driver: ChildProcess;
  const events: Ev[] = [];
  const figures: string[] = [];
  let wrapKey: string;
  let redisUrl: string;
  let fingerprint: string;

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  async function until(what: string, pred: () => boolean | Promise<boolean>, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await pred())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await sleep(100);
    }
  }
  /** Waits for a line matching `re` in a process's output. */
  function output(p: ChildProcess, re: RegExp, ms: number, name: string): Promise<void> {
    let out = "";
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not print ${re} in ${ms} ms:\n${out}`)), ms);
      const on = (d: Buffer) => {
        out += d.toString();
        if (re.test(out)) (clearTimeout(timer), resolve());
      };
      p.stdout!.on("data", on);
      p.stderr!.on("data", on);
      p.once("exit", (code) => (clearTimeout(timer), reject(new Error(`${name} exited (${code}):\n${out}`))));
    });
  }
  /** HTTP status of `url` fetched from inside `host` (0 when unreachable). */
  async function status(host: Host, url: string): Promise<number> {
    const js = `fetch(${JSON.stringify(url)},{signal:AbortSignal.timeout(1500)}).then(r=>console.log(r.status),()=>console.log(0))`;
    const r = await lab.run(host, process.execPath, ["-e", js], {}, 5000);
    return Number(r.out.trim()) || 0;
  }
  const lastNode = (c: number): string | undefined => events.filter((e) => e.c === c && e.ev === "ok").at(-1)?.node;
  const oks = (c: number, from: number, to = Infinity) => events.filter((e) => e.c === c && e.ev === "ok" && e.t > from && e.t <= to);
  const firstOkOn = (c: number, node: string, after: number) => events.find((e) => e.c === c && e.ev === "ok" && e.node === node && e.t > after);
  const live = () => [...new Set(events.filter((e) => e.ev === "established" && e.c !== undefined).map((e) => e.c!))].filter((c) => !events.some((e) => e.c === c && e.ev === "close"));
  const since = (from: number, ev: string, c?: number) => events.filter((e) => e.t > from && e.ev === ev && (c === undefined || e.c === c));

  /** Revokes a channel through Redis, from n2's host (the operator's `channels revoke --redis`). */
  async function revoke(channel: string): Promise<void> {
    const r = await lab.run(n2, process.execPath, [CLI, "channels", "revoke", "--redis", redisUrl, "--channel", channel], { PSIMBOLS_WRAP_KEY: wrapKey });
    assert.is(r.code, 0, `revoke failed: ${r.out}`);
  }

  t.before(async () => {
    try {
      lab = new Lab(["back", "front"]);
      rd = lab.host("rd", ["back"]);
      n1 = lab.host("n1", ["back", "front"]);
      n2 = lab.host("n2", ["back", "front"]);
      lb = lab.host("lb", ["front"]);
      cl = lab.host("cl", ["front"]);
      dir = mkdtempSync(join(tmpdir(), "psimbols-partition-"));
      const keyFile = join(dir, "server-key.pem");
      fingerprint = (await generateKeyFile("Ed25519", keyFile)).public.fingerprint;
      wrapKey = randomBytes(32).toString("base64url");
      redisUrl = `redis://${rd.addr.back}:${REDIS_PORT}`;

      const redis = lab.spawn(rd, "redis-server", ["--save", "", "--appendonly", "no", "--bind", rd.addr.back!, "--port", REDIS_PORT, "--protected-mode", "no"]);
      await output(redis, /Ready to accept connections/, 10_000, "redis-server");
      const source = `ws://${lb.addr.front}:${PORT}/`;
      await Promise.all(
        [n1, n2].map((h) => {
          const data = join(dir, h.name);
          const p = lab.spawn(
            h,
            process.execPath,
            [CLI, "serve", "--host", "0.0.0.0", "--port", PORT, "--node", h.name, "--redis", redisUrl, "--server-key-file", keyFile, "--trust-proxy",
              "--source", source, "--data-dir", data, "--store-loss-bound", String(BOUND_MS / 1000), "--ping-interval", "1000", "--no-console", "--log-level", "warn"],
            { PSIMBOLS_WRAP_KEY: wrapKey, PSIMBOLS_HOME: data },
          );
          return output(p, /listening on ws:/, 15_000, h.name);
        }),
      );
      const cfg = join(dir, "haproxy.cfg");
      writeFileSync(cfg, haproxyConfigFor([n1, n2].map((h) => ({ name: h.name, address: `${h.addr.front}:${PORT}` }))));
      lab.spawn(lb, "haproxy", ["-db", "-f", cfg], { PSIMBOLS_LB_BIND: `${lb.addr.front}:${PORT}` });
      await until("HAProxy to answer /readyz through a node", async () => (await status(cl, `http://${lb.addr.front}:${PORT}/readyz`)) === 200, 15_000);
      await until("both nodes in rotation", async () => (await status(lb, `http://${n1.addr.front}:${PORT}/readyz`)) === 200 && (await status(lb, `http://${n2.addr.front}:${PORT}/readyz`)) === 200, 10_000);
      await sleep(2500); // HAProxy's `rise 2` at `inter 2s`: both nodes up before clients spread over them

      driver = lab.spawn(cl, process.execPath, [DRIVER, source, fingerprint, String(CLIENTS)]);
      let buf = "";
      driver.stdout!.setEncoding("utf8").on("data", (d: string) => {
        buf += d;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            events.push(JSON.parse(line) as Ev);
          } catch {
            /* not an event */
          }
        }
      });
      let err = "";
      driver.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
      await until(`the driver's ${CLIENTS} clients (${err})`, () => events.some((e) => e.ev === "ready"), 20_000);
      await until("every client answered once", () => Array.from({ length: CLIENTS }, (_, c) => lastNode(c)).every(Boolean), 5000);
    } catch (e) {
      console.error(e);
      throw e;
    }
  });

  t.after(async () => {
    driver?.stdin?.write("quit\n");
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (figures.length) console.log(`\n    partition figures (store-loss bound ${BOUND_MS / 1000} s):\n${figures.map((f) => `      ${f}`).join("\n")}`);
  });

  t("the topology: clients reach both nodes through HAProxy; no host has a default route, and the root namespace no lab address", async () => {
    const nodes = new Set(Array.from({ length: CLIENTS }, (_, c) => lastNode(c)));
    assert.equal([...nodes].sort(), ["n1", "n2"]);
    assert.is(await status(cl, `http://${rd.addr.back}:${REDIS_PORT}/`), 0, "the client host cannot reach Redis (another segment)");
    // Checked locally, sending nothing: traffic can only flow between the lab's namespaces.
    for (const h of [rd, n1, n2, lb, cl]) assert.is(ip("-n", h.ns, "route", "show", "default").trim(), "", `${h.name} has no default route`);
    assert.not.ok(ip("-o", "addr", "show").includes(`${rd.addr.back!.split(".").slice(0, 3).join(".")}.`), "the root namespace has no address in the lab's /24");
  });

  t("a node cut off from Redis serves its channels until the bound, then sends its clients to the other node; a channel revoked meanwhile is served no longer than the bound", async () => {
    const onN1 = live().filter((c) => lastNode(c) === "n1");
    const onN2 = live().filter((c) => lastNode(c) === "n2");
    assert.ok(onN1.length >= 2, `clients on n1: ${onN1.length}`);
    const [revoked, ...moved] = onN1 as [number, ...number[]];
    const channel = events.filter((e) => e.c === revoked && e.ev === "ok").at(-1)!.channel!;

    const cutAt = Date.now();
    lab.link(n1, "back", false);
    const revokeAt = Date.now();
    await revoke(channel);
    await until("the revoked client to be told", () => since(cutAt, "notice", revoked).some((e) => e.kind === "revoked"), 20_000);
    await until("n1's other clients to be served by n2", () => moved.every((c) => firstOkOn(c, "n2", cutAt)), 20_000);

    const lastRevokedOk = oks(revoked, revokeAt).at(-1)?.t ?? revokeAt;
    const servedAfterRevoke = lastRevokedOk - revokeAt;
    assert.ok(oks(revoked, revokeAt).length > 0, "n1 went on serving during the outage (it cannot hear the revocation)");
    assert.ok(servedAfterRevoke <= BOUND_MS + WATCH_MS + SLACK_MS, `the revoked channel was served ${servedAfterRevoke} ms after its revocation`);
    assert.ok(since(cutAt, "close", revoked).length === 1, "the revoked client stopped for good");
    const back = moved.map((c) => firstOkOn(c, "n2", cutAt)!.t - cutAt);
    const lastOnN1 = Math.max(...moved.map((c) => oks(c, cutAt).filter((e) => e.node === "n1").at(-1)?.t ?? cutAt)) - cutAt;
    assert.ok(lastOnN1 <= BOUND_MS + WATCH_MS + SLACK_MS, `n1 served until ${lastOnN1} ms after the cut`);
    for (const c of moved) {
      assert.is(since(cutAt, "established", c).length, 0, "moved by resume, no new handshake");
      assert.ok(since(cutAt, "resumed", c).length >= 1);
    }
    for (const c of onN2) assert.is(since(cutAt, "fail", c).length, 0, "clients of n2 saw nothing");
    figures.push(`node cut from Redis: n1 served until +${lastOnN1} ms; its clients served by n2 again at +${Math.min(...back)}..+${Math.max(...back)} ms (resumed); revoked channel served ${servedAfterRevoke} ms after revocation (bound ${BOUND_MS} + ${WATCH_MS} ms)`);

    lab.link(n1, "back", true);
    await until("n1 ready again", async () => (await status(lb, `http://${n1.addr.front}:${PORT}/readyz`)) === 200, 15_000);
  });

  t("a node cut off from its clients: they notice the silence, resume on the other node, and the cut-off node lets go of the replaced bindings", async () => {
    const onN2 = live().filter((c) => lastNode(c) === "n2");
    assert.ok(onN2.length >= 3, `clients on n2: ${onN2.length}`);
    const cutAt = Date.now();
    lab.link(n2, "front", false);
    await until("n2's clients to be served by n1", () => onN2.every((c) => firstOkOn(c, "n1", cutAt)), 25_000);
    const back = onN2.map((c) => firstOkOn(c, "n1", cutAt)!.t - cutAt);
    for (const c of onN2) {
      assert.is(since(cutAt, "established", c).length, 0, "resumed, no new handshake");
      assert.is(since(cutAt, "close", c).length, 0, "not closed for good");
    }
    // n2 still reaches Redis: the resumes on n1 published `rebound`, and n2 closes the bindings they replaced
    // (the close cannot reach the client; the socket is dropped 2 s later). n2 is reachable on the back segment.
    const resumedAt = Math.max(...onN2.map((c) => firstOkOn(c, "n1", cutAt)!.t));
    const metric = async () => {
      const js = `fetch("http://${n2.addr.back}:${PORT}/metrics",{signal:AbortSignal.timeout(1500)}).then(r=>r.text()).then(t=>console.log((t.match(/^psimbols_connections (\\d+)/m)||[])[1]),()=>console.log(-1))`;
      return Number((await lab.run(n1, process.execPath, ["-e", js], {}, 5000)).out.trim());
    };
    await until("n2 to drop the replaced sockets", async () => (await metric()) === 0, BOUND_MS + 5000);
    const released = Date.now() - resumedAt;
    figures.push(`node cut from its clients: served again by n1 at +${Math.min(...back)}..+${Math.max(...back)} ms (client idle timeout 3 s, then resume); n2 released the replaced bindings ≤ ${released} ms after the last resume`);
    lab.link(n2, "front", true);
    await until("n2 ready again", async () => (await status(lb, `http://${n2.addr.front}:${PORT}/readyz`)) === 200, 15_000);
  });

  t("Redis cut off from everyone: every node serves until the bound, then closes its sockets (4009); clients come back, same channels, once Redis is reachable", async () => {
    const clients = live();
    const cutAt = Date.now();
    lab.link(rd, "back", false);
    await sleep(BOUND_MS + WATCH_MS + 3000);
    const healAt = Date.now();
    lab.link(rd, "back", true);
    await until("every client served again", () => clients.every((c) => oks(c, healAt).length > 0), 25_000);
    const lastServed = Math.max(...clients.map((c) => oks(c, cutAt, healAt).at(-1)?.t ?? cutAt)) - cutAt;
    const back = clients.map((c) => oks(c, healAt)[0]!.t - healAt);
    assert.ok(lastServed >= BOUND_MS / 2, `served on during a short loss (until +${lastServed} ms)`);
    assert.ok(lastServed <= BOUND_MS + WATCH_MS + SLACK_MS, `served until +${lastServed} ms after the cut (bound ${BOUND_MS} ms)`);
    for (const c of clients) {
      assert.is(since(cutAt, "established", c).length, 0, "the same channel after the outage: resumed");
      assert.is(since(cutAt, "close", c).length, 0, "not closed for good");
    }
    figures.push(`Redis cut from everyone: served until +${lastServed} ms, then 4009 and refusals; served again ${Math.min(...back)}..${Math.max(...back)} ms after Redis came back (same channels)`);
  });

  t("a slow, lossy link between the clients and HAProxy: requests slow down, none is lost for good, and a revocation still ends service at once", async () => {
    // netem where the kernel has it; else tbf: a 32 kbit/s link (about what the clients send) whose queue
    // adds up to 400 ms and drops beyond it.
    await sleep(2000);
    const before = events.filter((e) => e.ev === "ok" && e.t > Date.now() - 2000).map((e) => e.ms!);
    const shapes: [string, string[]][] = [
      ["netem delay 100ms 20ms loss 3%", ["netem", "delay", "100ms", "20ms", "loss", "3%"]],
      ["tbf 32 kbit/s, 400 ms queue", ["tbf", "rate", "32kbit", "burst", "1600", "latency", "400ms"]],
    ];
    let used: string | undefined;
    for (const [name, args] of shapes) {
      const a = tc(cl.ns, "qdisc", "add", "dev", cl.dev.front!, "root", ...args);
      if (!a.ok) continue;
      const b = tc(lab.switchNs, "qdisc", "add", "dev", cl.port.front!, "root", ...args);
      assert.ok(b.ok, b.stderr);
      used = name;
      break;
    }
    assert.ok(used, "neither netem nor tbf could be set");
    const clients = live();
    const from = Date.now();
    await sleep(4000);
    const victim = clients[0]!;
    const channel = events.filter((e) => e.c === victim && e.ev === "ok").at(-1)!.channel!;
    const revokeAt = Date.now();
    await revoke(channel);
    const revokedAt = Date.now();
    await until("the revoked client to be told", () => since(revokeAt, "notice", victim).some((e) => e.kind === "revoked"), 15_000);
    const noticeMs = since(revokeAt, "notice", victim).find((e) => e.kind === "revoked")!.t - revokeAt;
    await sleep(1000);
    const to = Date.now();
    tc(cl.ns, "qdisc", "del", "dev", cl.dev.front!, "root");
    tc(lab.switchNs, "qdisc", "del", "dev", cl.port.front!, "root");

    const slow = events.filter((e) => e.ev === "ok" && e.t > from && e.t <= to).map((e) => e.ms!).sort((a, b) => a - b);
    const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN;
    const failed = events.filter((e) => e.ev === "fail" && e.t > from && e.t <= to).length;
    for (const c of clients.slice(1)) {
      assert.ok(oks(c, from, to).length > 0, `client ${c} was served over the slow link`);
      assert.is(since(from, "close", c).length, 0, `client ${c} not closed`);
    }
    // A response received after the revocation was sealed before it, at most one request timeout (2 s) earlier.
    const lastOk = oks(victim, revokeAt).at(-1)?.t ?? revokeAt;
    assert.ok(lastOk <= revokedAt + 2000, `the revoked channel answered ${lastOk - revokedAt} ms after the revocation completed`);
    figures.push(
      `slow link (${used}): request p50/p99 ${q(before, 0.5)}/${q(before, 0.99)} ms before, ${q(slow, 0.5)}/${q(slow, 0.99)} ms during; ${failed} of ${slow.length + failed} requests failed (timeout 2 s); revocation noticed after ${noticeMs} ms`,
    );
  });
}
