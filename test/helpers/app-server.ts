/**
 * A real HTTP application for tests of the calls to applications (docs/BACKEND.md):
 * a node:http server on a free port of 127.0.0.1 whose answer per path the
 * test sets, recording every request (headers and exact body) and every TCP
 * connection it accepted (to see keep-alive at work).
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { Socket } from "node:net";

export interface AppRequest {
  path: string;
  headers: Record<string, string>;
  body: string;
  json: any;
}

/** Answers one request; the default answers 404. */
export type Behaviour = (req: AppRequest, res: ServerResponse) => void | Promise<void>;

export class AppServer {
  readonly requests: AppRequest[] = [];
  readonly #server: Server;
  readonly #routes = new Map<string, Behaviour>();
  readonly #sockets = new Set<Socket>();
  connections = 0;
  port = 0;

  private constructor() {
    this.#server = createServer((req, res) => void this.#on(req, res));
    this.#server.on("connection", (s: Socket) => {
      this.connections++;
      this.#sockets.add(s);
      s.once("close", () => this.#sockets.delete(s));
    });
  }

  static async start(port = 0): Promise<AppServer> {
    const a = new AppServer();
    await new Promise<void>((resolve, reject) => {
      a.#server.once("error", reject);
      a.#server.listen(port, "127.0.0.1", () => resolve());
    });
    const addr = a.#server.address();
    a.port = typeof addr === "object" && addr ? addr.port : port;
    return a;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Sets the answer of `path`. */
  on(path: string, b: Behaviour): this {
    this.#routes.set(path, b);
    return this;
  }

  /** Requests to `path` so far. */
  to(path: string): AppRequest[] {
    return this.requests.filter((r) => r.path === path);
  }

  /** Lets the process exit while the server (and its open connections) are still there. */
  unref(): this {
    this.#server.unref();
    for (const s of this.#sockets) s.unref();
    this.#server.on("connection", (s: Socket) => s.unref());
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  async #on(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      json = undefined;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers[k] = v;
    const r: AppRequest = { path: (req.url ?? "/").split("?")[0]!, headers, body, json };
    this.requests.push(r);
    const b = this.#routes.get(r.path);
    if (!b) {
      res.writeHead(404).end();
      return;
    }
    try {
      await b(r, res);
    } catch {
      if (!res.headersSent) res.writeHead(500).end();
    }
  }
}

/** Answers 200 with `body` as JSON. */
export function json(res: ServerResponse, body: unknown, status = 200): void {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(text);
}
