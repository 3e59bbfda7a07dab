/**
 * A TCP proxy in front of a broker for fault tests: `cut()` destroys every
 * connection through it, as a network fault would; new connections still pass.
 */
import { createConnection, createServer, type Socket } from "node:net";

export interface Proxy {
  url: string;
  port: number;
  /** Destroys all current connections (both directions). */
  cut(): void;
  /** Sends new connections to another port from now on. */
  retarget(port: number): void;
  /** Writes `bytes` to every client side (as if the server sent them), then cuts the connections. */
  inject(bytes: Uint8Array): void;
  /** Holds what servers send (buffered, in order) until {@link release}; clients' data still flows. */
  hold(): void;
  /** Writes `bytes` to every client side now, ahead of anything held; the connections stay. */
  slip(bytes: Uint8Array): void;
  /** Sends what was held, then lets server data flow again. */
  release(): void;
  /** Holds what clients send (buffered, in order) until {@link releaseRequests}; servers' data still flows. */
  holdRequests(): void;
  /** Sends what clients sent meanwhile, in order, and lets it flow again. @returns the bytes that were held. */
  releaseRequests(): number;
  close(): void;
}

export async function startProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<Proxy> {
  const pairs = new Set<[Socket, Socket]>();
  let port_ = targetPort;
  const server = createServer((down) => {
    const up = createConnection(port_, targetHost);
    const pair: [Socket, Socket] = [down, up];
    pairs.add(pair);
    down.pipe(up);
    up.pipe(down);
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on("error", end).on("close", end);
    up.on("error", end).on("close", end);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const cut = () => {
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return {
    url: `ws://127.0.0.1:${port}/`,
    port,
    cut,
    retarget(p: number) {
      port_ = p;
    },
    inject(bytes: Uint8Array) {
      for (const [down, up] of pairs) {
        up.unpipe(down);
        down.end(bytes);
      }
    },
    hold() {
      // unpipe stops the flow; data from the server then waits in `up`'s buffer, in order.
      for (const [down, up] of pairs) {
        up.unpipe(down);
        up.pause();
      }
    },
    slip(bytes: Uint8Array) {
      for (const [down] of pairs) down.write(bytes);
    },
    release() {
      for (const [down, up] of pairs) up.pipe(down);
    },
    holdRequests() {
      for (const [down, up] of pairs) {
        down.unpipe(up);
        down.pause();
      }
    },
    releaseRequests() {
      let held = 0;
      for (const [down, up] of pairs) {
        held += down.readableLength;
        down.pipe(up);
      }
      return held;
    },
    close() {
      cut();
      server.close();
    },
  };
}
