// A psimbols client in Node: requests, pushes, notices, reconnect.
//
//   node examples/node-client.mjs [URL] [--once]
//
// URL defaults to ws://127.0.0.1:9400/ (examples/embedded-broker.mjs); with
// `npx psimbols serve` use ws://127.0.0.1:9393/ (the example-only ops
// `sum` and `remind-me` then answer `not_found`, and that is shown too).
// The identity key is ./me.pem, made on first run. Without --once it stays
// connected: stop and restart the broker to watch it reconnect.
import { existsSync } from "node:fs";
import { ErrorCode, PsimbolsError, connect, generateKeyFile, loadKey } from "psimbols-client/node";

const args = process.argv.slice(2);
const once = args.includes("--once");
const url = args.find((a) => !a.startsWith("--")) ?? "ws://127.0.0.1:9400/";
const keyFile = process.env.PSIMBOLS_KEY ?? "me.pem";

// 1. A key pair is the client's whole identity; its fingerprint is what servers see.
const key = existsSync(keyFile) ? await loadKey(keyFile) : await generateKeyFile("Ed25519", keyFile, { publicFile: true });
console.log(`identity ${key.public.fingerprint} (${keyFile})`);

// 2. Connect: a challenge handshake proves the key and opens an encrypted channel.
//    The server's key is learnt on first use (~/.psimbols/known_servers) unless pinned: { serverKey: "SHA256:..." }.
let client;
try {
  client = await connect(url, {
    key,
    onServerKeyLearnt: (l) => console.log(`learnt server key ${l.fingerprint}, recorded in ${l.path}`),
  });
} catch (e) {
  fail(e);
}
// A client that stays connected meets the same failures later, when it reconnects: the "close" event carries them.
client.on("close", (ev) => ev.error && fail(ev.error));

/** Reports a failure as the CLI does, what went wrong and what to do, without a stack trace, and exits. */
function fail(e) {
  if (!(e instanceof PsimbolsError)) throw e;
  console.error(`error: ${e.message} (${e.code})`);
  if (e.code === ErrorCode.serverKeyMismatch) {
    console.error(`hint: if you know why the server's key changed (a broker you restarted with a new key), run \`npx psimbols known-servers forget ${url}\` and try again; otherwise do not`);
  }
  process.exit(1);
}

// 3. Events: pushes from the application, notices about the channel, and the connection's life.
client.on("push", (message) => console.log("push", JSON.stringify(message)));
client.on("notice", (n) => console.log("notice", n.kind)); // expiring, expired, revoked, replaced, closed, closing
client.on("state", (next, prev) => console.log(`state ${prev} -> ${next}`));
client.on("resumed", (info) => console.log(`resumed channel ${info.id} without a new handshake`));
client.on("established", (info) => console.log(`channel ${info.id}${info.renewed ? " (renewed)" : ""}, valid until ${info.validUntil}`));

// 4. Requests: an op name and JSON data; the answer, or a PsimbolsError with a stable code.
console.log("whoami", JSON.stringify(await client.request("whoami")));
console.log("echo", JSON.stringify(await client.request("echo", { hi: 1 })));
try {
  console.log("sum", await client.request("sum", [1, 2, 3]));
  console.log("remind-me", JSON.stringify(await client.request("remind-me", { text: "hello from the broker", inMs: 300 })));
} catch (e) {
  console.log(`example op refused: ${e.code} (${e.message})`);
}

if (once) {
  // Wait for the reminder push (if the broker has the op), then close the channel.
  await new Promise((resolve) => {
    client.on("push", resolve);
    setTimeout(resolve, 3000).unref();
  });
  await client.close();
} else {
  console.log("connected; waiting for pushes and notices (Ctrl-C to quit)");
  process.on("SIGINT", () => void client.close().then(() => process.exit(0)));
}
