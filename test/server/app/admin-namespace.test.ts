/**
 * The reserved `admin.` namespace (PROTOCOL.md §6.6, docs/BACKEND.md §2) and
 * the caller's role in the upstream body: a real broker process with a keys
 * file registering an operator and a client key, forwarding to a real HTTP
 * upstream that would answer any op (an `adm` prefix route, which the
 * names `admin.*` match, included).
 * No `admin.*` request ever reaches it: a non-operator gets `forbidden`, an
 * operator `not_found` for a name the broker does not implement.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { generateSigningKey, type SigningKey } from "../../../shared/crypto.js";
import { loadKey } from "../../../node/key-files.js";
import { WebhookSecret } from "../../../server/app/signature.js";
import { type RunningBroker, operatorKeys, runCli, startBroker, tempDir } from "../../helpers/broker.js";
import { Raw, type RawChannel, call, handshake } from "../../helpers/raw.js";
import { AppServer, json } from "../../helpers/app-server.js";

const t = suite("admin namespace");
let app: AppServer;
let broker: RunningBroker;
let operator: SigningKey;
let member: SigningKey;

/** A channel of `key` on a fresh socket. */
async function open(key: SigningKey): Promise<{ raw: Raw; ch: RawChannel }> {
  const raw = await Raw.open(broker.url);
  return { raw, ch: await handshake(raw, key) };
}

/** Spellings an application might case-fold into `admin.` (the dotless ı upper-cases to I): the broker's namespace too (docs/BACKEND.md §2 "Op names"). */
const CASE_FOLDED = ["Admin.deleteUser", "ADMIN.channels", "aDmIn.push", "adm\u0131n.revoke"];

/** Ops that reached the upstream (any route). */
const forwarded = () => app.requests.map((r) => String(r.json?.op));

t.before(async () => {
  app = await AppServer.start();
  // An application that would do what it is asked: any answer here is a leak.
  for (const path of ["/rpc", "/adm"]) app.on(path, (r, res) => json(res, { data: { done: r.json.op, role: r.json.role } }));
  const op = await operatorKeys();
  operator = await loadKey(op.keyFile);
  const dir = tempDir();
  assert.is((await runCli(["keygen", "-o", join(dir, "member.pem")])).code, 0);
  assert.is((await runCli(["keys", "add", join(dir, "member.pem"), "--file", op.keysFile])).code, 0);
  member = await loadKey(join(dir, "member.pem"));
  broker = await startBroker(["--keys", op.keysFile, "--upstream", app.url("/rpc"), "--upstream", `adm=${app.url("/adm")}`, "--hellos-per-address", "1000"], {
    env: { PSIMBOLS_UPSTREAM_SECRET: WebhookSecret.generate() },
  });
});
t.after(async () => {
  await broker?.stop();
  await app?.close();
});

for (const who of ["an unregistered key", "a key registered with the client role"] as const) {
  t(`${who}: admin.deleteUser, admin.nope and admin.channels, in any case, get forbidden and never reach the upstream`, async () => {
    const { raw, ch } = await open(who === "an unregistered key" ? await generateSigningKey() : member);
    const before = app.requests.length;
    for (const op of ["admin.deleteUser", "admin.nope", "admin.channels", "admin.", ...CASE_FOLDED]) {
      const r = await call(raw, ch, op, { user: "victim" });
      assert.equal(r.error?.code, "forbidden", `${op}: ${JSON.stringify(r)}`);
    }
    assert.is(app.requests.length, before, `forwarded: ${forwarded().slice(before).join(", ")}`);
    // The channel still serves, and other ops still go to the application.
    assert.equal(await call(raw, ch, "app.hello"), { data: { done: "app.hello", role: who === "an unregistered key" ? null : "client" } });
    // Other names are matched exactly: a built-in spelled otherwise, or admin. after a space, is the application's.
    for (const op of ["Echo", " admin.x"]) assert.is((await call(raw, ch, op)).data?.done, op);
    raw.close();
  });
}

t("an operator: an admin.* name the broker does not implement, in any case (Admin.channels too), gets not_found and never reaches the upstream; admin.channels answers", async () => {
  const { raw, ch } = await open(operator);
  const before = app.requests.length;
  for (const op of ["admin.deleteUser", "admin.nope", ...CASE_FOLDED]) {
    const r = await call(raw, ch, op, { user: "victim" });
    assert.equal(r.error?.code, "not_found", `${op}: ${JSON.stringify(r)}`);
  }
  assert.type((await call(raw, ch, "admin.channels")).data?.stats, "object");
  assert.is(app.requests.length, before, `forwarded: ${forwarded().slice(before).join(", ")}`);
  raw.close();
});

t("the upstream body carries the caller's registered role: null, client or operator", async () => {
  for (const [key, role] of [
    [await generateSigningKey(), null],
    [member, "client"],
    [operator, "operator"],
  ] as const) {
    const { raw, ch } = await open(key);
    const n = app.to("/rpc").length;
    assert.equal(await call(raw, ch, "app.role"), { data: { done: "app.role", role } });
    assert.is(app.to("/rpc")[n]!.json.role, role);
    raw.close();
  }
});

t.run();
