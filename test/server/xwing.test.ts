/**
 * X-Wing (PROTOCOL.md §5.3.1) against real broker processes over real sockets: the
 * Node client and a raw peer complete X-Wing handshakes with a broker's
 * default configuration; a broker started with `--kems` that leaves X-Wing
 * out answers `unsupported` and changes nothing; `kems` is validated.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { generateSigningKey } from "../../shared/crypto.js";
import { fromUtf8 } from "../../shared/encoding.js";
import { PsimbolsError } from "../../shared/errors.js";
import { createHello } from "../../shared/handshake.js";
import { FileKnownServers, connect } from "../../client/node.js";
import { generateKeyFile } from "../../node/key-files.js";
import { resolveConfig } from "../../server/config.js";
import { CLI, type RunningBroker, startBroker, tempDir } from "../helpers/broker.js";
import { Raw, call, handshake } from "../helpers/raw.js";

const t = suite("x-wing");
let broker: RunningBroker;
let classic: RunningBroker;

t.before(async () => {
  [broker, classic] = await Promise.all([
    startBroker(["--hellos-per-address", "1000"]),
    startBroker(["--hellos-per-address", "1000", "--kems", "X25519,P-256"]),
  ]);
});
t.after(async () => {
  await Promise.all([broker.stop(), classic.stop()]);
});

const noFile = () => new FileKnownServers(join(tempDir(), "known_servers"));

t("a broker accepts X-Wing by default and says so at /.well-known/psimbols", async () => {
  const info = (await (await fetch(`http://127.0.0.1:${broker.port}/.well-known/psimbols`)).json()) as { kems: string[] };
  assert.equal(info.kems, ["X25519", "P-256", "X-Wing"]);
  const info2 = (await (await fetch(`http://127.0.0.1:${classic.port}/.well-known/psimbols`)).json()) as { kems: string[] };
  assert.equal(info2.kems, ["X25519", "P-256"]);
});

t("the Node client completes an X-Wing handshake with the broker and makes requests", async () => {
  const c = await connect(broker.url, { key: await generateSigningKey(), serverKey: broker.fingerprint, kem: "X-Wing" });
  assert.equal(await c.request("echo", { pq: true }), { pq: true });
  assert.is(c.channel?.serverKey, broker.fingerprint);
  await c.close();
});

t("a raw peer's X-Wing hello gets a 1120-byte enc, and the channel works", async () => {
  const raw = await Raw.open(broker.url);
  const seen: number[] = [];
  const orig = raw.next.bind(raw);
  raw.next = async () => {
    const f = await orig();
    if (f.type === "challenge") seen.push(Buffer.from(f.enc as string, "base64url").length);
    return f;
  };
  const ch = await handshake(raw, await generateSigningKey(), { kem: "X-Wing" });
  assert.equal(seen, [1120]);
  assert.equal(await call(raw, ch, "echo", "pq"), { data: "pq" });
  raw.close();
});

t("a broker whose --kems leaves X-Wing out answers an X-Wing hello with unsupported naming what it accepts; the socket stays usable", async () => {
  const raw = await Raw.open(classic.url);
  const id = await generateSigningKey();
  const h = await createHello(id, { kem: "X-Wing" });
  raw.send(fromUtf8(h.bytes));
  const f = await raw.next();
  assert.is(f.type, "error");
  assert.is(f.error.code, "unsupported");
  assert.is(f.error.message, "kem.type not supported; accepted: X25519, P-256");
  // nothing was granted: the identity has no channel, and an X25519 hello on the same socket completes
  const ch = await handshake(raw, id);
  assert.is((await call(raw, ch, "whoami")).data.identity, id.public.fingerprint);
  raw.close();
});

t("the Node client asking for X-Wing from such a broker fails with unsupported", async () => {
  try {
    await connect(classic.url, { key: await generateSigningKey(), knownServers: noFile(), kem: "X-Wing", reconnect: false });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, PsimbolsError);
    assert.is((e as PsimbolsError).code, "unsupported");
  }
});

t("psimbols call --kem X-Wing makes a request over an X-Wing handshake", async () => {
  const dir = tempDir();
  await generateKeyFile("Ed25519", join(dir, "id.pem"));
  const { stdout } = await promisify(execFile)(process.execPath, [CLI, "call", broker.url, "echo", '{"a":1}', "--key", join(dir, "id.pem"), "--server-key", broker.fingerprint, "--kem", "X-Wing"], {
    env: { ...process.env, PSIMBOLS_HOME: dir },
  });
  assert.equal(JSON.parse(stdout), { a: 1 });
});

t("setting kems: an empty list, an unknown KEM or a repeated one fails naming the setting", () => {
  assert.equal(resolveConfig({ dataDir: "/nonexistent" }).kems, ["X25519", "P-256", "X-Wing"]);
  assert.equal(resolveConfig({ dataDir: "/nonexistent", kems: ["X-Wing"] }).kems, ["X-Wing"]);
  for (const bad of [[], ["DES"], ["X25519", "X25519"], ["x-wing"], "X-Wing"]) {
    assert.throws(() => resolveConfig({ dataDir: "/nonexistent", kems: bad as never }), /^setting kems: expected a non-empty list of distinct KEM types from X25519, P-256, X-Wing, got /, JSON.stringify(bad));
  }
});

t.run();
