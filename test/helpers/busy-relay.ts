/**
 * A WebSocket relay in front of a real broker that answers chosen frames as a
 * busy node does (PROTOCOL.md §11.4): an error frame `too_many` with
 * `retry_after_ms`, then close 4002 (or the socket stays, for a refused
 * renewal). Everything else is relayed frame by frame, both ways.
 */
import WebSocket, { WebSocketServer } from "ws";

export interface BusyRelay {
  url: string;
  /** When each connection opened (ms since the epoch), in order. */
  readonly opened: number[];
  /** When the last refusal was sent (0: none yet). */
  readonly refusedAt: number;
  /** Ends every connection through the relay (as a network fault would); new ones still pass. */
  cut(): void;
  close(): void;
}

/** How a frame is refused: the hint, and whether the socket stays (a refused renewal on a live channel). */
export interface Refusal {
  ms: number;
  keepOpen?: boolean;
}

/**
 * @param target the broker's ws:// URL
 * @param refuse for each frame a client sends (on its n-th connection, 1-based; `type` its JSON
 *   `type`): how to refuse it, or undefined to relay it. A refused frame never reaches the broker.
 */
export async function startBusyRelay(target: string, refuse: (n: number, type: string | undefined) => Refusal | undefined): Promise<BusyRelay> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  const opened: number[] = [];
  const downs = new Set<WebSocket>();
  const relay = {
    url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`,
    opened,
    refusedAt: 0,
    cut: () => downs.forEach((d) => d.terminate()),
    close: () => (downs.forEach((d) => d.terminate()), wss.close()),
  };
  wss.on("connection", (down) => {
    downs.add(down);
    down.on("close", () => downs.delete(down));
    opened.push(Date.now());
    const n = opened.length;
    const up = new WebSocket(target);
    const pending: [Buffer, boolean][] = [];
    down.on("message", (d: Buffer, binary) => {
      let type: string | undefined;
      try {
        type = binary ? undefined : (JSON.parse(d.toString()) as { type?: string }).type;
      } catch {
        type = undefined;
      }
      const r = refuse(n, type);
      if (r !== undefined) {
        relay.refusedAt = Date.now();
        down.send(JSON.stringify({ type: "error", error: { code: "too_many", message: `this node is busy; try again in ${r.ms} ms` }, retry_after_ms: r.ms }));
        if (!r.keepOpen) down.close(4002, "rate limited");
        return;
      }
      if (up.readyState === WebSocket.OPEN) up.send(d, { binary });
      else pending.push([d, binary]);
    });
    up.on("open", () => pending.splice(0).forEach(([d, b]) => up.send(d, { binary: b })));
    up.on("message", (d: Buffer, b) => down.send(d, { binary: b }));
    up.on("error", () => down.terminate());
    const end = () => (down.terminate(), up.terminate());
    down.on("close", end);
    up.on("close", end);
  });
  return relay;
}
