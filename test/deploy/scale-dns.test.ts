/**
 * `docker compose up --scale node=N` without Docker: HAProxy runs the
 * shipped deploy/haproxy.cfg with two lines changed — its resolvers ask a
 * small DNS server of this test instead of Docker's (127.0.0.11), and the
 * template's port is a free one — and that DNS server answers the name
 * `node` as Docker's does for a service: one A record per replica. The
 * replicas are HTTP servers on 127.77.0.x answering `/readyz` and naming
 * themselves. Scaling up adds a record, and HAProxy sends traffic to the
 * new replica with no file edited and no reload; scaling down removes one
 * and it leaves the rotation.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { HAPROXY_CONFIG } from "../../cli/cluster/local-cluster.js";
import { findOnPath, freePort } from "../../cli/cluster/net.js";

const t = suite("deploy: server-template follows DNS (--scale without Docker)");
const dir = mkdtempSync(join(tmpdir(), "psimbols-scale-"));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The A records of `node` right now: the replicas' addresses. */
let records: string[] = [];

/** A DNS server on 127.0.0.1 answering A queries for `node` (RFC 1035 §4.1), NXDOMAIN for any other name. */
async function startDns(): Promise<{ port: number; close(): void }> {
  const sock = createSocket("udp4");
  sock.on("message", (q, rinfo) => {
    if (q.length < 17) return;
    // Question: QNAME labels from offset 12, then QTYPE, QCLASS.
    let o = 12;
    const labels: string[] = [];
    while (o < q.length && q[o]! > 0) {
      labels.push(q.subarray(o + 1, o + 1 + q[o]!).toString("latin1"));
      o += 1 + q[o]!;
    }
    const qEnd = o + 5;
    if (qEnd > q.length) return;
    const qtype = q.readUInt16BE(o + 1);
    const name = labels.join(".").toLowerCase();
    const known = name === "node";
    const answers = known && qtype === 1 ? records : [];
    const header = Buffer.alloc(12);
    q.copy(header, 0, 0, 2); // id
    header.writeUInt16BE(0x8180 | (known ? 0 : 3), 2); // response, RD+RA, NOERROR or NXDOMAIN
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    const rrs = answers.map((ip) => {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(1, 6); // TTL 1 s
      rr.writeUInt16BE(4, 10);
      ip.split(".").forEach((b, i) => rr.writeUInt8(Number(b), 12 + i));
      return rr;
    });
    sock.send(Buffer.concat([header, q.subarray(12, qEnd), ...rrs]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  return { port: sock.address().port, close: () => sock.close() };
}

/** A stand-in replica: `/readyz` 200, any other path answers its own name. */
async function replica(address: string, port: number, name: string): Promise<Server> {
  const s = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(req.url === "/readyz" ? "ready" : name);
  });
  await new Promise<void>((r, j) => s.once("error", j).listen(port, address, () => r()));
  return s;
}

let haproxy: ChildProcess | undefined;
let dns: { port: number; close(): void } | undefined;
const servers: Server[] = [];
t.after(() => {
  haproxy?.kill("SIGKILL");
  dns?.close();
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Names seen over `n` requests through the balancer. */
async function seen(url: string, n: number): Promise<Set<string>> {
  const names = new Set<string>();
  for (let i = 0; i < n; i++) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (r.status === 200) names.add(await r.text());
    } catch {
      /* a slot being switched: try again */
    }
  }
  return names;
}

async function until(what: string, url: string, want: string[], ms: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    const got = [...(await seen(url, 12))].sort();
    if (JSON.stringify(got) === JSON.stringify([...want].sort())) return Date.now() - start;
    if (Date.now() - start > ms) assert.unreachable(`${what}: after ${ms} ms the balancer reaches ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
    await sleep(200);
  }
}

t("replicas added and removed in DNS join and leave the rotation, with the shipped config", async () => {
  const bin = findOnPath("haproxy");
  if (!bin) throw new Error("haproxy is not installed (bin/test_psimbols.sh installs it)");
  dns = await startDns();
  const port = await freePort();
  const addresses = ["127.77.0.1", "127.77.0.2", "127.77.0.3"];
  for (const [i, a] of addresses.entries()) servers.push(await replica(a, port, `replica${i + 1}`));

  // The shipped file with exactly two changes: this test's DNS server, this test's port.
  const shipped = readFileSync(HAPROXY_CONFIG, "utf8");
  const config = shipped.replace(/^(\s*)parse-resolv-conf$/m, `$1nameserver test 127.0.0.1:${dns.port}`).replace(/server-template node (\d+) node:9393/, `server-template node $1 node:${port}`);
  assert.is.not(config, shipped);
  assert.match(config, new RegExp(`nameserver test 127\\.0\\.0\\.1:${dns.port}`));
  assert.match(config, new RegExp(`server-template node 64 node:${port}`));
  const file = join(dir, "haproxy.cfg");
  writeFileSync(file, config);
  const lbPort = await freePort();
  records = addresses.slice(0, 2);
  haproxy = spawn(bin, ["-db", "-f", file], { env: { ...process.env, PSIMBOLS_LB_BIND: `127.0.0.1:${lbPort}` }, stdio: "ignore" });
  const url = `http://127.0.0.1:${lbPort}/who`;

  const up2 = await until("two replicas", url, ["replica1", "replica2"], 20_000);
  records = addresses.slice(0, 3); // docker compose up --scale node=3
  const up3 = await until("scaled to three", url, ["replica1", "replica2", "replica3"], 20_000);
  records = addresses.slice(1, 3); // replica1 removed: --scale node=2 stops one
  const down = await until("scaled down", url, ["replica2", "replica3"], 30_000);
  console.log(`    first two replicas in rotation after ${up2} ms; a third after ${up3} ms; a removed one gone after ${down} ms`);
});

t.run();
