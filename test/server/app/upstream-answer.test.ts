/**
 * What an upstream's answer becomes for the client (docs/BACKEND.md
 * "Answer"), seen through the real client library: a real broker process
 * forwarding to a real HTTP application. An error message of up to 1024
 * characters arrives as it is; bytes that are not UTF-8 and JSON nested too
 * deep for the broker are `unavailable` (bad_body) for that request only;
 * a number out of range arrives as `null`.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../../shared/crypto.js";
import { WebhookSecret } from "../../../server/app/signature.js";
import { connect, type Client } from "../../../client/node.js";
import { type RunningBroker, startBroker } from "../../helpers/broker.js";
import { AppServer } from "../../helpers/app-server.js";
import { outcome } from "../../helpers/refusal.js";

const t = suite("upstream answers");
let app: AppServer;
let broker: RunningBroker;
let client: Client;

async function metric(outcomeLabel: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`psimbols_upstream_requests_total{upstream="*",outcome="${outcomeLabel}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** Answers the next requests with these exact bytes. */
function answer(bytes: Buffer | string): void {
  app.on("/rpc", (_r, res) => void res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(bytes) }).end(bytes));
}

t.before(async () => {
  app = await AppServer.start();
  broker = await startBroker(["--upstream", app.url("/rpc")], { env: { PSIMBOLS_UPSTREAM_SECRET: WebhookSecret.generate() } });
  client = await connect(broker.url, { key: await generateSigningKey(), serverKey: broker.fingerprint, reconnect: false, renew: false });
});
t.after(async () => {
  await client.close();
  await broker.stop();
  await app.close();
});

t("an application error message of 1024 characters reaches the client as it is, control characters aside", async () => {
  const message = "é".repeat(24) + "x".repeat(1000);
  assert.is(message.length, 1024);
  answer(JSON.stringify({ error: { code: "forbidden", message } }));
  const e = await client.request("orders.cancel").then(
    () => undefined,
    (err: { code: string; message: string }) => err,
  );
  assert.is(e?.code, "forbidden");
  assert.is(e?.message, message);
});

t("an answer whose bytes are not UTF-8 is unavailable (bad_body), not passed on with replacement characters", async () => {
  const before = await metric("bad_body");
  answer(Buffer.concat([Buffer.from('{"data":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]));
  assert.is(await outcome(() => client.request("bytes.op")), "unavailable");
  assert.is(await metric("bad_body"), before + 1);
  assert.equal(await client.request("echo", "still here"), "still here");
});

t("JSON nested 9000 deep is unavailable (bad_body), not internal; the channel serves on", async () => {
  const before = await metric("bad_body");
  answer(`{"data":${"[".repeat(9000)}${"]".repeat(9000)}}`);
  assert.is(await outcome(() => client.request("deep.op")), "unavailable");
  assert.is(await metric("bad_body"), before + 1);
  // The bound: 512 levels with the answer object, so data 511 deep passes and 512 deep does not.
  answer(`{"data":${"[".repeat(512)}${"]".repeat(512)}}`);
  assert.is(await outcome(() => client.request("deep.op")), "unavailable");
  answer(`{"data":${"[".repeat(511)}"[{\\\\"${"]".repeat(511)}}`);
  let v = (await client.request("deep.op")) as unknown;
  let depth = 0;
  while (Array.isArray(v)) [v, depth] = [v[0], depth + 1];
  assert.is(depth, 511);
  assert.is(v, '[{\\', "brackets inside a string count for nothing");
  assert.equal(await client.request("echo", "still here"), "still here");
});

t("a number out of range (1e400) arrives as null; large integers lose precision as JSON numbers do in JavaScript", async () => {
  answer('{"data":{"big":1e400,"neg":-1e400,"int":12345678901234567890}}');
  assert.equal(await client.request("num.op"), { big: null, neg: null, int: 12345678901234567000 });
});

t.run();
