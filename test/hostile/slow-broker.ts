/**
 * A broker node as `psimbols serve` runs it, plus one extra op, `sleep`
 * (`data`: milliseconds, at most 10 000), so that requests can be held in
 * flight: the in-flight rows of the hostile matrix need a handler slower than
 * the network. Started as its own process by test/hostile/env.ts:
 *
 *   node dist/test/hostile/slow-broker.js DATA_DIR KEYS_FILE
 */
import { Broker, FileRegistry, createLogger, loadOrCreateServerKey } from "../../server/index.js";

const [dataDir, keysFile] = process.argv.slice(2);
if (!dataDir || !keysFile) {
  console.error("usage: slow-broker.js DATA_DIR KEYS_FILE");
  process.exit(2);
}
const log = createLogger({ level: process.env.PSIMBOLS_LOG_LEVEL ?? "warn" });
const serverKey = await loadOrCreateServerKey(dataDir, log);
const broker = await Broker.start({
  config: { port: 0, dataDir, keysFile, limits: { hellosPerAddress: 100_000 } },
  serverKey,
  registry: new FileRegistry(keysFile),
  logger: log,
});
broker.handle("sleep", async (data) => {
  const ms = typeof data === "number" && data >= 0 && data <= 10_000 ? data : 0;
  await new Promise((r) => setTimeout(r, ms));
  return { slept: ms };
});
console.log(`psimbols listening on ws://127.0.0.1:${broker.port}/ fingerprint ${serverKey.public.fingerprint}`);
const stop = () => void broker.close().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
