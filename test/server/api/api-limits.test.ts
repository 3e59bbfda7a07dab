/**
 * The server API's limits as an outsider meets them (docs/BACKEND.md "Server
 * API", "Limits"), against a real `psimbols serve --api-listen` process over
 * raw TCP: a request whose headers or body drip is cut with 408 at 10 s; an
 * address holds at most 64 connections, the next one is refused at once; a
 * flood of refused calls writes a bounded number of log lines.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { connect as tcp, type Socket } from "node:net";
import { request } from "node:http";
import { join } from "node:path";
import { type RunningBroker, runCli, startBroker, tempDir } from "../../helpers/broker.js";

const t = suite("server API limits");
let broker: RunningBroker;
let api: URL;
let token: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw connection to the API, from `localAddress` (any of 127.0.0.0/8 on Linux). */
function open(localAddress = "127.0.0.1"): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcp({ host: api.hostname, port: Number(api.port), localAddress }, () => resolve(s));
    s.once("error", reject);
  });
}

/** What the server sent, and when the socket ended (ms after `from`). */
function ending(s: Socket, from: number): Promise<{ text: string; ms: number }> {
  let text = "";
  s.setEncoding("utf8").on("data", (d: string) => (text += d));
  s.on("error", () => undefined);
  return new Promise((r) => s.once("close", () => r({ text, ms: Date.now() - from })));
}

/** One call with a wrong token, from `localAddress`; resolves with the status. */
function wrongCall(localAddress: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(new URL("v1/stats", api), { headers: { authorization: "Bearer psat_0000000000000000_wrong" }, localAddress, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", () => resolve(0));
    req.end();
  });
}

/** The log's refusal lines about addresses of 127.0.1.0/24 (the flood's). */
const refusalLines = () => broker.output().split("\n").filter((l) => /"message":"API calls? refused/.test(l) && l.includes('"address":"127.0.1.'));

t.before(async () => {
  const dataDir = tempDir();
  broker = await startBroker(["--api-listen", "127.0.0.1:0"], { dataDir });
  const m = /server API listening on (http:\/\/\S+)/.exec(broker.output());
  assert.ok(m, broker.output());
  api = new URL(m[1]!);
  const created = await runCli(["api-token", "create", "--file", join(dataDir, "api-tokens.json")]);
  assert.is(created.code, 0, created.stderr);
  token = created.stdout.trim();
});
t.after(async () => {
  await broker.stop();
});

t("a request whose headers drip, one whose body drips, and a connection that sends nothing are each cut at 10 s (within 1.5 s)", async () => {
  const from = Date.now();
  const [headers, body, silent] = await Promise.all([open(), open(), open()]);
  const ends = [ending(headers, from), ending(body, from), ending(silent, from)];
  headers.write("GET /v1/stats HTTP/1.1\r\nhost: x\r\n");
  body.write(`POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`);
  const drip = setInterval(() => {
    if (!headers.destroyed) headers.write("x-drip: 1\r\n");
    if (!body.destroyed) body.write(" ");
  }, 500);
  try {
    const [h, b, s] = (await Promise.all(ends)) as [{ text: string; ms: number }, { text: string; ms: number }, { text: string; ms: number }];
    for (const [what, r] of [["headers", h], ["body", b], ["nothing", s]] as const) {
      assert.ok(r.ms >= 9_500 && r.ms <= 11_500, `${what}: cut after ${r.ms} ms`);
    }
    assert.match(b.text, /^HTTP\/1\.1 408 /, "the dripped body gets 408");
  } finally {
    clearInterval(drip);
  }
});

t("an address holds at most 64 connections: the 65th is answered 429 and closed at once, other addresses are not affected", async () => {
  const held = await Promise.all(Array.from({ length: 64 }, () => open()));
  try {
    const from = Date.now();
    const extra = await open();
    const r = await ending(extra, from);
    assert.ok(r.ms < 1000, `refused after ${r.ms} ms`);
    assert.match(r.text, /^HTTP\/1\.1 429 [^]*"too_many"/);
    await sleep(200);
    assert.ok(held.every((s) => !s.destroyed), "a held connection was closed");
    // Another address (127.0.0.2) still gets in.
    assert.is(await wrongCall("127.0.0.2"), 401);
  } finally {
    for (const s of held) s.destroy();
  }
  await sleep(200);
  const r = await fetch(new URL("v1/stats", api), { headers: { authorization: `Bearer ${token}` } });
  assert.is(r.status, 200, "the address was not let in again once its connections closed");
});

t("a flood of refused calls from 20 addresses writes about one line per address per 10 s, not one per call", async () => {
  const before = refusalLines().length;
  const addresses = Array.from({ length: 20 }, (_, i) => `127.0.1.${i + 1}`);
  let calls = 0;
  const statuses = new Map<number, number>();
  const until = Date.now() + 3000;
  await Promise.all(
    addresses.map(async (a) => {
      while (Date.now() < until) {
        const s = await wrongCall(a);
        statuses.set(s, (statuses.get(s) ?? 0) + 1);
        calls++;
      }
    }),
  );
  assert.ok(calls >= 300, `only ${calls} calls`);
  assert.ok((statuses.get(401) ?? 0) === 20 * 10, `401s: ${statuses.get(401)} (10 per address, then 429)`);
  const lines = refusalLines().slice(before);
  // Each address: its first refusal at once, the rest summed at the end of each 10 s interval (which may fall inside these 3 s).
  assert.ok(lines.length >= 20 && lines.length <= 40, `${lines.length} lines for ${calls} refused calls`);
  for (const a of addresses) assert.ok(lines.some((l) => l.includes(`"address":"${a}"`)), `no line for ${a}`);
  // The summed lines carry the count: wait for the interval to end and add them up.
  await sleep(10_500);
  const all = refusalLines().slice(before);
  let counted = 0;
  for (const l of all) counted += (JSON.parse(l) as { count?: number }).count ?? 1;
  assert.is(counted, calls, "the lines' counts add up to the refused calls");
  assert.ok(all.length <= 60, `${all.length} lines: more than 3 per address`);
  assert.not.match(all.join("\n"), /psat_/, "a token in the log");
});

t.run();
