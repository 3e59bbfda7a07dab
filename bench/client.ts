/**
 * The HTTP client of upstream calls alone (server/app/http.ts): CPU µs per
 * signed call, `CONC` calls in flight, against the bench's upstream child
 * (bench/upstream.ts) in another process, in rounds of `MS` ms; prints each
 * round and the median of all but the first (warm-up).
 *
 *   npm run build && node dist/bench/client.js [CONC=8] [MS=1500] [ROUNDS=7]
 *
 * With BENCH_CLIENT_MODULE=<path to another build's dist/server/app/http.js>
 * the rounds alternate between that build's client and this one, so two
 * clients are compared in one run on a noisy machine (bench/results.json
 * `forwarding.client_per_call`).
 */
import { fork } from "node:child_process";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { AppClient } from "../server/app/http.js";
import { WebhookSecret } from "../server/app/signature.js";

type Post = (c: { id: string; body: string; timeoutMs: number; maxBytes: number }) => Promise<string>;

const [conc, ms, rounds] = [Number(process.argv[2] ?? 8), Number(process.argv[3] ?? 1500), Number(process.argv[4] ?? 7)];
const child = fork(fileURLToPath(new URL("./upstream.js", import.meta.url)));
const port = await new Promise<number>((r) => child.on("message", (m: { ready?: { port: number } }) => m.ready && r(m.ready.port)));
const url = new URL(`http://127.0.0.1:${port}/`);
const secrets = [WebhookSecret.parse(WebhookSecret.generate())];
const mine = new AppClient({ url, secrets, connections: 256 });
const clients: Record<string, { post: Post; close(): Promise<void> }> = { this: { post: (c) => mine.post(c), close: () => mine.close() } };
if (process.env.BENCH_CLIENT_MODULE) {
  // The client before per-destination pools: new AppClient({secrets}), post({url, ...call}).
  const other = (await import(process.env.BENCH_CLIENT_MODULE)) as { AppClient: new (o: unknown) => { post(c: unknown): Promise<string>; close(): Promise<void> } };
  const o = new other.AppClient({ url, secrets });
  clients.other = { post: (c) => o.post({ url, ...c }), close: () => o.close() };
}
// A request body as the broker sends it (bench/load.ts's 256 characters of data).
const body = JSON.stringify({ kind: "request", type: "request", id: "req_x", op: "fwd.echo", data: "x".repeat(256), identity: { fingerprint: `SHA256:${"A".repeat(43)}`, public_key: { type: "Ed25519", data: "A".repeat(59) } }, channel: "c".repeat(22), node: "bench", info: null });
let id = 0;
const cpu: Record<string, number[]> = Object.fromEntries(Object.keys(clients).map((k) => [k, []]));
for (let r = 0; r < rounds; r++) {
  for (const [name, c] of Object.entries(clients)) {
    const t0 = performance.now();
    let n = 0;
    const c0 = process.cpuUsage();
    await Promise.all(
      Array.from({ length: conc }, async () => {
        while (performance.now() - t0 < ms) {
          await c.post({ id: `req_${id++}`, body, timeoutMs: 5000, maxBytes: 50_000 });
          n++;
        }
      }),
    );
    const u = process.cpuUsage(c0);
    cpu[name]!.push((u.user + u.system) / n);
    console.log(`round ${r + 1} ${name}: ${Math.round((n * 1000) / ms)} calls/s, ${((u.user + u.system) / n).toFixed(1)} CPU µs/call`);
  }
}
const median = (a: number[]) => a.slice(1).sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)]!;
console.log(`median CPU µs/call (rounds 2..${rounds}): ${Object.entries(cpu).map(([k, v]) => `${k} ${median(v).toFixed(1)}`).join(", ")}; load average ${loadavg()[0]!.toFixed(1)}`);
for (const c of Object.values(clients)) await c.close();
child.send({ cmd: "exit" });
