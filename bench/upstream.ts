/**
 * Upstream child of the benchmark (docs/PERFORMANCE.md, Forwarding to an application): the application a
 * forwarding node calls, as small as one can be, so the figure is the
 * broker's: a node:http server on 127.0.0.1 with keep-alive that answers each
 * POST `{"data": <the request's data>}`. It does not verify signatures (the
 * examples do; here its own CPU is not what is measured, and it runs on the
 * load generator's core). IPC: sends {ready:{port}}; {cmd:"exit"} → exits.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { data: unknown };
    const out = JSON.stringify({ data: body.data });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) }).end(out);
  });
});
server.keepAliveTimeout = 120_000;
server.listen(0, "127.0.0.1", () => process.send?.({ ready: { port: (server.address() as AddressInfo).port } }));
process.on("message", (m: { cmd?: string }) => {
  if (m.cmd === "exit") server.close(() => process.exit(0));
});
process.on("disconnect", () => process.exit(0));
