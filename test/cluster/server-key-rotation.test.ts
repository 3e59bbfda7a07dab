/**
 * Server key rotation (PROTOCOL.md §5.6) on the local cluster: three real
 * nodes, Redis and HAProxy. `server-key next` on the shared key file makes
 * every node announce the next key; pinned clients (known_servers file, the
 * browser's localStorage store, an explicit pin) record it; after `promote`
 * they accept the new key without one `server_key_mismatch` (one of them also
 * resumes on another node when its node is killed mid-rollover), while a client
 * that was offline through the whole rollover fails loudly.
 */
import { rejectsWith } from "../helpers/refusal.js";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type Client, type ServerKeyEvent, connect } from "../../client/node.js";
import { LocalStorageKnownServers } from "../../client/browser.js";
import { type Cluster, startCluster } from "../../cli/cluster/local-cluster.js";
import { addNextServerKey, loadServerKeySet, promoteNextServerKey } from "../../server/server-key.js";
import { tempDir } from "../helpers/broker.js";

const t = suite("cluster: server key rotation followed by pinned clients");
let cluster: Cluster;
let dir: string;
t.before(async () => {
  dir = tempDir();
  try {
    cluster = await startCluster({ nodes: 4, nodeArgs: ["--hellos-per-address", "1000", "--server-key-poll", "100"] }); // three stay after one is killed
  } catch (e) {
    console.error(e);
    throw e;
  }
});
/** Every client a test opened: closed after the suite, so a failed assertion never leaves one reconnecting (a hang). */
const opened: Client[] = [];
t.after(async () => {
  await Promise.allSettled(opened.map((c) => c.close()));
  await cluster?.stop();
});

/** A Storage in memory: what LocalStorageKnownServers needs of the browser's localStorage. */
class MemoryStorage implements Storage {
  readonly #m = new Map<string, string>();
  get length() {
    return this.#m.size;
  }
  clear() {
    this.#m.clear();
  }
  getItem(k: string) {
    return this.#m.get(k) ?? null;
  }
  key(i: number) {
    return [...this.#m.keys()][i] ?? null;
  }
  removeItem(k: string) {
    this.#m.delete(k);
  }
  setItem(k: string, v: string) {
    this.#m.set(k, String(v));
  }
}

interface WellKnown {
  fingerprint: string;
  next_server_key?: { fingerprint: string; not_before: string };
}
async function wellKnown(port: number): Promise<WellKnown> {
  return (await (await fetch(`http://127.0.0.1:${port}/.well-known/psimbols`, { signal: AbortSignal.timeout(3000) })).json()) as WellKnown;
}
/** Waits until every node presents `current` (and `next`, or none). */
async function allNodes(current: string, next: string | undefined): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const states = await Promise.all(cluster.nodes.filter((n) => n.alive()).map((n) => wellKnown(n.port)));
    if (states.every((s) => s.fingerprint === current && s.next_server_key?.fingerprint === next)) return;
    if (Date.now() > deadline) assert.unreachable(`nodes did not reach ${current}/${next}: ${JSON.stringify(states)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const knownFile = (name: string) => join(dir, name);
const fileText = (name: string) => readFileSync(knownFile(name), "utf8");
async function connectFile(name: string, key: SigningKey, extra: object = {}): Promise<Client> {
  return track(await connect(cluster.url, { key, knownServersFile: knownFile(name), reconnect: { baseMs: 20, maxMs: 200 }, ...extra }));
}
function track(c: Client): Client {
  opened.push(c);
  return c;
}
/** The known-servers writes trail the `established` event (close() awaits them): wait for one, bounded. */
async function eventually(check: () => void, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

t("a pinned client follows a rotation across the cluster; one offline through it fails loudly", async () => {
  const old = cluster.fingerprint;
  const storage = new MemoryStorage();
  const events: ServerKeyEvent[] = [];
  const errors: PsimbolsError[] = [];
  const watch = (c: Client) => {
    c.on("serverKey", (e) => events.push(e));
    c.on("error", (e) => errors.push(e));
    return c;
  };

  // Before: pinned by trust on first use (a file, a browser store) and by an explicit pin.
  const fileClient = watch(await connectFile("a", await generateSigningKey()));
  const lsClient = watch(track(await connect(cluster.url, { key: await generateSigningKey(), knownServers: new LocalStorageKnownServers(storage) })));
  const pinClient = watch(track(await connect(cluster.url, { key: await generateSigningKey(), serverKey: old })));
  const offline = await connectFile("offline", await generateSigningKey());
  await offline.close();
  assert.is(fileText("a").trim(), `${cluster.url} ${old}`);

  // Rollover: every node announces the next key.
  const set = await addNextServerKey(cluster.serverKeyFile, { notBefore: new Date(Date.now() + 1500) });
  const next = set.next!.key.public.fingerprint;
  await allNodes(old, next);
  for (const c of [fileClient, lsClient, pinClient]) {
    await c.renew();
    assert.is(c.channel?.serverKey, old);
  }
  await eventually(() => assert.is(fileText("a").trim(), `${cluster.url} ${old} next=${next}`));
  assert.is(storage.getItem(`psimbols.known_server_next ${cluster.url}`), next);
  assert.is(storage.getItem(`psimbols.known_server ${cluster.url}`), old);
  assert.is(events.length, 3);
  assert.ok(events.every((e) => e.next === next && !e.rotated && e.current === old && e.notBefore === set.next!.notBefore));
  // Reconnecting during the rollover: the file client's node dies; it resumes its channel on another node.
  const home = ((await fileClient.request("whoami")) as { node: string }).node;
  const resumed = new Promise<void>((resolve) => fileClient.on("resumed", () => resolve()));
  await cluster.nodes.find((n) => n.name === home)!.kill("SIGKILL");
  await resumed;
  assert.is.not(((await fileClient.request("whoami")) as { node: string }).node, home);
  // A client that reconnects during the rollover, from the same file, learns nothing new and keeps both.
  const again = await connectFile("a", await generateSigningKey());
  await again.close();
  assert.is(fileText("a").trim(), `${cluster.url} ${old} next=${next}`);

  // Promotion refused before not-before; then done, while clients renew all the time.
  await rejectsWith(promoteNextServerKey(cluster.serverKeyFile), ErrorCode.badRequest);
  await new Promise((r) => setTimeout(r, 1600));
  let renewing = true;
  const churn = (async () => {
    let n = 0;
    // bounded: 30 proven handshakes per identity per minute is the nodes' limit
    while (renewing && n < 12) {
      await Promise.allSettled([fileClient.renew(), lsClient.renew(), pinClient.renew()]);
      await new Promise((r) => setTimeout(r, 40));
      n++;
    }
    return n;
  })();
  await promoteNextServerKey(cluster.serverKeyFile);
  await allNodes(next, undefined);
  renewing = false;
  assert.ok((await churn) > 0);
  for (const c of [fileClient, lsClient, pinClient]) {
    await c.renew();
    assert.is(c.channel?.serverKey, next);
    await c.renew(); // and again, once the switch is behind it: the followed key stays accepted
    assert.is(c.channel?.serverKey, next);
    assert.is(c.state, "ready");
    assert.equal(await c.request("echo", 7), 7);
  }
  assert.equal(errors.filter((e) => e.code === ErrorCode.serverKeyMismatch), []);
  assert.equal(
    events.filter((e) => e.rotated).map((e) => [e.previous, e.current]),
    [[old, next], [old, next], [old, next]],
  );
  // The stores now hold the new key alone: the old one is no longer accepted from them.
  await eventually(() => assert.is(fileText("a").trim(), `${cluster.url} ${next}`));
  assert.is(storage.getItem(`psimbols.known_server ${cluster.url}`), next);
  assert.is(storage.getItem(`psimbols.known_server_next ${cluster.url}`), null);

  // A fresh process with the followed file connects; a client offline through it all fails loudly.
  const later = await connectFile("a", await generateSigningKey());
  assert.is(later.channel?.serverKey, next);
  await later.close();
  const before = fileText("offline");
  const e = await rejectsWith(connectFile("offline", await generateSigningKey()), ErrorCode.serverKeyMismatch);
  assert.match(e.message, /SERVER KEY MISMATCH/);
  assert.is(fileText("offline"), before);
  // An explicit pin of the old key alone fails too; a pin set naming the new key connects.
  await rejectsWith(connect(cluster.url, { key: await generateSigningKey(), serverKey: old, reconnect: false }), ErrorCode.serverKeyMismatch);
  const pinSet = track(await connect(cluster.url, { key: await generateSigningKey(), serverKey: [old, next], reconnect: false }));
  assert.is(pinSet.channel?.serverKey, next);
  await pinSet.close();
  await Promise.all([fileClient.close(), lsClient.close(), pinClient.close()]);
});

t("a known_servers store without setNext is warned about; the client object still follows and records the switch", async () => {
  const store = new Map<string, string>();
  const minimal = { get: (u: string) => store.get(u), set: (u: string, f: string) => void store.set(u, f) };
  const warnings: string[] = [];
  const logger = { debug() {}, info() {}, warn: (m: string) => void warnings.push(m) };
  // finish a rollover the test above may have left when it failed
  await promoteNextServerKey(cluster.serverKeyFile, { force: true }).catch(() => undefined);
  const cur = (await loadServerKeySet(cluster.serverKeyFile)).current.public.fingerprint;
  await allNodes(cur, undefined);
  const c = track(await connect(cluster.url, { key: await generateSigningKey(), knownServers: minimal, reconnect: false, logger }));
  const set = await addNextServerKey(cluster.serverKeyFile, { notBefore: new Date() });
  const next = set.next!.key.public.fingerprint;
  await allNodes(cur, next);
  await c.renew();
  assert.is(store.get(cluster.url), cur);
  assert.ok(warnings.some((w) => /cannot record the next server key/.test(w)), warnings.join("\n"));
  await promoteNextServerKey(cluster.serverKeyFile);
  await allNodes(next, undefined);
  // this client object itself follows (it keeps the announced key in memory) and records the switch
  await c.renew();
  assert.is(c.channel?.serverKey, next);
  await eventually(() => assert.is(store.get(cluster.url), next));
  await c.close();
  // a client that kept its own copy of the old pin fails loudly
  const copy = { get: () => cur, set: () => {} };
  await rejectsWith(connect(cluster.url, { key: await generateSigningKey(), knownServers: copy, reconnect: false }), ErrorCode.serverKeyMismatch);
});

t.run();
