/**
 * Applications behind a cluster (docs/BACKEND.md, docs/CLUSTER.md), upstream half: a three-node local cluster behind
 * HAProxy whose nodes forward to the Python example backend (`npm run
 * cluster -- --app`): a client calls kv.put/kv.get through the balancer, the
 * backend sees its verified fingerprint on every node, reads the nodes'
 * lifecycle events from the stream, and a key off the allow-list gets `forbidden`.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { connect } from "../../client/node.js";
import { findOnPath } from "../../cli/cluster/net.js";
import { type Cluster, startCluster } from "../../cli/cluster/local-cluster.js";
import { skip } from "../helpers/skip.js";

const t = suite("cluster with the python example backend");
const PYTHON = findOnPath("python3");
let cluster: Cluster;
let me: SigningKey;
/** The channels the first test made and closed, in order. */
const made: string[] = [];

t.before(async () => {
  if (!PYTHON) return;
  me = await generateSigningKey();
  try {
    cluster = await startCluster({ nodes: 3, app: { allow: [me.public.fingerprint] }, nodeArgs: ["--hellos-per-address", "1000"] });
  } catch (e) {
    console.error(e);
    throw e;
  }
});
t.after(async () => {
  await cluster?.stop();
});

if (!PYTHON) {
  skip(t, "the python example backend behind the cluster", "python3 is not on PATH");
} else {
  t("kv.put and kv.get through HAProxy reach the backend with the client's fingerprint, from every node", async () => {
    const nodes = new Set<string>();
    for (let i = 0; i < 6; i++) {
      // A fresh connection each time: round robin spreads them over the nodes.
      const c = await connect(cluster.url, { key: me, serverKey: cluster.fingerprint, reconnect: false });
      const who = (await c.request("app.whoami", null)) as { identity: string; node: string; info: unknown };
      made.push(c.channel!.id);
      nodes.add(who.node);
      assert.is(who.identity, me.public.fingerprint);
      assert.equal(who.info, { allowed_by: "allow-list" });
      assert.equal(await c.request("kv.put", { key: `k${i}`, value: i }), { ok: true, identity: me.public.fingerprint });
      await c.close();
    }
    assert.equal([...nodes].sort(), ["node1", "node2", "node3"]);
    const c = await connect(cluster.url, { key: me, serverKey: cluster.fingerprint, reconnect: false });
    made.push(c.channel!.id);
    for (let i = 0; i < 6; i++) assert.equal(await c.request("kv.get", { key: `k${i}` }), { value: i, identity: me.public.fingerprint });
    await c.close();
  });

  t("the backend reads the nodes' lifecycle events from the Redis stream: the client's own, in order", async () => {
    const c = await connect(cluster.url, { key: me, serverKey: cluster.fingerprint, reconnect: false });
    const mine = [...made, c.channel!.id];
    type Ev = { type: string; node: string; data: { channel?: string } };
    let got: Ev[] = [];
    const seen = (channel: string, type: string) => got.some((e) => e.type === type && e.data.channel === channel);
    // The seven connections above each established and then closed a channel; this one established one more.
    const complete = () => made.every((ch) => seen(ch, "channel.established") && seen(ch, "channel.closed")) && seen(c.channel!.id, "channel.established");
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
      got = (await c.request("app.events", null)) as Ev[];
      if (complete()) break;
    }
    assert.is(made.length, 7, "the first test made seven channels");
    assert.ok(complete(), JSON.stringify(got.map((e) => [e.type, e.data.channel])));
    // Its own: the example files events under the stream entry's identity field and keeps the event's
    // data; every event it gives this client names one of this client's channels (random ids).
    for (const e of got) assert.ok(e.data.channel !== undefined && mine.includes(e.data.channel), `an event of a channel this client never had: ${JSON.stringify(e)}`);
    // In order: a channel's events come as it lived them, established before closed.
    for (const ch of made) {
      const types = got.filter((e) => e.data.channel === ch).map((e) => e.type);
      assert.equal(types, ["channel.established", "channel.closed"], `channel ${made.indexOf(ch)}`);
    }
    assert.equal(new Set(got.filter((e) => e.type === "channel.established").map((e) => e.node)).size, 3, "events from every node");
    await c.close();
  });

  t("a key the backend does not allow gets forbidden through the balancer", async () => {
    const err = await connect(cluster.url, { key: await generateSigningKey(), serverKey: cluster.fingerprint, reconnect: false }).then(
      () => "connected",
      (e: { code?: string }) => e.code,
    );
    assert.is(err, "forbidden");
  });
}

t.run();
