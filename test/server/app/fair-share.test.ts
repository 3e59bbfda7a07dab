/**
 * A fair share of each upstream route per identity (docs/BACKEND.md "Fair
 * share"): a real broker process forwarding to a real HTTP application, with
 * several identities each holding a connection's whole in-flight budget of a
 * slow op; and the scheduler's round-robin when a route is full.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../../shared/crypto.js";
import { FairShare } from "../../../server/app/fair-share.js";
import { WebhookSecret } from "../../../server/app/signature.js";
import { startBroker } from "../../helpers/broker.js";
import { Raw, type RawChannel, call, handshake, readResponse, requestFrame } from "../../helpers/raw.js";
import { AppServer, json } from "../../helpers/app-server.js";

const t = suite("fair share");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t("identities hogging a slow op leave another identity normal latency on that route and on another route of the same origin", async () => {
  const SLOW_MS = 2500;
  const app = await AppServer.start();
  app.on("/rpc", async (r, res) => {
    if (r.json.op === "app.slow") await sleep(SLOW_MS);
    json(res, { data: r.json.op });
  });
  app.on("/other", (r, res) => json(res, { data: r.json.op }));
  // Defaults: 256 in flight per route, 16 per identity, 5 s timeout.
  const broker = await startBroker(["--upstream", app.url("/rpc"), "--upstream", `other.=${app.url("/other")}`, "--hellos-per-address", "1000"], {
    env: { PSIMBOLS_UPSTREAM_SECRET: WebhookSecret.generate() },
  });
  const raws: Raw[] = [];
  try {
    // Five identities, each with 64 slow requests in flight (a connection's whole budget, PROTOCOL.md §11).
    const hogs: { raw: Raw; ch: RawChannel }[] = [];
    for (let i = 0; i < 5; i++) {
      const raw = await Raw.open(broker.url);
      raws.push(raw);
      hogs.push({ raw, ch: await handshake(raw, await generateSigningKey()) });
    }
    for (const h of hogs) for (let i = 0; i < 64; i++) h.raw.send(await requestFrame(h.ch, "app.slow", i));
    await sleep(300); // the hogs' requests are in flight or waiting
    const victim = await Raw.open(broker.url);
    raws.push(victim);
    const ch = await handshake(victim, await generateSigningKey());
    const slowest: Record<string, number> = {};
    for (const op of ["app.fast", "other.fast"]) {
      for (let i = 0; i < 10; i++) {
        const t0 = performance.now();
        assert.equal(await call(victim, ch, op), { data: op });
        slowest[op] = Math.max(slowest[op] ?? 0, performance.now() - t0);
      }
    }
    // Normal latency is a few ms; a shared queue behind the hogs costs the slow op's 2.5 s (or an instant `unavailable`).
    for (const [op, ms] of Object.entries(slowest)) assert.ok(ms < 1000, `${op}: ${ms.toFixed(0)} ms`);
    // The hogs wait for their own slots: 16 at a time each, so most of their 64 end as timeouts, theirs alone.
    const first = await readResponse(hogs[0]!.raw, hogs[0]!.ch);
    assert.equal(first, { data: "app.slow" });
  } finally {
    for (const r of raws) r.close();
    await broker.stop();
    await app.close();
  }
});

t("a full route gives its free slots round-robin among the identities waiting, one each in turn", async () => {
  const share = new FairShare(4, 2);
  const far = Date.now() + 60_000;
  assert.is(share.acquire("a", far), "now");
  assert.is(share.acquire("a", far), "now");
  assert.is(share.acquire("b", far), "now");
  assert.is(share.acquire("b", far), "now");
  const order: string[] = [];
  const wait = (id: string) => {
    const w = share.acquire(id, far);
    assert.instance(w, Promise);
    void (w as Promise<boolean>).then((ok) => ok && order.push(id));
  };
  // The hogs queued more before the newcomer: it is served at the first free slot, then the round goes on.
  wait("a");
  wait("a");
  wait("b");
  wait("v");
  share.release("a");
  share.release("b");
  share.release("a");
  share.release("b");
  await sleep(0);
  assert.equal(order, ["v", "a", "b", "a"]);
  assert.is(share.inFlight, 4);
  assert.is(share.waiting, 0);
});

t("an identity over its share waits behind its own calls while others go at once; a wait past its deadline ends false", async () => {
  const share = new FairShare(8, 2);
  const soon = Date.now() + 120;
  assert.is(share.acquire("a", soon), "now");
  assert.is(share.acquire("a", soon), "now");
  const w = share.acquire("a", soon);
  assert.instance(w, Promise);
  assert.is(share.acquire("b", soon), "now");
  assert.is(await w, false);
  assert.is(share.waiting, 0);
  share.release("a");
  assert.is(share.acquire("a", Date.now() + 1000), "now");
});

t("as many calls waiting as the route's capacity: the next is refused at once (saturated)", () => {
  const share = new FairShare(2, 2);
  const far = Date.now() + 60_000;
  share.acquire("a", far);
  share.acquire("a", far);
  assert.instance(share.acquire("a", far), Promise);
  assert.instance(share.acquire("a", far), Promise);
  assert.is(share.acquire("a", far), "saturated");
  assert.throws(() => new FairShare(0, 1), RangeError);
  assert.is(new FairShare(4, 16).share, 4);
});

t.run();
