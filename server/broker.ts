/**
 * A broker node: one HTTP server on one port carrying the WebSocket endpoint,
 * `GET /healthz`, `GET /readyz`, `GET /metrics` and `GET /.well-known/psimbols`.
 * Application code registers request handlers by `op` and pushes messages.
 */
import { useNodeCrypto } from "../node/engines.js";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { Counter as PromCounter, Gauge, Histogram, Registry } from "prom-client";
import { type SigningKey, keyTypes, wirePublicKey } from "../shared/crypto.js";
import { CloseCode } from "../shared/errors.js";
import { b64u } from "../shared/encoding.js";
import { randomBytes } from "../shared/crypto.js";
import { Feature, MAX_INNER_BYTES, type NodeStats, PROTOCOL_VERSION } from "../shared/frames.js";
import type { ServerOffer } from "../shared/handshake.js";
import { signNextKey } from "../shared/server-key-next.js";
import type { ServerKeySet } from "./server-key.js";
import { type BrokerConfig, resolveConfig } from "./config.js";
import { Connection } from "./connection.js";
import { AddressRanges, Counter, FairWindow, FixedWindow, Unproven, limitKey } from "./limits.js";
import { Admission } from "./admission.js";
import { createLogger, type Logger } from "./log.js";
import type { KeyRegistry, Role } from "./registry.js";
import { ADMIN_NOT_FOUND, isAdminOp, operatorOnly, registerOperatorOps } from "./operator.js";
import { Schedule } from "./schedule.js";
import { type EventSink, EventType, RevokeReason, noEvents } from "./app/events.js";
import { StoreWatch } from "./store-watch.js";
import { MemoryStore } from "./store/memory-store.js";
import type { Store } from "./store/store.js";
import type { Authorizer } from "./app/authorize.js";
import type { Upstream } from "./app/upstream.js";

/** Largest push message (UTF-8 bytes of its JSON): room for the `{"message":…,"id":N}` wrapper within MAX_INNER_BYTES. */
export const MAX_PUSH_BYTES = MAX_INNER_BYTES - 64;

/** How often a node beats (Store.beat), ms. */
export const NODE_BEAT_MS = 1000;
/**
 * How long one beat lasts, ms: a node killed without closing its sockets is still shown
 * holding its channels at most this long after its last beat (docs/CLUSTER.md, Operating a cluster).
 */
export const NODE_BEAT_TTL_MS = 5000;
/** Releases kept for a retry while the store does not answer; past it the oldest is dropped. */
const MAX_UNRELEASED = 10_000;

/** Features this node offers (PROTOCOL.md §4.11); a hello or resume gets the intersection. */
export const SERVER_FEATURES: readonly string[] = Object.freeze([Feature.binary]);

/** What a request handler knows about its caller. */
export interface HandlerContext {
  /** Fingerprint of the proven identity key. */
  identity: string;
  channel: string;
  connection: string;
  node: string;
  /** The request's op. */
  op: string;
  /** Unique per request (channel, connection, seq): the upstream's `webhook-id` (docs/BACKEND.md). */
  requestId: string;
  /** The identity's public key in wire form, on nodes with an upstream or an authorize hook. */
  publicKey: { type: string; data: string } | undefined;
  /** The authorize hook's `info` for this channel, as JSON text. */
  info: string | undefined;
  /**
   * The caller's registered role, read from the key registry when called (so a
   * role changed meanwhile counts), or null for a key the service does not
   * know. @throws PsimbolsError `unavailable` when the registry does not answer.
   */
  role(): Promise<Role | null>;
}

/**
 * A request handler: gets the request's `data`, returns the response's `data`.
 * Throw a PsimbolsError to answer with its code; any other error becomes `internal`.
 */
export type Handler = (data: unknown, ctx: HandlerContext) => unknown;


/** Counters of one node (also exported at /metrics; the wire shape of `admin.channels`' stats). */
export type Stats = NodeStats;

/** What a Connection may use of its broker. */
export interface BrokerContext {
  readonly config: BrokerConfig;
  readonly log: Logger;
  readonly store: Store;
  readonly registry: KeyRegistry | undefined;
  readonly offer: ServerOffer;
  /**
   * The handler of `op`: a registered one, else `admin.*` answered by the broker
   * (never an application's), else the upstream route that takes it, if any.
   */
  route(op: string): Handler | undefined;
  readonly hellosPerAddress: FixedWindow;
  /** The operator's fixed cap on hellos per second, in fair shares (PROTOCOL.md §11.1); none by default. */
  readonly hellosTotal: FairWindow | undefined;
  /** Resumes have a budget of their own (a resume costs no signature): per address, and the operator's cap in total. */
  readonly resumesPerAddress: FixedWindow;
  readonly resumesTotal: FairWindow | undefined;
  /** Hellos and resumes are admitted while the node keeps up (PROTOCOL.md §11.4). */
  readonly admission: Admission;
  /** Listed fleet ranges (PROTOCOL.md §11.3), and resumes of one existing channel from them, per window. */
  readonly fleet: AddressRanges;
  readonly resumesPerChannel: FixedWindow;
  /** `conn` is proven (a channel established, or a resume of a channel that exists): from a fleet range, it leaves the unproven count (§11.3). */
  proven(conn: Connection): void;
  /** Frames failing authentication per address (PROTOCOL.md §11): past the budget, close 4002. */
  readonly failedPerAddress: FixedWindow;
  /** True while the store is unreachable for longer than the store-loss bound (PROTOCOL.md §11.2, close 4009). */
  storeLost(): boolean;
  readonly stats: Stats;
  /** The deadlines (expiring, expired) of every binding on this node, on one timer. */
  readonly schedule: Schedule<Connection>;
  /** Indexes (or un-indexes) a bound socket by its channel's identity, for store events. */
  index(conn: Connection, channel: { id: string; identity: string }, on: boolean): void;
  closed(conn: Connection, code: number): void;
  /** This node process, for the holder of the channels it binds (Store.bind): random per start. */
  readonly instance: string;
  /** `conn` let go of `channel`'s socket (Store.release): in the background, retried once the store answers again. */
  release(channel: string, conn: string): void;
  observeLatency(seconds: number): void;
  /** Calls to the application (docs/BACKEND.md): upstream routes for ops no handler takes, and the authorize hook. */
  readonly upstream: Upstream | undefined;
  readonly authorize: Authorizer | undefined;
  /** Lifecycle events for applications (server/app/events.ts); never blocks. */
  readonly events: EventSink;
}

/** Serves extra HTTP paths (the web console); returns false for paths it does not own. */
export type HttpHook = (req: IncomingMessage, res: ServerResponse, path: string) => boolean | Promise<boolean>;

export interface BrokerOptions {
  config?: Parameters<typeof resolveConfig>[0];
  serverKey: SigningKey;
  /** The next server key during a rollover (PROTOCOL.md §5.6); see {@link Broker.setServerKeys}. */
  serverKeyNext?: ServerKeySet["next"];
  store?: Store;
  registry?: KeyRegistry;
  logger?: Logger;
  /** Extra HTTP routes, tried before the 404. */
  http?: HttpHook;
  /** Ops no handler takes go to this upstream (server/app/upstream.ts). Closed with the broker. */
  upstream?: Upstream;
  /** Asked after each valid proof, before the channel is written (server/app/authorize.ts). */
  authorize?: Authorizer;
  /** Where lifecycle events go (server/app/events.ts). Default: nowhere. */
  events?: EventSink;
}

export class Broker {
  readonly config: BrokerConfig;
  readonly log: Logger;
  readonly store: Store;
  readonly stats: Stats = {
    handshakes: { started: 0, established: 0, rejected: 0, forbidden: 0, rateLimited: 0 },
    resumes: { ok: 0, rejected: 0 },
    requests: { ok: 0, failed: 0, unauthorised: 0, tooMany: 0 },
    notices: 0,
    pushes: 0,
    storeErrors: 0,
  };
  readonly #handlers = new Map<string, Handler>();
  readonly #http: Server;
  readonly #wss: WebSocketServer;
  readonly #connections = new Set<Connection>();
  /**
   * Bound sockets per identity: one socket as itself, several in a Set (rare). Channel events
   * (retired, rebound) go to the sockets of the channel's identity too: each socket matches
   * the channel id against its own bindings, so no second index per channel is kept.
   */
  readonly #byIdentity = new Map<string, Connection | Set<Connection>>();
  readonly #schedule: Schedule<Connection>;
  readonly #perAddress = new Counter();
  /** Raw TCP sockets per peer address (before and after the upgrade; a proxy counts as one peer). */
  readonly #sockets = new Counter();
  /** Sockets from fleet ranges with no channel yet, and the proven ones, per address (PROTOCOL.md §11.3). */
  readonly #unproven: Unproven;
  /** The raw socket of each connection from a fleet range. */
  readonly #socketOf = new WeakMap<Connection, Duplex>();
  readonly #fleet: AddressRanges;
  readonly #ctx: BrokerContext;
  readonly #metrics = new Registry();
  readonly #latency: Histogram;
  #serverKey: SigningKey;
  #serverKeyNext: ServerKeySet["next"];
  readonly #httpHook: HttpHook | undefined;
  readonly #upstream: Upstream | undefined;
  readonly #events: EventSink;
  #pinger: ReturnType<typeof setInterval> | undefined;
  /** This node process (Store.beat); a restart under the same name is another instance. */
  readonly instance = b64u(randomBytes(9));
  #beater: ReturnType<typeof setInterval> | undefined;
  #beating = false;
  /** Releases the store did not take (channel → connection), retried after the next beat that lands. */
  readonly #unreleased = new Map<string, string>();
  readonly #storeWatch: StoreWatch;
  #closing = false;

  private constructor(o: BrokerOptions) {
    this.config = resolveConfig(o.config);
    if (this.config.closed && !o.registry) throw new Error("setting closed: a closed service needs registered keys (--keys FILE, or --redis URL)");
    this.log = o.logger ?? createLogger();
    this.store = o.store ?? new MemoryStore();
    this.#serverKey = o.serverKey;
    this.#httpHook = o.http;
    this.#events = o.events ?? noEvents;
    const { limits } = this.config;
    this.#fleet = new AddressRanges(this.config.fleetRanges);
    this.#unproven = new Unproven(limits.fleetUnprovenPerAddress);
    this.#schedule = new Schedule<Connection>((conn, slot) => conn.onDue(slot), {
      onError: (e) => this.log.error("deadline failed", { component: "broker", error: e instanceof Error ? e.stack : String(e) }),
    });
    this.#ctx = {
      config: this.config,
      log: this.log,
      store: this.store,
      registry: o.registry,
      // moves: identity key rotation (PROTOCOL.md §5.7) is offered to every hello that asks
      offer: { key: o.serverKey, source: this.config.source, features: SERVER_FEATURES, channelTypes: this.config.channelTypes, kems: this.config.kems, moves: true },
      route: (op) => this.#handlers.get(op) ?? (isAdminOp(op) ? ADMIN_NOT_FOUND : o.upstream?.route(op)),
      hellosPerAddress: new FixedWindow(limits.hellosPerAddress, limits.hellosWindowMs),
      hellosTotal: limits.hellosPerSecond > 0 ? new FairWindow(limits.hellosPerSecond, 1000) : undefined,
      resumesPerAddress: new FixedWindow(limits.resumesPerAddress, limits.hellosWindowMs),
      resumesTotal: limits.resumesPerSecond > 0 ? new FairWindow(limits.resumesPerSecond, 1000) : undefined,
      admission: new Admission({ helloLagMs: limits.helloLagMs, resumeLagMs: limits.resumeLagMs }),
      fleet: this.#fleet,
      resumesPerChannel: new FixedWindow(limits.resumesPerChannel, limits.hellosWindowMs),
      proven: (conn) => {
        const socket = this.#socketOf.get(conn);
        if (socket) this.#unproven.prove(socket);
      },
      failedPerAddress: new FixedWindow(limits.failedFramesPerAddress, limits.hellosWindowMs),
      storeLost: () => this.#storeWatch.lost,
      stats: this.stats,
      schedule: this.#schedule,
      index: (conn, channel, on) => this.#index(conn, channel, on),
      closed: (conn) => {
        this.#connections.delete(conn);
        this.#perAddress.dec(limitKey(conn.address));
      },
      instance: this.instance,
      release: (channel, conn) => this.#release(channel, conn),
      observeLatency: (s) => this.#latency.observe(s),
      upstream: o.upstream,
      authorize: o.authorize,
      events: this.#events,
    };
    this.#upstream = o.upstream;
    this.#storeWatch = new StoreWatch(this.store, {
      boundMs: limits.storeLossBoundMs,
      onLost: (silentMs) => this.#onStoreLost(silentMs),
      onBack: (lostMs) => this.log.warn("store reachable again; taking clients", { component: "broker", lost_ms: lostMs }),
    });
    this.#latency = new Histogram({
      name: "psimbols_request_seconds",
      help: "Request handling time on the server",
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers: [this.#metrics],
    });
    this.#registerMetrics();
    o.upstream?.registerMetrics(this.#metrics);
    o.authorize?.registerMetrics(this.#metrics);
    this.handle("echo", (data) => data);
    this.handle("ping", () => ({ pong: true, time: new Date().toISOString() }));
    this.handle("whoami", (_data, ctx) => ({ identity: ctx.identity, channel: ctx.channel, node: ctx.node }));
    registerOperatorOps(this, o.registry);
    this.store.onEvent((e) => {
      if (e.kind === "push") {
        for (const conn of members(this.#byIdentity.get(e.identity))) conn.onPush(e.seq, e.data, e.channel);
        return;
      }
      for (const conn of members(this.#byIdentity.get(e.identity))) {
        if (e.kind === "retired") conn.onRetired(e.channel, e.reason);
        else conn.onRebound(e.channel, e.binding);
      }
    });
    // Events may have been lost while the store was unreachable: re-check what this node holds.
    this.store.onResync(() => {
      this.log.info("store events resumed; re-checking bound channels", { component: "broker" });
      for (const conn of this.#connections) conn.resync();
    });
    // clientTracking off: the broker has its own set of sockets (ws's would add a Set entry and a
    // close listener per socket).
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: limits.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
    this.#http = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => void this.#onHttp(req, res));
    // Slowloris before the upgrade: the request head must arrive within the handshake time,
    // and raw TCP connections count against the per-address limit from their first byte.
    this.#http.headersTimeout = limits.handshakeTimeoutMs;
    this.#http.requestTimeout = limits.handshakeTimeoutMs;
    // One listener for every socket (no closure kept per socket): the peer address read at
    // "connection" is cached by the socket, so it reads the same at "close".
    const sockets = this.#sockets;
    const unproven = this.#unproven;
    const onSocketClose = function (this: Duplex & { remoteAddress?: string }): void {
      sockets.dec(limitKey(this.remoteAddress ?? "unknown"));
      unproven.delete(this);
    };
    this.#http.on("connection", (socket) => {
      const address = socket.remoteAddress ?? "unknown";
      const key = limitKey(address);
      guardSocket(socket); // a peer's reset never ends the node (SECURITY.md)
      const n = this.#sockets.inc(key);
      socket.on("close", onSocketClose); // "close" comes once: no once() wrapper either
      // Behind a trusted proxy every socket comes from the proxy: the limit applies per X-Forwarded-For at the upgrade.
      if (this.config.trustProxy) return;
      // A fleet range (§11.3): unproven sockets are bounded, oldest cut first; proven ones by the node's capacity.
      if (this.#fleet.has(address)) this.#unproven.add(key, socket);
      else if (n > limits.connectionsPerAddress * 2) socket.destroy();
    });
    this.#http.on("upgrade", (req, socket, head) => this.#onUpgrade(req, socket, head));
  }

  /**
   * Creates a broker and starts listening. Selects the node:crypto engines
   * for the handshake and channel frames ({@link useNodeCrypto}) first.
   */
  static async start(o: BrokerOptions): Promise<Broker> {
    await useNodeCrypto();
    const b = new Broker(o);
    await new Promise<void>((resolve, reject) => {
      b.#http.once("error", reject);
      b.#http.listen(b.config.port, b.config.host, () => resolve());
    });
    if (o.config?.source === undefined && b.config.port === 0) {
      // Listening on an ephemeral port: the source names the port actually bound.
      b.config.source = resolveConfig({ host: b.config.host, port: b.port }).source;
      b.#ctx.offer.source = b.config.source;
    }
    if (o.serverKeyNext) await b.setServerKeys({ current: o.serverKey, next: o.serverKeyNext });
    b.#pinger = setInterval(() => {
      for (const c of b.#connections) c.heartbeat();
    }, b.config.limits.pingIntervalMs);
    b.#pinger.unref();
    b.#beat();
    b.#beater = setInterval(() => b.#beat(), NODE_BEAT_MS);
    b.#beater.unref();
    b.#ctx.admission.start();
    b.#storeWatch.start();
    b.log.info("broker listening", {
      component: "broker",
      url: `ws://${b.config.host}:${b.port}/`,
      node: b.config.node,
      fingerprint: o.serverKey.public.fingerprint,
      service: b.config.closed ? "closed" : "open",
    });
    return b;
  }

  /**
   * Replaces the keys this node presents (PROTOCOL.md §5.6): with a next key,
   * every challenge to a client that offers `server-key-next` carries the
   * current key's statement naming it; a new current key (a promotion) takes
   * over from the next hello on. Channels already granted are unaffected.
   */
  async setServerKeys(set: ServerKeySet): Promise<void> {
    const next = set.next ? await signNextKey(set.current, set.next.key.public, this.config.source, set.next.notBefore) : undefined;
    const promoted = set.current.public.fingerprint !== this.#serverKey.public.fingerprint;
    // one synchronous swap: a hello sees the old pair or the new one
    this.#serverKey = set.current;
    this.#serverKeyNext = set.next;
    this.#ctx.offer.key = set.current;
    this.#ctx.offer.next = next;
    this.log.info(promoted ? "server key changed" : "server key rotation state loaded", {
      component: "server-key",
      fingerprint: set.current.public.fingerprint,
      ...(set.next ? { next: set.next.key.public.fingerprint, not_before: set.next.notBefore } : {}),
    });
  }

  /** Fingerprints of the keys this node presents. */
  get serverKeys(): { current: string; next?: string; notBefore?: string } {
    const n = this.#serverKeyNext;
    return { current: this.#serverKey.public.fingerprint, ...(n ? { next: n.key.public.fingerprint, notBefore: n.notBefore } : {}) };
  }

  /** The port actually bound (useful with port 0). */
  get port(): number {
    const a = this.#http.address();
    return typeof a === "object" && a ? a.port : this.config.port;
  }

  /**
   * Registers (or replaces) the handler for `op`. `channel.close` is reserved;
   * an `admin.*` handler runs for operators only (PROTOCOL.md §6.6), others get `forbidden`.
   */
  handle(op: string, handler: Handler): this {
    if (op === "channel.close") throw new RangeError(`"op" channel.close is reserved`);
    this.#handlers.set(op, isAdminOp(op) ? operatorOnly(handler) : handler);
    return this;
  }

  /**
   * Pushes an application message to an identity (or one channel of it),
   * wherever it is connected: the store keeps it in the identity's window and
   * publishes it to every node. A client away now gets it when it resumes.
   * @returns the push's per-identity sequence number, or undefined for an unknown channel.
   */
  async push(target: { identity?: string; channel?: string }, message: unknown): Promise<number | undefined> {
    let identity = target.identity;
    if (identity === undefined) {
      if (target.channel === undefined) throw new RangeError("push needs an identity or a channel");
      const rec = await this.store.getChannel(target.channel);
      if (!rec || rec.retired) return undefined;
      identity = rec.identity;
    }
    const data = JSON.stringify(message ?? null);
    // The inner push wraps it as {"message":…,"id":N}; sealed, that must fit the client's frame limit.
    if (Buffer.byteLength(data) > MAX_PUSH_BYTES) throw new RangeError(`push data larger than ${MAX_PUSH_BYTES} bytes of JSON`);
    return this.store.push(identity, data, this.config.pushWindow, target.channel);
  }

  /** Revokes a channel, or the active channel of an identity. @returns the revoked channel ids. */
  async revoke(target: { identity?: string; channel?: string }): Promise<string[]> {
    if (target.channel !== undefined) {
      const rec = await this.store.getChannel(target.channel); // its identity, for the event
      rec?.key.fill(0); // a copy: only its identity is needed
      if (!rec || rec.retired || !(await this.store.retire(target.channel, "revoked"))) return [];
      this.#events.emit(EventType.revoked, rec.identity, { channel: target.channel, reason: RevokeReason.revoke });
      return [target.channel];
    }
    if (target.identity !== undefined) {
      const ids = await this.store.retireIdentity(target.identity, "revoked");
      for (const channel of ids) this.#events.emit(EventType.revoked, target.identity, { channel, reason: RevokeReason.revoke });
      return ids;
    }
    throw new RangeError("revoke needs a channel or an identity");
  }

  /** The node's Prometheus registry (/metrics): events and the server API add their metrics to it. */
  get metrics(): Registry {
    return this.#metrics;
  }

  /** Open sockets on this node. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Bound channels on this node. */
  channels(): { identity: string; channel: string; validUntil: number; node: string; connection: string; address: string }[] {
    const out = [];
    for (const c of this.#connections) {
      const b = c.bound;
      if (b) out.push({ ...b, connection: c.id, address: c.address });
    }
    return out;
  }

  /** Graceful stop: refuse new sockets, push `closing`, close every socket, close the store. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    clearInterval(this.#pinger);
    clearInterval(this.#beater);
    this.#ctx.admission.stop();
    this.#storeWatch.stop();
    this.#schedule.close();
    const httpClosed = new Promise<void>((r) => this.#http.close(() => r()));
    await Promise.all([...this.#connections].map((c) => c.shutdown()));
    const deadline = Date.now() + 3000;
    while (this.#connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.#connections) c.terminate();
    this.#wss.close();
    this.#http.closeAllConnections?.();
    await httpClosed;
    await this.store.close();
    await this.#upstream?.close();
    await this.#ctx.authorize?.close();
    this.log.info("broker stopped", { component: "broker" });
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const address = clientAddress(req, this.config.trustProxy);
    if (this.#closing) return reject(socket, 503, "Service Unavailable");
    const key = limitKey(address);
    const fleet = this.#fleet.has(address);
    // An address that spent its failed-frame budget gets no new socket until the window ends: a
    // refusal costs less than a WebSocket it would fill with more failed frames (PROTOCOL.md §11).
    // Not a fleet range (§11.3): there the address is shared by devices that fail no frame.
    if (!fleet && this.#ctx.failedPerAddress.spent(key)) return reject(socket, 429, "Too Many Requests");
    if (!fleet && this.#perAddress.get(key) >= this.config.limits.connectionsPerAddress) {
      this.log.warn("connection refused: too many from one address", { component: "broker", address, counted_as: key });
      return reject(socket, 429, "Too Many Requests");
    }
    // Behind a trusted proxy a fleet socket is known by its forwarded address from here on (§11.3).
    if (fleet && this.config.trustProxy) this.#unproven.add(key, socket);
    this.#wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      this.#perAddress.inc(key);
      const conn = new Connection(ws, address, this.#ctx);
      if (fleet) this.#socketOf.set(conn, socket);
      this.#connections.add(conn);
    });
  }

  async #onHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(body));
    };
    // HEAD is answered as GET is, without the body (node:http drops the body of a HEAD response).
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      return json(405, { error: "method not allowed" });
    }
    switch (path) {
      case "/healthz":
        return json(200, { status: "ok" });
      case "/readyz":
        // Ready means the node serves: its ping goes through the store watch, so an answer that
        // makes this 200 has also ended a store loss (hellos and resumes no longer get 4009).
        if (this.#closing) return json(503, { status: "closing" });
        if (!(await this.#storeWatch.ping()) || this.#storeWatch.lost) return json(503, { status: "store unavailable" });
        return json(this.#closing ? 503 : 200, { status: this.#closing ? "closing" : "ready" });
      case "/metrics":
        res.writeHead(200, { "content-type": this.#metrics.contentType });
        return void res.end(await this.#metrics.metrics());
      case "/.well-known/psimbols":
        return json(200, {
          protocol: "psimbols",
          version: PROTOCOL_VERSION,
          source: this.config.source,
          server_key: wirePublicKey(this.#serverKey.public),
          fingerprint: this.#serverKey.public.fingerprint,
          ...(this.#serverKeyNext
            ? { next_server_key: { fingerprint: this.#serverKeyNext.key.public.fingerprint, not_before: this.#serverKeyNext.notBefore } }
            : {}),
          channel_types: this.config.channelTypes,
          kems: this.config.kems,
          key_types: keyTypes,
          features: SERVER_FEATURES,
          service: this.config.closed ? "closed" : "open",
        });
      default:
        if (this.#httpHook && (await this.#httpHook(req, res, path ?? "/"))) return;
        return json(404, { error: "not found" });
    }
  }

  /**
   * The store has not answered for longer than the store-loss bound: this node
   * can no longer hear revocations, so every socket is closed with 4009 (the
   * client reconnects, through the balancer, to a node that can check).
   */
  #onStoreLost(silentMs: number): void {
    if (this.#closing) return;
    this.log.warn("store unreachable past the store-loss bound; closing every socket (4009)", {
      component: "broker",
      silent_ms: silentMs,
      bound_ms: this.config.limits.storeLossBoundMs,
      sockets: this.#connections.size,
    });
    for (const c of this.#connections) c.close(CloseCode.storeLost);
  }

  /** One beat: this instance lives for NODE_BEAT_TTL_MS more; then the releases the store missed are tried again. */
  #beat(): void {
    if (this.#beating) return;
    this.#beating = true;
    this.store.beat(this.instance, NODE_BEAT_TTL_MS).then(
      () => {
        this.#beating = false;
        const pending = [...this.#unreleased];
        this.#unreleased.clear();
        for (const [channel, conn] of pending) this.#release(channel, conn);
      },
      () => {
        this.#beating = false; // the store watch reports the outage
      },
    );
  }

  #release(channel: string, conn: string): void {
    this.store.release(channel, conn).catch(() => {
      if (this.#closing) return;
      if (this.#unreleased.size >= MAX_UNRELEASED) this.#unreleased.delete(this.#unreleased.keys().next().value!);
      this.#unreleased.set(channel, conn);
    });
  }

  #index(conn: Connection, channel: { id: string; identity: string }, on: boolean): void {
    if (channel.identity !== "") setIndex(this.#byIdentity, channel.identity, conn, on);
  }

  #registerMetrics(): void {
    const s = this.stats;
    const r = [this.#metrics];
    const self = this; // prom-client calls collect() with the metric as `this`
    new Gauge({ name: "psimbols_connections", help: "Open WebSocket connections", registers: r, collect() { this.set(self.#connections.size); } });
    new Gauge({ name: "psimbols_fleet_unproven_cut", help: "Sockets from fleet ranges cut to make room for newer ones (PROTOCOL.md §11.3), since start", registers: r, collect() { this.set(self.#unproven.evicted); } });
    const admission = this.#ctx.admission;
    new Gauge({ name: "psimbols_event_loop_lag_ms", help: "The event loop's lag that admission by capacity reads (PROTOCOL.md §11.4), ms", registers: r, collect() { this.set(admission.lagMs()); } });
    new Gauge({ name: "psimbols_store_lost", help: "1 while the store is unreachable past the store-loss bound", registers: r, collect() { this.set(self.#storeWatch.lost ? 1 : 0); } });
    const counter = (name: string, help: string, labelNames: string[], read: () => [Record<string, string>, number][]) =>
      new PromCounter({
        name,
        help,
        labelNames,
        registers: r,
        collect() {
          this.reset();
          for (const [labels, v] of read()) this.inc(labels, v);
        },
      });
    counter("psimbols_handshakes_total", "Handshakes by outcome", ["outcome"], () =>
      Object.entries(s.handshakes).map(([k, v]) => [{ outcome: k }, v]),
    );
    counter("psimbols_resumes_total", "Resumes by outcome", ["outcome"], () => Object.entries(s.resumes).map(([k, v]) => [{ outcome: k }, v]));
    counter("psimbols_requests_total", "Requests by outcome", ["outcome"], () => Object.entries(s.requests).map(([k, v]) => [{ outcome: k }, v]));
    counter("psimbols_admission_refused_total", "Hellos and resumes refused because the node was behind (PROTOCOL.md §11.4)", ["work"], () =>
      Object.entries(admission.refused).map(([k, v]) => [{ work: k }, v]),
    );
    counter("psimbols_notices_total", "Notices pushed", [], () => [[{}, s.notices]]);
    counter("psimbols_pushes_total", "Application pushes sent", [], () => [[{}, s.pushes]]);
    counter("psimbols_store_errors_total", "Failed store calls", [], () => [[{}, s.storeErrors]]);
  }
}

/** Adds `conn` under `key` (or removes it): a lone socket is kept as itself, a Set only while there are several. */
function setIndex(index: Map<string, Connection | Set<Connection>>, key: string, conn: Connection, on: boolean): void {
  const v = index.get(key);
  if (on) {
    if (v === undefined) index.set(key, conn);
    else if (v instanceof Set) v.add(conn);
    else if (v !== conn) index.set(key, new Set([v, conn]));
  } else if (v === conn) {
    index.delete(key);
  } else if (v instanceof Set) {
    v.delete(conn);
    if (v.size === 1) index.set(key, v.values().next().value!);
  }
}

/** The sockets under one index entry. */
function members(v: Connection | Set<Connection> | undefined): Iterable<Connection> {
  return v === undefined ? [] : v instanceof Set ? v : [v];
}

/** The peer's address; behind a trusted proxy, the last X-Forwarded-For entry (the one the proxy added). */
function clientAddress(req: IncomingMessage, trustProxy: boolean): string {
  const xff = req.headers["x-forwarded-for"];
  if (trustProxy && typeof xff === "string") {
    const last = xff.split(",").pop()?.trim();
    if (last) return last;
  }
  return req.socket.remoteAddress ?? "unknown";
}

/**
 * A refused upgrade: the status line, then the socket is destroyed once the bytes are out (as
 * ws's own refusals do), so a peer that never closes its side holds nothing. A reset by the peer
 * meanwhile is harmless: every socket got {@link guardSocket} when it connected.
 */
function reject(socket: Duplex, status: number, text: string): void {
  socket.once("finish", () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

/** The one error listener every accepted socket gets (no closure per socket). */
function onSocketError(this: Duplex): void {
  this.destroy(); // a reset or a broken pipe ends this socket only
}

/**
 * Makes a socket's errors end that socket only (SECURITY.md "Resets"). Node's HTTP server listens
 * for errors on a socket only while it parses HTTP on it: once the socket is handed to an
 * "upgrade" listener (a WebSocket, or a refusal with 429 or 503) it has none, and an error
 * emitted without a listener (ECONNRESET when the peer resets) ends the process. Called on
 * every socket of every listener of the node, at "connection", before any byte is read.
 */
export function guardSocket(socket: Duplex): void {
  socket.on("error", onSocketError);
}
