/**
 * Upstream child of the benchmark: the application a forwarding node calls,
 * as small as one can be, so the figure is the broker's and the upstream
 * keeps up with the fixed offered load on the load generator's core. It
 * speaks just enough HTTP/1.1 over node:net for the broker's calls (one
 * POST at a time per keep-alive connection, Content-Length bodies) and
 * answers each `{"data": <the request's data>}`; a batch
 * (`{"kind":"batch","requests":[…]}`, docs/BACKEND.md "Batches") with one
 * line `{"id", "data"}` per request, all in one write. (With node:http's server
 * here, sharing its core with the load generator, the forwarded row reached
 * 3 689 of the offered 8 000 requests/s, so its CPU per request was not
 * comparable with the in-process row's.) It does not verify
 * signatures (the examples do; its CPU is not what is measured).
 * IPC: sends {ready:{port}}; {cmd:"exit"} → exits.
 */
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";

const HEAD_END = Buffer.from("\r\n\r\n");

interface Request {
  id: string;
  data: unknown;
}

function answer(text: string): string {
  const body = JSON.parse(text) as Request & { kind: string; requests?: Request[] };
  if (body.kind !== "batch") return JSON.stringify({ data: body.data });
  return body.requests!.map((r) => JSON.stringify({ id: r.id, data: r.data })).join("\n");
}

const server = createServer((socket) => {
  socket.setNoDelay(true);
  let buf: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    for (;;) {
      const end = buf.indexOf(HEAD_END);
      if (end < 0) return;
      const m = /\r\ncontent-length: *(\d+)/i.exec(buf.toString("latin1", 0, end));
      const length = m ? Number(m[1]) : 0;
      if (buf.length < end + 4 + length) return;
      const out = answer(buf.toString("utf8", end + 4, end + 4 + length));
      buf = buf.subarray(end + 4 + length);
      socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(out)}\r\n\r\n${out}`);
    }
  });
  socket.on("error", () => socket.destroy());
});
server.listen(0, "127.0.0.1", () => process.send?.({ ready: { port: (server.address() as AddressInfo).port } }));
process.on("message", (m: { cmd?: string }) => {
  if (m.cmd === "exit") process.exit(0);
});
process.on("disconnect", () => process.exit(0));
