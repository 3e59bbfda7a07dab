/**
 * Resets on every listener of a real node process (SECURITY.md "Resets"): a
 * peer that resets its TCP connection (RST, `socket.resetAndDestroy()`)
 * after, or before, the node's answer on each refusal path and each HTTP
 * endpoint of the client port (the WebSocket upgrade, 429 over the
 * per-address limit, ws's own 400, 404, 405, the slowloris 408, /healthz,
 * /readyz, /metrics, the console) and of the server API listener (401, 429,
 * 413, a served call), then floods of such resets on each listener, and the
 * 503 of a draining node. After each, the process is alive and still serves
 * a client's requests; nothing it touches may end it by erroring.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { connect as netConnect, type Socket } from "node:net";
import { join } from "node:path";
import { connect, type Client } from "../../client/node.js";
import { generateSigningKey } from "../../shared/crypto.js";
import { Raw } from "../helpers/raw.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";

const LIMIT = 4;
const HANDSHAKE_MS = 1500;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let node: RunningBroker;
let apiPort: number;
let token: string;
let client: Client;

/** When the peer resets: as soon as its request is written, or once the first bytes of the answer arrive. */
type When = "written" | "answered";

/**
 * Opens a TCP connection from `local` to `port`, writes `request` (nothing when empty), and
 * resets the connection at `when`. Resolves with the first line the node answered ("" for none:
 * reset before any answer, or a connection the node dropped).
 */
function resetAfter(port: number, request: string, when: When, local = "127.0.0.1", answerWithinMs = 4000): Promise<string> {
  return new Promise((resolve) => {
    const s: Socket = netConnect({ port, host: "127.0.0.1", localAddress: local });
    let first = "";
    const done = () => {
      clearTimeout(timer);
      if (!s.destroyed) s.resetAndDestroy();
      resolve(first.split("\r\n")[0] ?? "");
    };
    const timer = setTimeout(done, answerWithinMs);
    s.on("error", () => done());
    s.on("close", () => done());
    s.once("connect", () => {
      if (request) s.write(request);
      if (when === "written") setImmediate(done);
    });
    s.once("data", (d: Buffer) => {
      first = d.toString("latin1");
      done();
    });
  });
}

const upgrade = (version = "13") =>
  `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: ${version}\r\n\r\n`;
const get = (path: string, auth = "") => `GET ${path} HTTP/1.1\r\nHost: x\r\n${auth ? `Authorization: Bearer ${auth}\r\n` : ""}\r\n`;

/** The node is alive and serves: its process runs, and a request on the standing channel is answered. */
async function serves(what: string): Promise<void> {
  assert.is(node.proc.exitCode, null, `the node exited after ${what}:\n${node.output().slice(-2000)}`);
  assert.is(node.proc.signalCode, null, `the node was killed after ${what}`);
  const answer = await Promise.race([client.request("echo", what), sleep(5000).then(() => "(no answer within 5 s)")]);
  assert.is(answer, what, `the node stopped serving after ${what}`);
}

interface Path {
  name: string;
  port: () => number;
  request: () => string;
  /** The status line expected when the peer waits for the answer ("" for a dropped connection). */
  status: RegExp;
  /** Source address (per-address limits count per source). */
  local?: string;
  /** Runs first: puts the node in the state this refusal needs. */
  before?: () => Promise<() => void>;
  answerWithinMs?: number;
}

/** Holds `n` WebSockets from `local` (the per-address limit's worth); returns their release. */
async function hold(n: number, local: string): Promise<() => void> {
  const held = await Promise.all(Array.from({ length: n }, () => Raw.open(node.url, { localAddress: local })));
  return () => held.forEach((r) => r.ws.terminate());
}

const paths: Path[] = [
  {
    name: "an upgrade over the per-address connection limit (429)",
    port: () => node.port,
    request: () => upgrade(),
    status: /^HTTP\/1\.1 429 /,
    local: "127.0.2.1",
    before: () => hold(LIMIT, "127.0.2.1"),
  },
  { name: "an upgrade with an unknown WebSocket version (400 from ws)", port: () => node.port, request: () => upgrade("99"), status: /^HTTP\/1\.1 400 / },
  {
    name: "a raw TCP connection past twice the limit (dropped)",
    port: () => node.port,
    request: () => "",
    status: /^$/,
    local: "127.0.2.2",
    before: async () => {
      const raw = await Promise.all(
        Array.from({ length: 2 * LIMIT }, () => new Promise<Socket>((r, reject) => { const s = netConnect({ port: node.port, host: "127.0.0.1", localAddress: "127.0.2.2" }, () => r(s)); s.once("error", reject); })),
      );
      return () => raw.forEach((s) => s.destroy());
    },
  },
  { name: "a request head that never ends (408 at the handshake timeout)", port: () => node.port, request: () => "GET /healthz HTTP/1.1\r\nHost: x\r\n", status: /^HTTP\/1\.1 408 /, answerWithinMs: HANDSHAKE_MS + 3000 },
  { name: "a POST on the client port (405)", port: () => node.port, request: () => "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", status: /^HTTP\/1\.1 405 / },
  { name: "an unknown path (404)", port: () => node.port, request: () => get("/nope"), status: /^HTTP\/1\.1 404 / },
  { name: "/healthz", port: () => node.port, request: () => get("/healthz"), status: /^HTTP\/1\.1 200 / },
  { name: "/readyz", port: () => node.port, request: () => get("/readyz"), status: /^HTTP\/1\.1 200 / },
  { name: "/metrics", port: () => node.port, request: () => get("/metrics"), status: /^HTTP\/1\.1 200 / },
  { name: "/.well-known/psimbols", port: () => node.port, request: () => get("/.well-known/psimbols"), status: /^HTTP\/1\.1 200 / },
  // 200 when the browser bundle is built, 503 naming the fix when not: either way the console answers.
  { name: "the console page", port: () => node.port, request: () => get("/console/"), status: /^HTTP\/1\.1 (200|503) / },
  { name: "the console's redirect (308)", port: () => node.port, request: () => get("/console"), status: /^HTTP\/1\.1 308 / },
  { name: "an API call without a token (401)", port: () => apiPort, request: () => get("/v1/stats"), status: /^HTTP\/1\.1 401 / },
  {
    name: "an API call from an address past its failed authentications (429)",
    port: () => apiPort,
    request: () => get("/v1/stats", token),
    status: /^HTTP\/1\.1 429 /,
    local: "127.0.2.3",
    before: async () => {
      for (let i = 0; i < 10; i++) assert.match(await resetAfter(apiPort, get("/v1/stats", "wrong"), "answered", "127.0.2.3"), /^HTTP\/1\.1 (401|429) /);
      return () => {};
    },
  },
  {
    name: "an API body over the bound (413)",
    port: () => apiPort,
    request: () => `POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: 900000\r\n\r\n{"identity":`,
    status: /^HTTP\/1\.1 413 /,
  },
  {
    name: "an API body cut short (the node still waits for the rest)",
    port: () => apiPort,
    request: () => `POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: 100\r\n\r\n{"identity":`,
    status: /^$/,
    answerWithinMs: 300,
  },
  { name: "an API call served (200)", port: () => apiPort, request: () => get("/v1/stats", token), status: /^HTTP\/1\.1 200 / },
  { name: "an upgrade on the API listener", port: () => apiPort, request: () => upgrade(), status: /^HTTP\/1\.1 401 / },
];

const t = suite("resets on every listener");

t.before(async () => {
  const dataDir = tempDir();
  node = await startBroker(
    ["--api-listen", "127.0.0.1:0", "--max-connections-per-address", String(LIMIT), "--handshake-timeout", String(HANDSHAKE_MS), "--hellos-per-address", "1000"],
    { dataDir },
  );
  const m = /server API listening on http:\/\/[^:]+:(\d+)\//.exec(node.output());
  assert.ok(m, node.output());
  apiPort = Number(m[1]);
  const created = await runCli(["api-token", "create", "--file", join(dataDir, "api-tokens.json")]);
  assert.is(created.code, 0, created.stderr);
  token = created.stdout.trim();
  client = await connect(node.url, { key: await generateSigningKey(), serverKey: node.fingerprint, reconnect: false, renew: false });
});

t.after(async () => {
  await client?.close();
  await node?.stop("SIGKILL");
});

for (const p of paths) {
  for (const when of ["answered", "written"] as const) {
    t(`${p.name}, reset by the peer once ${when === "answered" ? "answered" : "the request is written"}: the node still serves`, async () => {
      const release = p.before ? await p.before() : () => {};
      try {
        const line = await resetAfter(p.port(), p.request(), when, p.local, p.answerWithinMs);
        if (when === "answered") assert.match(line, p.status, `answer to ${p.name}: ${JSON.stringify(line)}`);
        await sleep(50); // an unhandled error would end the process within a tick; give it a few
        await serves(p.name);
      } finally {
        release();
      }
      await sleep(100); // the released sockets leave the per-address counts
    });
  }
}

t("a flood of resets on each listener (every path at once, for 4 s) leaves the node serving throughout", async () => {
  const release = await hold(LIMIT, "127.0.2.1"); // so upgrades from 127.0.2.1 take the 429 path
  const end = Date.now() + 4000;
  let resets = 0;
  const answered: number[] = [];
  // A client's requests during the flood: each must be answered.
  const steady = (async () => {
    for (let i = 0; Date.now() < end; i++) {
      assert.is(await client.request("echo", i), i);
      answered.push(i);
      await sleep(20);
    }
  })();
  // Each path (each from its own address: the raw TCP limit is per address) resets again and again.
  const flood = paths
    .filter((p) => p.local !== "127.0.2.2") // the dropped-connection path needs its address full
    .flatMap((p, i) =>
      (["answered", "written"] as const).map(async (w) => {
        while (Date.now() < end) {
          await resetAfter(p.port(), p.request(), w, p.local ?? `127.0.3.${i + 1}`, 300);
          resets++;
        }
      }),
    );
  try {
    await Promise.all([steady, ...flood]);
  } finally {
    release();
  }
  await serves("the flood");
  assert.ok(resets > 500, `only ${resets} resets sent`);
  assert.ok(answered.length >= 10, `only ${answered.length} requests answered during the flood`);
  for (const port of [node.port, apiPort]) assert.match(await resetAfter(port, get("/healthz"), "answered"), /^HTTP\/1\.1 (200|401) /);
});

t("a draining node's 503 to an upgrade, reset by the peer, does not end the node: it stops with exit code 0", async () => {
  // A socket connected before the stop, that sends its upgrade while the node drains.
  const early = netConnect({ port: node.port, host: "127.0.0.1" });
  await new Promise((r, reject) => early.once("connect", r).once("error", reject));
  early.on("error", () => {});
  // A socket that reads nothing (so never answers the close) keeps the node draining for seconds.
  const stuck = await Raw.open(node.url);
  (stuck.ws as unknown as { _socket: Socket })._socket.pause();
  const answer = new Promise<string>((r) => early.once("data", (d: Buffer) => r(d.toString("latin1").split("\r\n")[0]!)));
  node.proc.kill("SIGTERM");
  await sleep(150);
  early.write(upgrade());
  const line = await Promise.race([answer, sleep(3000).then(() => "")]);
  early.resetAndDestroy();
  stuck.ws.terminate();
  assert.match(line, /^HTTP\/1\.1 503 /);
  const code = await node.stop();
  assert.is(code, 0, `the node did not stop cleanly:\n${node.output().slice(-2000)}`);
});

t.run();
