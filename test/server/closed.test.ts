/**
 * Closed service: registered and unregistered keys look alike until a valid
 * proof; `forbidden` only then. Keys added or removed take effect without a restart.
 * Blocked keys (any service, SECURITY.md W12): refused the same way, by fingerprint.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { fromB64u, fromUtf8 } from "../../shared/encoding.js";
import { CloseCode } from "../../shared/errors.js";
import { answerChallenge, createHello } from "../../shared/handshake.js";
import { decodeServerFrame, type Challenge } from "../../shared/frames.js";
import { connect, loadKey } from "../../client/node.js";
import { type RunningBroker, operatorKeys, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { Raw, call, handshake } from "../helpers/raw.js";

const t = suite("closed service");
let broker: RunningBroker;
let dir: string;
let keys: string;
let registered: SigningKey;

t.before(async () => {
  dir = tempDir();
  keys = join(dir, "keys.json");
  assert.is((await runCli(["keygen", "-o", join(dir, "member.pem")])).code, 0);
  assert.is((await runCli(["keys", "add", join(dir, "member.pem"), "--file", keys, "--comment", "test member"])).code, 0);
  registered = await loadKey(join(dir, "member.pem"));
  broker = await startBroker(["--closed", "--keys", keys, "--hellos-per-address", "1000"]);
});
t.after(async () => {
  await broker.stop();
});

async function challengeFor(key: SigningKey): Promise<{ raw: Raw; c: Challenge; h: Awaited<ReturnType<typeof createHello>> }> {
  const raw = await Raw.open(broker.url);
  const h = await createHello(key);
  raw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
  return { raw, c, h };
}

t("a registered and an unregistered key get challenges of the same shape", async () => {
  const a = await challengeFor(registered);
  const b = await challengeFor(await generateSigningKey());
  assert.is(a.c.type, "challenge");
  assert.is(b.c.type, "challenge");
  const shape = (c: Challenge) =>
    Object.entries(c).map(([k, v]) => [k, typeof v === "string" && k !== "source" && k !== "type" && k !== "channel_type" ? fromB64u(v, k).length : v]);
  const sa = shape(a.c).filter(([k]) => k !== "server_key");
  const sb = shape(b.c).filter(([k]) => k !== "server_key");
  assert.equal(sa, sb);
  a.raw.close();
  b.raw.close();
});

t("an unregistered key gets forbidden only after a valid proof, then close 4008", async () => {
  const { raw, c, h } = await challengeFor(await generateSigningKey());
  const { proof } = await answerChallenge(h, c, () => {});
  raw.send(proof);
  const f = await raw.next();
  assert.is(f.error.code, "forbidden");
  assert.is((await raw.closed).code, CloseCode.forbidden.code);
});

t("an unregistered key with a bad proof gets unauthorised, not forbidden", async () => {
  const { raw, c, h } = await challengeFor(await generateSigningKey());
  const { proof } = await answerChallenge({ ...h, identity: await generateSigningKey() }, c, () => {});
  raw.send(proof);
  assert.is((await raw.next()).error.code, "unauthorised");
});

t("a registered key gets a channel", async () => {
  const raw = await Raw.open(broker.url);
  const ch = await handshake(raw, registered);
  assert.equal(await call(raw, ch, "echo", "member"), { data: "member" });
  raw.close();
});

t("keys added and removed take effect without a restart", async () => {
  const file = join(dir, "late.pem");
  assert.is((await runCli(["keygen", "-o", file])).code, 0);
  const late = await loadKey(file);
  assert.is((await runCli(["keys", "add", file, "--file", keys])).code, 0);
  await new Promise((r) => setTimeout(r, 1100)); // the registry re-reads at most once a second
  const raw = await Raw.open(broker.url);
  await handshake(raw, late);
  raw.close();
  const removed = await runCli(["keys", "remove", late.public.fingerprint, "--file", keys]);
  assert.is(removed.code, 0, removed.stderr);
  await new Promise((r) => setTimeout(r, 1100));
  const { raw: r2, c, h } = await challengeFor(late);
  r2.send((await answerChallenge(h, c, () => {})).proof);
  assert.is((await r2.next()).error.code, "forbidden");
});

t("a client whose key is removed is refused on each renewal and stops after five refusals in a row (MAX_HANDSHAKE_REFUSALS)", async () => {
  const file = join(dir, "leaving.pem");
  assert.is((await runCli(["keygen", "-o", file])).code, 0);
  assert.is((await runCli(["keys", "add", file, "--file", keys])).code, 0);
  await new Promise((r) => setTimeout(r, 1100)); // the registry re-reads at most once a second
  const c = await connect(broker.url, { key: await loadKey(file), serverKey: broker.fingerprint, renew: false, reconnect: { baseMs: 10, maxMs: 50 } });
  const closed = new Promise<{ code?: string }>((r) => c.on("close", (e) => r({ code: e.error?.code })));
  assert.equal(await c.request("echo", 1), 1);
  assert.is((await runCli(["keys", "remove", (await loadKey(file)).public.fingerprint, "--file", keys])).code, 0);
  await new Promise((r) => setTimeout(r, 1100));
  const codes: string[] = [];
  for (let i = 1; i <= 5; i++) {
    // The node closes the socket after `forbidden` (4008); below the limit the client resumes its channel.
    if (i > 1) {
      const resumed = await Promise.race([
        new Promise<boolean>((r) => {
          const off = c.on("resumed", () => (off(), r(true)));
        }),
        new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
      ]);
      assert.ok(resumed, `no resume after ${i - 1} refusals (state ${c.state})`);
    }
    codes.push(await c.renew().then(() => "renewed", (e: { code: string }) => e.code));
  }
  assert.equal(codes, Array(5).fill("forbidden"));
  const end = await Promise.race([closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000))]);
  assert.is(end?.code, "forbidden", "the client did not stop after the fifth refusal");
  assert.is(c.state, "closed");
});

t.run();

// ---------------------------------------------------------------- blocked keys on an open service
const b = suite("blocked keys (open service)");
let open: RunningBroker;
let openKeys: string;
let openOperator: string;
b.before(async () => {
  ({ keysFile: openKeys, keyFile: openOperator } = await operatorKeys());
  open = await startBroker(["--keys", openKeys, "--hellos-per-address", "1000"]);
});
b.after(async () => {
  await open.stop();
});

b("a key blocked by fingerprint gets forbidden after a valid proof (close 4008) without a restart; others and its own channel are untouched until revoked", async () => {
  const stolen = await generateSigningKey();
  const other = await generateSigningKey();
  // Before the block: a channel for the key, which stays until the operator revokes it.
  const before = await Raw.open(open.url);
  const ch = await handshake(before, stolen);
  const added = await runCli(["keys", "add", stolen.public.fingerprint, "--role", "blocked", "--comment", "stolen laptop", "--file", openKeys]);
  assert.is(added.code, 0, added.stderr);
  assert.match(added.stdout, "(blocked)");
  const list = await runCli(["keys", "list", "--file", openKeys]);
  assert.match(list.stdout, `${stolen.public.fingerprint}  -  blocked  stolen laptop`);
  await new Promise((r) => setTimeout(r, 1100)); // the registry re-reads at most once a second
  // The hello of a blocked key looks like any other: a challenge.
  const raw = await Raw.open(open.url);
  const h = await createHello(stolen);
  raw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
  assert.is(c.type, "challenge");
  raw.send((await answerChallenge(h, c, () => {})).proof);
  const e = await raw.next();
  assert.is(e.error.code, "forbidden");
  assert.is(e.error.message, "this key is blocked by the service");
  assert.is((await raw.closed).code, CloseCode.forbidden.code);
  // Another key is served; the blocked key's existing channel still answers (block, then revoke).
  const o = await Raw.open(open.url);
  const otherCh = await handshake(o, other);
  assert.equal(await call(o, otherCh, "echo", 1), { data: 1 });
  assert.equal(await call(before, ch, "echo", 2), { data: 2 });
  // The operator revokes it: the channel ends (4005), the other key's channel is still untouched.
  const op = await Raw.open(open.url);
  const och = await handshake(op, await loadKey(openOperator));
  assert.equal(await call(op, och, "admin.revoke", { identity: stolen.public.fingerprint }), { data: { revoked: [ch.grant.channel] } });
  assert.is((await before.closed).code, CloseCode.revoked.code);
  assert.equal(await call(o, otherCh, "echo", 4), { data: 4 });
  // Unblocking takes effect too.
  assert.is((await runCli(["keys", "remove", stolen.public.fingerprint, "--file", openKeys])).code, 0);
  await new Promise((r) => setTimeout(r, 1100));
  const again = await Raw.open(open.url);
  assert.equal(await call(again, await handshake(again, stolen), "echo", 3), { data: 3 });
  for (const r of [before, o, op, again]) r.close();
});

b("only the blocked role takes a bare fingerprint: a client or operator entry needs the public key", async () => {
  const fp = (await generateSigningKey()).public.fingerprint;
  for (const role of ["client", "operator"]) {
    const r = await runCli(["keys", "add", fp, "--role", role, "--file", openKeys]);
    assert.is(r.code, 1);
    assert.match(r.stderr, "needs its public key");
  }
  const list = await runCli(["keys", "list", "--file", openKeys, "--json"]);
  assert.not.match(list.stdout, fp);
});

b.run();
