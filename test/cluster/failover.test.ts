/**
 * Redis failover through Sentinel, under load, from local processes
 * (`startCluster({ sentinel: true })`: a master, a replica, three sentinels
 * on deploy/sentinel.conf, two nodes, HAProxy). The master is killed with
 * SIGKILL while clients hold channels and send requests, an application
 * pushes and an operator revokes; then:
 *
 * - how long until a fresh handshake succeeds again (measured, printed);
 * - requests: every one sent is answered, none fails (the message path has
 *   no store round trip): acknowledged requests lost = 0;
 * - channels lost to asynchronous replication: counted; each such client
 *   recovers by a new handshake on its own and keeps working, none closes;
 * - pushes: every push acknowledged to the pusher (with Sentinel a push is
 *   acknowledged once a replica has it, Redis WAIT) reaches its client;
 * - revocations acknowledged before the kill and during the failover (the
 *   operator retries while the store says `unavailable`) take effect: the
 *   revoked clients get `revoked` and their channels answer nothing.
 *
 * Also: wss:// through HAProxy's TLS frontend (--tls), on the same cluster.
 * Figures are printed as one `FAILOVER {...}` JSON line (docs/CLUSTER.md, "What a failover does").
 */
import { readFileSync } from "node:fs";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { WebSocket } from "ws";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { type Client, connect } from "../../client/node.js";
import { type Cluster, startCluster } from "../../cli/cluster/local-cluster.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { parseWrapKey } from "../../server/store/wrap.js";

const CLIENTS = 40;
const REVOKED_BEFORE = 3;
const REVOKED_DURING = 3;
/** Each kept client sends a request, waits for its answer, then this long: a steady load that leaves the 2 cores to the failover. */
const REQUEST_GAP_MS = 20;
const WINDOW = { count: 1000, ageMs: 3600_000 };

const t = suite("cluster: Redis master killed under load, Sentinel fails over");
let cluster: Cluster;
t.before(async () => {
  try {
    cluster = await startCluster({ nodes: 2, sentinel: true, tlsPort: 0, nodeArgs: ["--hellos-per-address", "100000", "--max-connections-per-address", "10000"] });
  } catch (e) {
    console.error(e);
    throw e;
  }
});
t.after(async () => {
  await cluster?.stop();
});

const t0 = Date.now();
const step = (m: string) => process.env.PSIMBOLS_TEST_DEBUG && console.log(`    [${Date.now() - t0} ms] ${m}`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const reconnect = { baseMs: 50, maxMs: 500 };

t("wss:// through HAProxy's TLS frontend reaches a node and pins the same server key", async () => {
  assert.ok(cluster.tls, "no TLS frontend");
  const ca = readFileSync(cluster.tls.certFile);
  class TrustingWebSocket extends WebSocket {
    constructor(url: string) {
      super(url, { ca });
    }
  }
  const c = await connect(cluster.tls.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: false, WebSocket: TrustingWebSocket });
  try {
    assert.equal(await c.request("echo", { tls: true }), { tls: true });
  } finally {
    await c.close();
  }
  // Without trusting the self-signed certificate, the TLS handshake fails: no channel.
  let refused: unknown;
  try {
    const d = await connect(cluster.tls.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: false });
    await d.close();
  } catch (e) {
    refused = e;
  }
  assert.ok(refused, "a wss:// connection succeeded without trusting the certificate");
});

interface Tracked {
  key: SigningKey;
  client: Client;
  identity: string;
  pushes: Set<number>;
  revoked: boolean;
  revokedAt?: number;
  closed?: number;
  handshakesAfterKill: number;
}

t("SIGKILL of the Redis master under load: figures, and the guarantees hold", async () => {
  const sentinel = cluster.sentinel!;
  const wrapKey = parseWrapKey(cluster.wrapKey);
  // The application and the operator reach the store as `psimbols push|channels revoke --redis` do.
  const debugLog = {
    child: () => debugLog,
    error: (m: string, meta?: unknown) => step(`app store: ${m} ${JSON.stringify(meta ?? {})}`),
    warn: (m: string, meta?: unknown) => step(`app store: ${m} ${JSON.stringify(meta ?? {})}`),
    info: (m: string, meta?: unknown) => step(`app store: ${m} ${JSON.stringify(meta ?? {})}`),
    debug: () => undefined,
  };
  const app = new RedisStore({ url: sentinel.url, wrapKey, ...(process.env.PSIMBOLS_TEST_DEBUG ? { logger: debugLog } : {}) });
  const clients: Tracked[] = [];
  let kill = 0;
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const key = await generateSigningKey();
      const client = await connect(cluster.url, { key, serverKey: cluster.fingerprint, reconnect, requestTimeoutMs: 20_000 });
      const tr: Tracked = { key, client, identity: key.public.fingerprint, pushes: new Set(), revoked: false, handshakesAfterKill: 0 };
      client.on("push", (m) => tr.pushes.add((m as { n: number }).n));
      client.on("notice", (n) => {
        if (n.kind === "revoked") tr.revokedAt ??= Date.now();
      });
      client.on("established", () => {
        if (kill) tr.handshakesAfterKill++;
      });
      client.on("close", (e) => (tr.closed = e.code));
      clients.push(tr);
    }
    const revokedBefore = clients.slice(0, REVOKED_BEFORE);
    const revokedDuring = clients.slice(REVOKED_BEFORE, REVOKED_BEFORE + REVOKED_DURING);
    const kept = clients.slice(REVOKED_BEFORE + REVOKED_DURING);

    // Requests: one in flight per kept client, all the time.
    const req = { sent: 0, ok: 0, failed: [] as string[] };
    let running = true;
    const loops = kept.map(async (tr, w) => {
      for (let i = 0; running; i++) {
        req.sent++;
        try {
          assert.equal(await tr.client.request("echo", { w, i }), { w, i });
          req.ok++;
        } catch (e) {
          req.failed.push(String((e as { code?: string }).code ?? e));
        }
        await sleep(REQUEST_GAP_MS);
      }
    });

    // Pushes: round robin over the kept clients, every 20 ms; a failed one (store unavailable) is not acknowledged.
    const push = { acked: new Map<number, Tracked>(), ackedAt: new Map<number, number>(), refused: 0 };
    let n = 0;
    const pusher = (async () => {
      while (running) {
        const tr = kept[n % kept.length]!;
        const id = ++n;
        try {
          await app.push(tr.identity, JSON.stringify({ n: id }), WINDOW);
          push.acked.set(id, tr);
          push.ackedAt.set(id, Date.now());
        } catch {
          push.refused++;
        }
        await sleep(20);
      }
    })();

    // Fresh handshakes every 100 ms, to see when they work again.
    const probes: { start: number; ok: boolean }[] = [];
    const prober = (async () => {
      while (running) {
        const start = Date.now();
        try {
          const c = await connect(cluster.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: false, handshakeTimeoutMs: 3000 });
          probes.push({ start, ok: true });
          await c.close();
        } catch {
          probes.push({ start, ok: false });
        }
        await sleep(100);
      }
    })();

    step("load running");
    await sleep(1500);
    // A revocation acknowledged just before the crash (replicated: WAIT).
    for (const tr of revokedBefore) {
      assert.ok((await app.retireIdentity(tr.identity, "revoked")).length === 1);
      tr.revoked = true;
    }
    // Channels made in the last moment before the crash: the ones asynchronous replication may lose.
    const late = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const key = await generateSigningKey();
        return connect(cluster.url, { key, serverKey: cluster.fingerprint, reconnect, requestTimeoutMs: 20_000 });
      }),
    );
    const lateHandshakes = late.map((c) => c.stats.handshakes);

    step("late channels made");
    const masterPort = sentinel.master.port;
    kill = Date.now();
    await sentinel.master.kill("SIGKILL");

    // Revocations issued during the failover: the operator retries until the store acknowledges.
    const revokeAcked: number[] = [];
    await sleep(300);
    await Promise.all(
      revokedDuring.map(async (tr) => {
        for (const until = Date.now() + 30_000; ; ) {
          if (Date.now() > until) throw new Error("a revocation was never acknowledged");
          try {
            await app.retireIdentity(tr.identity, "revoked");
            tr.revoked = true;
            revokeAcked.push(Date.now());
            return;
          } catch (e) {
            step(`revoke: ${(e as Error).message} ${((e as Error).cause as Error | undefined)?.message ?? ""}`);
            await sleep(100);
          }
        }
      }),
    );

    step("revocations during failover acknowledged");
    // Until a new master is known and handshakes work again, then some steady time after.
    const deadline = Date.now() + 30_000;
    while ((await sentinel.masterPort()) === masterPort && Date.now() < deadline) await sleep(100);
    const promoted = Date.now();
    step("new master");
    assert.is.not(await sentinel.masterPort(), masterPort, "no failover within 30 s");
    // Back: five fresh handshakes in a row succeed (both nodes reach the new master; round robin alternates).
    const steady = () => probes.length >= 5 && probes.slice(-5).every((p) => p.ok && p.start > promoted);
    while (!steady() && Date.now() < deadline) await sleep(50);
    await sleep(2500);
    running = false;
    step("stopping load");
    await Promise.all([...loops, pusher, prober]);

    step("load stopped");
    // Pushes acknowledged must all arrive (the window fills any pub/sub gap).
    const lostPushes = () => [...push.acked].filter(([id, tr]) => !tr.pushes.has(id)).length;
    for (const until = Date.now() + 10_000; lostPushes() > 0 && Date.now() < until; ) await sleep(100);

    // Revoked clients get `revoked` and stop for good; their channel is refused.
    for (const until = Date.now() + 10_000; clients.some((tr) => tr.revoked && tr.revokedAt === undefined) && Date.now() < until; ) await sleep(100);

    const firstFail = probes.find((p) => p.start >= kill && !p.ok);
    const lastFail = [...probes].reverse().find((p) => !p.ok);
    const firstOkAfter = probes.find((p) => p.start > (lastFail?.start ?? kill) && p.ok);
    const channelsLost = late.filter((c, i) => c.stats.handshakes > lateHandshakes[i]!).length + kept.filter((tr) => tr.handshakesAfterKill > 0).length;
    const figures = {
      clients: CLIENTS,
      failoverMs: promoted - kill,
      handshakesFailingMs: firstFail && lastFail ? lastFail.start - firstFail.start : 0,
      handshakesBackAfterMs: firstOkAfter ? firstOkAfter.start - kill : undefined,
      probes: probes.filter((p) => p.start >= kill).length,
      probesFailed: probes.filter((p) => p.start >= kill && !p.ok).length,
      requestsSent: req.sent,
      requestsAnswered: req.ok,
      requestsFailed: req.failed.length,
      pushesAcked: push.acked.size,
      pushesRefusedDuringFailover: push.refused,
      pushesAckedLost: lostPushes(),
      channelsLostToReplication: channelsLost,
      revokedBeforeKill: revokedBefore.length,
      revokedDuringFailover: revokedDuring.length,
      revocationAckedAfterKillMs: revokeAcked.length ? Math.max(...revokeAcked) - kill : undefined,
      revocationsNoticed: clients.filter((tr) => tr.revoked && tr.revokedAt !== undefined).length,
      revocationNoticeLagMs: revokeAcked.length ? Math.max(...revokedDuring.map((tr) => (tr.revokedAt ?? Infinity) - Math.min(...revokeAcked))) : undefined,
    };
    console.log(`    FAILOVER ${JSON.stringify(figures)}`);
    for (const [id, tr] of push.acked) {
      if (!tr.pushes.has(id)) console.log(`    lost push ${id}: acknowledged ${push.ackedAt.get(id)! - kill} ms after the kill; client got ${[...tr.pushes].sort((a, b) => a - b).join(",")}`);
    }


    assert.equal(req.failed, [], "a request failed during the failover");
    assert.is(req.ok, req.sent);
    assert.is(figures.pushesAckedLost, 0, "an acknowledged push was lost");
    assert.ok(push.acked.size > 50, `only ${push.acked.size} pushes acknowledged`);
    assert.is(figures.revocationsNoticed, REVOKED_BEFORE + REVOKED_DURING, "a revocation did not take effect");
    for (const tr of [...revokedBefore, ...revokedDuring]) {
      assert.is(tr.closed, 4005, `${tr.identity}: not closed as revoked (${tr.closed})`);
    }
    assert.ok(firstOkAfter, "handshakes never worked again");
    // Every kept client, and every late one, still works: lost channels were replaced by new handshakes.
    for (const tr of kept) {
      assert.is(tr.closed, undefined, "a client closed for good");
      assert.equal(await tr.client.request("echo", { after: 1 }), { after: 1 });
    }
    for (const c of late) assert.equal(await c.request("echo", { late: 1 }), { late: 1 });
    await Promise.all(late.map((c) => c.close()));
  } finally {
    if (process.env.PSIMBOLS_TEST_DEBUG) for (const p of [...sentinel.sentinels, ...cluster.nodes]) console.log(`--- ${p.name}\n${p.output().slice(-3000)}`);
    await Promise.allSettled(clients.map((tr) => tr.client.close()));
    await app.close();
  }
});

t.run();
