// A psimbols broker inside your own Node process, with handlers of your own.
//
//   node examples/embedded-broker.mjs            # ws://127.0.0.1:9400/ (PORT=... to change)
//
// PORT=9410 node examples/embedded-broker.mjs listens on 9410 instead; DATA_DIR
// (default .psimbols/example-broker) keeps its server key.
// Then, in another shell: `node examples/node-client.mjs`, or open
// http://127.0.0.1:9400/ for the browser example (this process serves the
// page and the browser bundle). Inside the repository "psimbols/server" and
// "psimbols-client/browser" resolve to the build (run `npm install` once); in
// your own project, install the two tarballs of `npm run pack` (docs/CLIENT.md,
// Install) and use the same imports.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { Broker, createLogger, loadOrCreateServerKey } from "psimbols/server";

const port = Number(process.env.PORT ?? 9400);
const dataDir = process.env.DATA_DIR ?? ".psimbols/example-broker"; // keeps the server key, so clients' pins survive a restart
const log = createLogger({ level: process.env.PSIMBOLS_LOG_LEVEL ?? "warn" });

// The browser example and the bundle it imports, served beside the WebSocket.
const page = fileURLToPath(new URL("./browser/index.html", import.meta.url));
const bundle = fileURLToPath(import.meta.resolve("psimbols-client/browser"));
const files = { "/": [page, "text/html; charset=utf-8"], "/psimbols.js": [bundle, "text/javascript"] };
const http = async (_req, res, path) => {
  if (path === "/favicon.ico") return res.writeHead(204).end(), true;
  const f = files[path];
  if (!f) return false; // not ours: the broker answers (404, /healthz, /.well-known/psimbols, ...)
  res.writeHead(200, { "content-type": f[1], "cache-control": "no-store" }).end(await readFile(f[0]));
  return true;
};

const serverKey = await loadOrCreateServerKey(dataDir, log);
const broker = await Broker.start({ serverKey, logger: log, http, config: { port, host: "127.0.0.1" } });

// Handlers: the op name, and a function of the request data and who asked.
// What they return (or throw) goes back over the encrypted channel.
broker.handle("sum", (data) => {
  if (!Array.isArray(data) || !data.every((x) => typeof x === "number")) throw new TypeError("sum expects an array of numbers");
  return data.reduce((a, b) => a + b, 0);
});
// Pushes reach an identity wherever it is connected (and wait for it while it is away).
broker.handle("remind-me", (data, ctx) => {
  const ms = Math.min(Number(data?.inMs ?? 500), 60_000);
  setTimeout(() => void broker.push({ identity: ctx.identity }, { reminder: data?.text ?? "you asked", at: new Date().toISOString() }), ms);
  return { scheduled: ms };
});

console.log(`embedded broker on ws://127.0.0.1:${broker.port}/ fingerprint ${serverKey.public.fingerprint}`);
console.log(`browser example: http://127.0.0.1:${broker.port}/ (Ctrl-C stops)`);

const stop = () => void broker.close().then(() => process.exit(0));
process.on("SIGINT", stop).on("SIGTERM", stop);
