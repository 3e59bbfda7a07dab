/**
 * Identity key rotation (PROTOCOL.md §5.7) on the local cluster: a closed
 * service whose registered keys live in Redis, three nodes behind HAProxy.
 * The move re-keys the Redis registration (role, comment) and copies the kept
 * pushes into the new identity's window, as every node then sees.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { connect } from "../../client/node.js";
import { type Cluster, startCluster } from "../../cli/cluster/local-cluster.js";
import { RedisRegistry, Role } from "../../server/registry.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { parseWrapKey } from "../../server/store/wrap.js";

const t = suite("cluster: identity key rotation with the registry and pushes in Redis");
let cluster: Cluster;
t.before(async () => {
  try {
    cluster = await startCluster({ nodes: 3, nodeArgs: ["--closed", "--hellos-per-address", "1000"] });
  } catch (e) {
    console.error(e);
    throw e;
  }
});
t.after(async () => {
  await cluster?.stop();
});

t("a move through the balancer re-keys the Redis registration and carries the kept pushes; the old key is refused on every node", async () => {
  const registry = new RedisRegistry(cluster.redis.url);
  const store = new RedisStore({ url: cluster.redis.url, wrapKey: parseWrapKey(cluster.wrapKey) });
  const [old, next] = [await generateSigningKey(), await generateSigningKey()];
  try {
    await registry.add(old.public, { role: Role.client, comment: "sensor 12" });
    for (const m of ["a", "b", "c"]) await store.push(old.public.fingerprint, JSON.stringify(m), { count: 1000, ageMs: 3600_000 });
    const c = await connect(cluster.url, { key: old, serverKey: cluster.fingerprint, reconnect: false });
    await c.moveIdentity(next);
    assert.is(c.identity, next.public.fingerprint);
    assert.is(((await c.request("whoami")) as { identity: string }).identity, next.public.fingerprint);
    // the registration, re-keyed in Redis
    assert.is(await registry.lookup(old.public.fingerprint), undefined);
    const moved = await registry.lookup(next.public.fingerprint);
    assert.equal([moved?.role, moved?.comment, moved?.moved_from], [Role.client, "sensor 12", old.public.fingerprint]);
    // the kept pushes, in the new identity's window (wrapped for it: the store unwraps them)
    const kept = await store.pushesSince(next.public.fingerprint, 0);
    assert.ok(kept !== "gap");
    assert.equal(kept.map((k) => JSON.parse(k.data)), ["a", "b", "c"]);
    await c.close();
    // every node refuses the old key now (a closed service: forbidden after the proof), and serves the new one
    for (const node of cluster.nodes) {
      try {
        await connect(node.url, { key: old, serverKey: cluster.fingerprint, reconnect: false });
        assert.unreachable(node.url);
      } catch (e) {
        assert.is((e as PsimbolsError).code, ErrorCode.forbidden, node.url);
      }
      const n = await connect(node.url, { key: next, serverKey: cluster.fingerprint, reconnect: false });
      assert.is(((await n.request("whoami")) as { identity: string }).identity, next.public.fingerprint);
      await n.close();
    }
  } finally {
    await registry.close();
    await store.close();
  }
});

t.run();
