/**
 * Identity key rotation (PROTOCOL.md §5.7) against a real closed broker
 * process: one handshake proves the old and the new key; the registration
 * (role, comment) and the kept pushes move, the old identity's channel ends
 * with `revoked`; a stolen old key alone, a blocked key, or a taken target
 * cannot move anything.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { KeyType, type SigningKey, generateSigningKey, randomBytes } from "../../shared/crypto.js";
import { b64u, fromB64u, fromUtf8 } from "../../shared/encoding.js";
import { type Challenge, decodeServerFrame } from "../../shared/frames.js";
import { answerChallenge, createHello } from "../../shared/handshake.js";
import { type Client, connect, generateKeyFile, loadKey } from "../../client/node.js";
import { type RunningBroker, operatorKeys, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { type Frame, Raw, call, handshake, openPush, rawChannel, requestFrame } from "../helpers/raw.js";

const t = suite("identity key rotation");
let broker: RunningBroker;
let keysFile: string;
let operator: Client;
const dir = tempDir();

interface Entry {
  fingerprint: string;
  role: string;
  comment: string;
  moved_from?: string;
}
const entries = (): Entry[] => (JSON.parse(readFileSync(keysFile, "utf8")) as { keys: Entry[] }).keys;
const entry = (fp: string) => entries().find((k) => k.fingerprint === fp);

/** A key registered with the service (client role, a comment). */
async function registered(name: string, role = "client"): Promise<{ file: string; key: SigningKey }> {
  const file = join(dir, `${name}.pem`);
  await generateKeyFile(KeyType.ed25519, file);
  const r = await runCli(["keys", "add", file, "--role", role, "--comment", `${name}'s laptop`, "--file", keysFile]);
  assert.is(r.code, 0, r.stderr);
  await new Promise((res) => setTimeout(res, 1100)); // the node re-reads the keys file at most once a second
  return { file, key: await loadKey(file) };
}

t.before(async () => {
  const op = await operatorKeys();
  keysFile = op.keysFile;
  broker = await startBroker(["--closed", "--keys", keysFile, "--hellos-per-address", "1000"]);
  operator = await connect(broker.url, { key: op.keyFile, serverKey: broker.fingerprint, reconnect: false });
});
t.after(async () => {
  await operator?.close();
  await broker?.stop();
});

/** A hello asking to move `from` to `to`, answered with a proof whose move signature is made by `signer`. */
async function moveAttempt(from: SigningKey, to: SigningKey, signer: SigningKey = to, strip = false): Promise<{ raw: Raw; answer: Frame; closed: Promise<{ code: number }> }> {
  const raw = await Raw.open(broker.url);
  // the public half is the target's, the private half the signer's: a key that cannot sign for the target
  const h = await createHello(from, { moveTo: signer === to ? to : { public: to.public, privateKey: signer.privateKey } as SigningKey });
  raw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
  const { proof } = await answerChallenge(h, c, () => {});
  raw.send(strip ? { type: "proof", signature: proof.signature } : proof);
  return { raw, answer: await raw.next().catch(() => ({ type: "none" })), closed: raw.closed };
}

t("a move keeps the role, comment and kept pushes, and ends the old identity's channel with revoked", async () => {
  const alice = await registered("alice");
  const next = await generateSigningKey();
  const standing = await Raw.open(broker.url);
  const old = await handshake(standing, alice.key);
  for (const m of ["m1", "m2"]) assert.ok(((await operator.request("admin.push", { identity: alice.key.public.fingerprint, message: m })) as { seq: number }).seq > 0);
  // the standing socket got both pushes live
  const live = [await openPush(old, await standing.next()), await openPush(old, await standing.next())];
  assert.equal(live.map((p) => p.message), ["m1", "m2"]);

  const mover = await Raw.open(broker.url);
  const ch = await handshake(mover, alice.key, { moveTo: next });
  // the old identity's channel: a terminal `revoked`, authenticated, then close 4005
  const notice = await openPush(old, await standing.next());
  assert.is(notice.notice, "revoked");
  assert.is((await standing.closed).code, 4005);
  // the registration moved, role and comment kept
  assert.is(entry(alice.key.public.fingerprint), undefined);
  assert.equal(
    { ...entry(next.public.fingerprint), added: undefined, moved: undefined },
    { ...entry(next.public.fingerprint), fingerprint: next.public.fingerprint, role: "client", comment: "alice's laptop", moved_from: alice.key.public.fingerprint, added: undefined, moved: undefined },
  );
  // the new channel is the new identity's
  assert.is(((await call(mover, ch, "whoami")) as { data: { identity: string } }).data.identity, next.public.fingerprint);
  // the kept pushes are in the new identity's window: a resume from push 0 gets them
  const again = await Raw.open(broker.url);
  const nonceC = randomBytes(32);
  again.send({ type: "resume", channel: ch.grant.channel, nonce: b64u(nonceC), last_push: 0 });
  const resumed = await again.next();
  assert.is(resumed.type, "resumed");
  Object.assign(ch, await rawChannel(ch.grant, ch.channelKey, nonceC, fromB64u(resumed.nonce, "nonce")));
  again.send(await requestFrame(ch, "echo", 1));
  const got: Frame[] = [];
  for (let i = 0; i < 6 && got.length < 2; i++) {
    const f = await again.next(3000);
    if (f.type === "push") got.push(await openPush(ch, f));
  }
  assert.equal(got.map((p) => p.message), ["m1", "m2"]);
  // and the old key is no longer registered: a closed service refuses it after its proof
  const oldAgain = await Raw.open(broker.url);
  await handshake(oldAgain, alice.key).then(
    () => assert.unreachable("the old key got a channel"),
    () => undefined,
  );
  assert.is((await oldAgain.closed).code, 4008);
  for (const r of [mover, again]) r.close();
});

t("a stolen old key alone cannot move: a move signature by another key gets unauthorised, close 4000, nothing moved", async () => {
  const bob = await registered("bob");
  const standing = await Raw.open(broker.url);
  const ch = await handshake(standing, bob.key);
  const before = readFileSync(keysFile, "utf8");
  const target = await generateSigningKey();
  const thief = await generateSigningKey();
  const a = await moveAttempt(bob.key, target, thief);
  assert.equal(a.answer.error, { code: "unauthorised", message: "proof does not verify" });
  assert.is((await a.closed).code, 4000);
  assert.is(readFileSync(keysFile, "utf8"), before);
  // bob's channel is untouched
  assert.equal(((await call(standing, ch, "echo", 5)) as { data: number }).data, 5);
  // a proof without the move signature is a protocol violation, and moves nothing either
  const s = await moveAttempt(bob.key, target, target, true);
  assert.is(s.answer.error?.code, "bad_request");
  assert.is((await s.closed).code, 4000);
  assert.is(readFileSync(keysFile, "utf8"), before);
  assert.equal(((await call(standing, ch, "echo", 6)) as { data: number }).data, 6);
  standing.close();
});

t("a blocked old key, a blocked new key, or a registered target: forbidden, close 4008, nothing moved", async () => {
  const carol = await registered("carol");
  const dave = await registered("dave");
  const blockedOld = await registered("mallory", "blocked");
  const blockedNew = await registered("eve", "blocked");
  const before = readFileSync(keysFile, "utf8");
  for (const [from, to, message] of [
    [blockedOld.key, await generateSigningKey(), "this key is blocked by the service"],
    [carol.key, blockedNew.key, "the key to move to is blocked by the service"],
    [carol.key, dave.key, "the key to move to is already registered with the service"],
    [await generateSigningKey(), await generateSigningKey(), "this key is not registered with the service"],
  ] as const) {
    const a = await moveAttempt(from, to);
    assert.equal(a.answer.error, { code: "forbidden", message });
    assert.is((await a.closed).code, 4008);
    assert.is(readFileSync(keysFile, "utf8"), before);
  }
});

t("psimbols keys rotate moves the identity; the client API does too, and the client goes on as the new key", async () => {
  const erin = await registered("erin");
  const newFile = join(dir, "erin-new.pem");
  const newKey = await generateKeyFile(KeyType.ed25519, newFile);
  const r = await runCli(["keys", "rotate", erin.file, newFile, "--url", broker.url, "--server-key", broker.fingerprint]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, `moved ${erin.key.public.fingerprint} to ${newKey.public.fingerprint}`);
  assert.is(entry(newKey.public.fingerprint)?.comment, "erin's laptop");
  const again = await runCli(["keys", "rotate", erin.file, newFile, "--url", broker.url, "--server-key", broker.fingerprint]);
  assert.is(again.code, 1);
  assert.match(again.stderr, /forbidden/);

  const c = await connect(broker.url, { key: newFile, serverKey: broker.fingerprint, reconnect: false });
  const third = await generateSigningKey();
  await c.moveIdentity(third);
  assert.is(c.identity, third.public.fingerprint);
  assert.is(((await c.request("whoami")) as { identity: string }).identity, third.public.fingerprint);
  assert.is(entry(third.public.fingerprint)?.moved_from, newKey.public.fingerprint);
  await c.renew(); // an ordinary renewal, as the new key
  assert.is(((await c.request("whoami")) as { identity: string }).identity, third.public.fingerprint);
  await c.close();
});

t.run();
