/**
 * The client host of the partition tests: run inside the client namespace as
 * `node driver.js <url> <server fingerprint> <clients>`, it connects that many
 * clients (psimbols/node, reconnecting), has each send `whoami` every
 * PERIOD_MS, and prints one JSON line per event on stdout:
 *   {t, c, ev: "ok", node, channel, ms} | {t, c, ev: "fail", code}
 *   {t, c, ev: "state"|"resumed"|"established"|"notice"|"error"|"close", ...}
 *   {t, ev: "ready"} once every client holds a channel.
 * A line `quit` on stdin closes the clients and exits.
 */
import { createInterface } from "node:readline";
import { generateSigningKey } from "../../shared/crypto.js";
import { type Client, connect } from "../../client/node.js";

const PERIOD_MS = 200;
const [url, fingerprint, count] = process.argv.slice(2);
if (!url || !fingerprint || !count) {
  console.error("usage: driver.js <url> <fingerprint> <clients>");
  process.exit(2);
}

const emit = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
const clients: Client[] = [];
let quitting = false;

async function start(c: number): Promise<void> {
  const client = await connect(url!, {
    key: await generateSigningKey(),
    serverKey: fingerprint!,
    knownServersFile: false,
    // Partitions are noticed by silence: a short liveness check, and a short backoff cap.
    pingIntervalMs: 1000,
    idleTimeoutMs: 3000,
    requestTimeoutMs: 2000,
    handshakeTimeoutMs: 5000,
    reconnect: { baseMs: 100, maxMs: 1000 },
  });
  clients.push(client);
  client.on("state", (s) => emit({ c, ev: "state", s }));
  client.on("resumed", (i) => emit({ c, ev: "resumed", channel: i.id }));
  client.on("established", (i) => emit({ c, ev: "established", channel: i.id }));
  client.on("notice", (n) => emit({ c, ev: "notice", kind: n.kind }));
  client.on("error", (e) => emit({ c, ev: "error", code: e.code }));
  client.on("close", () => emit({ c, ev: "close" }));
  emit({ c, ev: "established", channel: client.channel?.id });
  void (async () => {
    while (!quitting && client.state !== "closed") {
      const t0 = Date.now();
      try {
        const w = (await client.request("whoami", null)) as { node: string; channel: string };
        emit({ c, ev: "ok", node: w.node, channel: w.channel, ms: Date.now() - t0 });
      } catch (e) {
        emit({ c, ev: "fail", code: (e as { code?: string }).code ?? "?" });
      }
      await new Promise((r) => setTimeout(r, Math.max(0, PERIOD_MS - (Date.now() - t0))));
    }
  })();
}

for (let i = 0; i < Number(count); i++) await start(i);
emit({ ev: "ready" });
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() !== "quit") return;
  quitting = true;
  void Promise.allSettled(clients.map((c) => c.close())).then(() => process.exit(0));
});
