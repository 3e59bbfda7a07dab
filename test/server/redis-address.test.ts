/**
 * Redis addresses (server/store/redis-address.ts): the direct and Sentinel
 * forms, and every malformed one refused with an error that never repeats
 * the address (it may carry a password).
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DEFAULT_WAIT_MS, DEFAULT_WAIT_REPLICAS, RedisAddressError, describeRedisAddress, parseRedisAddress } from "../../server/store/redis-address.js";
import { RedisStore } from "../../server/store/redis-store.js";
import { RedisRegistry } from "../../server/registry.js";

const t = suite("redis addresses");

t("redis:// and rediss:// pass through unchanged", () => {
  assert.equal(parseRedisAddress("redis://127.0.0.1:6380/2"), { kind: "direct", url: "redis://127.0.0.1:6380/2" });
  assert.equal(parseRedisAddress("rediss://u:p@h:1"), { kind: "direct", url: "rediss://u:p@h:1" });
});

t("redis+sentinel:// gives sentinels, master name, database, credentials and the replica wait", () => {
  const a = parseRedisAddress("redis+sentinel://me:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/mymaster/3?sentinel_password=sp&wait_replicas=2&wait_ms=500");
  assert.equal(a, {
    kind: "sentinel",
    sentinels: [
      { host: "10.0.0.1", port: 26380 },
      { host: "sentinel-b", port: 26379 },
      { host: "::1", port: 26381 },
    ],
    name: "mymaster",
    db: 3,
    tls: false,
    waitReplicas: 2,
    waitMs: 500,
    username: "me",
    password: "s@cret",
    sentinelPassword: "sp",
  });
  const b = parseRedisAddress("rediss+sentinel://h:1/m");
  assert.ok(b.kind === "sentinel" && b.tls && b.db === 0 && b.waitReplicas === DEFAULT_WAIT_REPLICAS && b.waitMs === DEFAULT_WAIT_MS);
  assert.ok(b.kind === "sentinel" && b.password === undefined && b.username === undefined);
  const c = parseRedisAddress("redis+sentinel://h/m?wait_replicas=0");
  assert.ok(c.kind === "sentinel" && c.waitReplicas === 0);
});

const bad: [string, RegExp][] = [
  ["http://h:1/", /unknown scheme/],
  ["h:6379", /unknown scheme/],
  ["redis+sentinel://h:26379", /no master name/],
  ["redis+sentinel:///m", /not host or host:port/],
  ["redis+sentinel://h:26379,/m", /not host or host:port/],
  ["redis+sentinel://h:99999/m", /out of range/],
  ["redis+sentinel://h:0/m", /out of range/],
  ["redis+sentinel://h x:1/m", /not host or host:port/],
  ["redis+sentinel://h/", /master name/],
  ["redis+sentinel://h/m a", /master name/],
  ["redis+sentinel://h/m/x", /database must be a number/],
  ["redis+sentinel://h/m/1/2", /too many path segments/],
  ["redis+sentinel://h/m?wait_replicas=-1", /wait_replicas/],
  ["redis+sentinel://h/m?wait_replicas=17", /wait_replicas/],
  ["redis+sentinel://h/m?wait_ms=0", /wait_ms/],
  ["redis+sentinel://h/m?password=x", /unknown option "password"/],
  ["redis+sentinel://u:%zz@h/m", /password is not valid percent-encoding/],
];
for (const [address, why] of bad) {
  t(`refuses ${JSON.stringify(address.replace(/:[^:@/]*@/, ":***@"))} with a message that does not repeat it`, () => {
    let caught: unknown;
    try {
      parseRedisAddress(address);
    } catch (e) {
      caught = e;
    }
    assert.instance(caught, RedisAddressError);
    const message = (caught as Error).message;
    assert.match(message, why);
    assert.not.ok(message.includes(address), "the address is in the message");
  });
}

t("a password never reaches a message or a description", () => {
  const secret = "hunter2-very-secret";
  for (const address of [`redis+sentinel://u:${secret}@h:1/m?wait_ms=bad`, `redis+sentinel://u:${secret}@h:1,bad host/m`]) {
    try {
      parseRedisAddress(address);
      assert.unreachable("accepted");
    } catch (e) {
      assert.not.ok((e as Error).message.includes(secret));
    }
  }
  assert.is(describeRedisAddress(`redis+sentinel://u:${secret}@h:1,g:2/m?sentinel_password=${secret}`), 'sentinel master "m" via h:1,g:2');
  assert.is(describeRedisAddress(`redis://u:${secret}@h:1`), "redis://h:1");
});

t("RedisStore and RedisRegistry take both forms and refuse a malformed one before connecting", async () => {
  const wrapKey = new Uint8Array(32).fill(7);
  assert.throws(() => new RedisStore({ url: "redis+sentinel://h:1", wrapKey }), (e: Error) => e instanceof RedisAddressError);
  assert.throws(() => new RedisStore({ url: "memcached://h", wrapKey }), (e: Error) => e instanceof RedisAddressError);
  assert.throws(() => new RedisRegistry("redis+sentinel://h:1/"), (e: Error) => e instanceof RedisAddressError);
  // Well-formed: constructed (connecting in the background to nothing), then closed.
  const s = new RedisStore({ url: "redis+sentinel://127.0.0.1:1/m", wrapKey, connectTimeoutMs: 200 });
  await s.close();
  const r = new RedisRegistry("redis+sentinel://127.0.0.1:1/m");
  await r.close();
});

t.run();
