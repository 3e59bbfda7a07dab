/**
 * One client socket on a broker node: the server side of the connection state
 * machine of docs/PROTOCOL.md §8.
 *
 *   open ──hello──▶ challenged ──proof──▶ bound ──hello──▶ bound+challenged (renewal)
 *     └──resume──▶ resuming ──first authenticated request──▶ bound
 *
 * Frames of one socket are decoded and authenticated strictly in order (one
 * promise chain), so the replay check and the hello/proof order need no locks;
 * request handlers then run concurrently, bounded by `inFlightPerConnection`.
 * The per-message path touches no store.
 */
import type { WebSocket } from "ws";
import { CloseCode, ErrorCode, PsimbolsError } from "../shared/errors.js";
import { b64u, fromB64u, wipe } from "../shared/encoding.js";
import { randomBytes, wirePublicKey } from "../shared/crypto.js";
import { FrameKind, type BindingKeys, deriveBinding, frameNonce, innerText, sealBinaryFrame } from "../shared/channel.js";
import {
  type ClientFrame,
  Feature,
  type Hello,
  type InnerPush,
  type InnerRequest,
  type InnerResponse,
  type ChannelType,
  MAX_INNER_BYTES,
  type NoticeKind,
  type Proof,
  type RequestFrame,
  type Resume,
  SERVER_NONCE_BYTES,
  type ServerFrame,
  NOTICE_REASON_FORBIDDEN,
  applicationPushText,
  decodeClientBinary,
  decodeClientFrame,
  decodeInnerRequest,
  errorFrame,
} from "../shared/frames.js";
import { type PendingHandshake, acceptHello, sealGrant, verifyMoveProof, verifyProof } from "../shared/handshake.js";
import { checkMove, moveIdentity } from "./identity-move.js";
import type { BrokerContext, HandlerContext } from "./broker.js";
import { EncodedResponse } from "./response.js";
import type { ChannelRecord, RetireReason } from "./store/store.js";
import type { Logger } from "./log.js";
import { limitKey } from "./limits.js";
import { Work } from "./admission.js";
import { MoveLostError, Role } from "./registry.js";
import type { Slot } from "./schedule.js";
import { EventType, RevokeReason } from "./app/events.js";

/** What a binding keeps of its channel record: no key (the binding has its traffic keys). */
type BoundChannel = Pick<ChannelRecord, "id" | "identity" | "validUntil" | "node" | "app">;


/** One binding of a channel to this socket (PROTOCOL.md §6.1). */
interface Binding {
  /** Set for a resume (the store records which binding owns the channel, §6.5); a handshake's binding needs none. */
  readonly id: string | undefined;
  readonly channel: BoundChannel;
  readonly keys: BindingKeys;
  /** Highest request seq accepted (replay rule, §6.4). */
  lastSeq: number;
  /** Last push seq sent. */
  pushSeq: number;
  /** False for a resume until its first request authenticates (§6.5). */
  active: boolean;
  /** Set once the channel is retired; requests then get `unauthorised`. */
  dead: RetireReason | undefined;
  /** The `binary` feature was agreed for this binding: responses and pushes go as binary frames (§4.11). */
  binary: boolean;
  /** Its next deadline in the broker's schedule: the `expiring` notice, then the expiry. */
  due: Slot<Connection> | undefined;
  /** The `expiring` deadline is behind it (or there is none): the next one is the expiry. */
  warned: boolean;
}

const UNAUTHORISED = "unknown channel or bad ciphertext";

/** A settled promise to start the per-socket chains from (one for all sockets, not one each). */
const SETTLED: Promise<void> = Promise.resolve();

/** The Connection of a socket, for the socket listeners shared by all connections. */
const CONNECTION = Symbol("psimbols.connection");
type Wired = WebSocket & { [CONNECTION]: Connection };

export class Connection {
  readonly id: string;
  readonly address: string;
  readonly #ws: WebSocket;
  readonly #ctx: BrokerContext;
  #queue: Promise<void> = SETTLED;
  #queued = 0;
  #lastFrameAt = 0;
  #pending: PendingHandshake | undefined;
  #binding: Binding | undefined;
  /** The binding a renewal replaced, kept until its in-flight requests are answered. */
  #old: Binding | undefined;
  /** Channels this socket retired itself (renewal, close): no notice back to it. Made on first use. */
  #selfRetired: Set<string> | undefined;
  #inFlight = 0;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  /** From a fleet range: the per-address window the pending hello was charged to, given back once it proves (PROTOCOL.md §11.3). */
  #helloCharged: number | undefined;
  #closed = false;
  /** A cork is held on the socket until the next tick (see #cork). */
  #corked = false;
  /** Identities this socket asked the store to watch (one, as a rule: kept as the string itself); unwatched at teardown. */
  #watched: string | string[] | undefined;
  /** Highest application push seq of this socket's identity already handled (§7.2). */
  #lastPush = 0;
  /** Frames that failed authentication since the last one that passed (the failed-frame budget, §11). */
  #failed = 0;
  /** `last_push` of the resume frame, until the resume activates. */
  #resumeLastPush: number | undefined;
  /** Application pushes go out one at a time, in seq order. */
  #pushChain: Promise<void> = SETTLED;
  alive = true;

  constructor(ws: WebSocket, address: string, ctx: BrokerContext) {
    this.#ws = ws;
    this.address = address;
    this.#ctx = ctx;
    this.id = b64u(randomBytes(9));
    this.#armHandshakeTimer();
    (ws as Wired)[CONNECTION] = this;
    const on = Connection.#on;
    ws.on("message", on.message);
    ws.on("pong", on.pong);
    ws.on("close", on.close);
    ws.on("error", on.error);
  }

  /** Socket listeners, the same functions for every socket (no closures kept per socket); `this` is the socket. */
  static readonly #on = {
    message(this: WebSocket, data: unknown, isBinary: boolean): void {
      (this as Wired)[CONNECTION].#enqueue(data as Buffer, isBinary);
    },
    pong(this: WebSocket): void {
      (this as Wired)[CONNECTION].alive = true;
    },
    close(this: WebSocket, code: number): void {
      (this as Wired)[CONNECTION].#teardown(code);
    },
    error(this: WebSocket, err: Error): void {
      (this as Wired)[CONNECTION].#log.debug("socket error", { error: err.message });
    },
  };

  /** A child logger is made per log line, not kept per socket (a few hundred bytes per idle socket). */
  get #log(): Logger {
    return this.#ctx.log.child({ component: "connection", conn: this.id });
  }

  /** Identity fingerprint and channel id of the current binding, if any. */
  get bound(): { identity: string; channel: string; validUntil: number; node: string } | undefined {
    const b = this.#binding;
    return b && b.active && !b.dead ? { identity: b.channel.identity, channel: b.channel.id, validUntil: b.channel.validUntil, node: b.channel.node } : undefined;
  }

  // ------------------------------------------------------------ inbound

  #enqueue(data: Buffer, isBinary: boolean): void {
    if (this.#closed) return;
    this.#lastFrameAt = Date.now();
    if (this.#queued === 0) {
      // Nothing ahead of this frame: handle it now, on this tick (docs/PERFORMANCE.md: a request on a bound
      // channel needs no promise up to its handler). Only what must wait (a store call, a WebCrypto
      // engine) becomes the head of the queue, so order is kept as on the queued path.
      this.#queued = 1;
      let r: void | Promise<void>;
      try {
        r = this.#onMessage(data, isBinary);
      } catch (e) {
        this.#queued = 0;
        this.#fail(e);
        return;
      }
      if (r === undefined) {
        this.#queued = 0;
        return;
      }
      this.#queue = r.catch((e: unknown) => this.#fail(e)).finally(this.#dequeued);
      return;
    }
    if (++this.#queued > this.#ctx.config.limits.queuedFramesPerConnection) {
      this.#fail(new PsimbolsError(ErrorCode.tooMany, "too many frames queued on this connection", { close: CloseCode.tooMany }));
      return;
    }
    this.#queue = this.#queue
      .then(() => (this.#closed ? undefined : this.#onMessage(data, isBinary)))
      .catch((e: unknown) => this.#fail(e))
      .finally(this.#dequeued);
  }

  /** A queued frame is done. Nothing queued: an idle socket keeps no promise of its own, only the shared settled one. */
  readonly #dequeued = (): void => {
    if (--this.#queued === 0) this.#queue = SETTLED;
  };

  /** Handles one frame: synchronously where it can (a request), else the promise of its handling. Throws what it refuses. */
  #onMessage(data: Buffer, isBinary: boolean): void | Promise<void> {
    let frame: ClientFrame;
    if (isBinary) {
      // Binary frames are requests of a binding that agreed on the `binary` feature (§4.11).
      if (!this.#binding?.binary && !this.#old?.binary) {
        throw new PsimbolsError(ErrorCode.badRequest, "binary frames are not accepted without the binary feature", { close: CloseCode.unsupportedData });
      }
      try {
        frame = decodeClientBinary(data);
      } catch (e) {
        throw withClose(e, CloseCode.badRequest);
      }
      return this.#onRequest(frame);
    }
    try {
      frame = decodeClientFrame(data.toString("utf8"));
    } catch (e) {
      throw withClose(e, CloseCode.badRequest);
    }
    switch (frame.type) {
      case "hello":
        return this.#onHello(data, frame);
      case "proof":
        return this.#onProof(frame);
      case "resume":
        return this.#onResume(frame);
      case "request":
        return this.#onRequest(frame);
    }
  }

  async #onHello(bytes: Uint8Array, hello: Hello): Promise<void> {
    if (this.#pending) throw new PsimbolsError(ErrorCode.badRequest, "a handshake is already pending on this connection", { close: CloseCode.badRequest });
    this.#checkStore();
    this.#helloCharged = this.#checkHelloRate();
    this.#ctx.stats.handshakes.started++;
    let r: Awaited<ReturnType<typeof acceptHello>>;
    try {
      r = await acceptHello(bytes, hello, this.#ctx.offer);
    } catch (e) {
      this.#ctx.stats.handshakes.rejected++;
      // `unsupported` is a negotiation answer: the client may try again on this socket.
      if (e instanceof PsimbolsError && e.code === ErrorCode.unsupported) return this.#sendError(e);
      throw withClose(e, CloseCode.badRequest);
    }
    this.#pending = r.pending;
    this.#armHandshakeTimer();
    this.#send(r.challenge);
  }

  async #onProof(proof: Proof): Promise<void> {
    const p = this.#pending;
    if (!p) throw new PsimbolsError(ErrorCode.badRequest, "proof without a pending handshake", { close: CloseCode.badRequest });
    this.#pending = undefined;
    const sig = fromB64u(proof.signature, "signature");
    if (!(await verifyProof(p, sig))) {
      this.#ctx.stats.handshakes.rejected++;
      throw new PsimbolsError(ErrorCode.unauthorised, "proof does not verify", { close: CloseCode.badRequest });
    }
    // §5.7: an identity move needs the new key's signature over the same transcript as well
    if ((proof.move_signature !== undefined) !== (p.moveTo !== undefined)) {
      throw new PsimbolsError(ErrorCode.badRequest, `"move_signature" goes with an identity-move hello only`, { close: CloseCode.badRequest });
    }
    if (p.moveTo && !(await verifyMoveProof(p, fromB64u(proof.move_signature, "move_signature")))) {
      this.#ctx.stats.handshakes.rejected++;
      throw new PsimbolsError(ErrorCode.unauthorised, "proof does not verify", { close: CloseCode.badRequest });
    }
    let identity = p.identity.fingerprint;
    const { config, store, registry } = this.#ctx;
    const registered = registry ? await this.#store(() => registry.lookup(identity)) : undefined;
    if (p.moveTo) {
      const moveTo = p.moveTo;
      const target = registry ? await this.#store(() => registry.lookup(moveTo.fingerprint)) : undefined;
      try {
        checkMove(config, registered, target);
      } catch (e) {
        this.#ctx.stats.handshakes.forbidden++;
        this.#log.info("identity move forbidden", { identity, to: moveTo.fingerprint });
        throw e;
      }
    }
    if (registered?.role === Role.blocked || (config.closed && !registered)) {
      // Both after a valid proof only: to anyone else, blocked, unregistered and registered keys look alike.
      const blocked = registered?.role === Role.blocked;
      this.#ctx.stats.handshakes.forbidden++;
      this.#log.info(blocked ? "handshake forbidden: key blocked" : "handshake forbidden: key not registered", { identity });
      throw new PsimbolsError(ErrorCode.forbidden, blocked ? "this key is blocked by the service" : "this key is not registered with the service", { close: CloseCode.forbidden });
    }
    // Counted only after a valid proof, so hellos carrying someone else's key cannot lock them out.
    const n = await this.#store(() => store.hit(`hs:${identity}`, 60_000));
    if (n > config.limits.handshakesPerIdentityPerMinute) {
      this.#ctx.stats.handshakes.rejected++;
      throw new PsimbolsError(ErrorCode.tooMany, "too many handshakes for this key; slow down", { close: CloseCode.tooMany });
    }
    const previous = this.#binding;
    // Renewal: same identity, so activation retires the previous channel; no notice back to us.
    // An identity move (§5.7) is no renewal: the new channel is the new identity's. Nor is a
    // handshake after this socket's channel died (expired, gone from the store): the new channel
    // starts at the identity's newest push id, as on a fresh socket (§7.2).
    const renewal = !p.moveTo && previous !== undefined && previous.dead === undefined && previous.channel.identity === identity;
    // The application's say (docs/BACKEND.md §3): after the proof, the closed-service check and the
    // limits, before the channel is written; for a move (PROTOCOL.md §5.7), about both keys, before
    // anything moves: a refusal moves nothing.
    const app = await this.#authorize(p, registered?.role ?? null, renewal, previous);
    if (p.moveTo) {
      const from = p.identity;
      const to = p.moveTo;
      // this socket's own channel of the old identity ends with the move, without a notice to itself
      if (previous) (this.#selfRetired ??= new Set()).add(previous.channel.id);
      const moved = await this.#store(() => moveIdentity(config, store, registry, from, to, registered)).catch((e: unknown) => {
        // lost to a concurrent write of the registration (PROTOCOL.md §5.7): refused, nothing moved
        if (e instanceof MoveLostError) this.#ctx.stats.handshakes.forbidden++;
        throw e;
      });
      identity = to.fingerprint;
      for (const channel of moved.retired) this.#ctx.events.emit(EventType.revoked, from.fingerprint, { channel, reason: RevokeReason.moved });
      this.#log.info("identity moved", { identity: from.fingerprint, to: identity, role: moved.registered?.role, pushes: moved.pushes, retired: moved.retired.length });
    }
    const key = randomBytes(32);
    const now = Date.now();
    const ttl = app?.ttl ?? config.channelTtl;
    const rec: ChannelRecord = {
      id: channelId(),
      identity,
      key,
      type: p.channelType,
      validUntil: now + ttl * 1000,
      ttl,
      node: config.node,
      holder: { node: config.node, instance: this.#ctx.instance, conn: this.id },
      ...(app ? { app: app.app } : {}),
    };
    if (previous && renewal) (this.#selfRetired ??= new Set()).add(previous.channel.id);
    const keys = await deriveBinding(key, rec.id, p.nonceC, p.nonceS, rec.type);
    // Sealed before the channel is written and indexed: from #install to #send below nothing
    // awaits, so no notice for the new channel (a `replaced` from a concurrent handshake of the
    // same key) can reach the client before the `established` that grants it.
    const grant = { channel: rec.id, key: { type: rec.type, data: b64u(key) }, valid_until: new Date(rec.validUntil).toISOString(), ttl: rec.ttl };
    const established = await sealGrant(p, sig, grant, config.source);
    grant.key.data = "";
    this.#watch(identity);
    let replaced: string | undefined;
    try {
      // Pushes up to now are not for this channel: a new channel starts at the identity's current seq.
      const lastPush = renewal ? this.#lastPush : await this.#store(() => store.lastPush(identity));
      // Recorded with the channel: a resume elsewhere catches up from here at least (§6.5).
      replaced = await this.#store(() => store.activate({ ...rec, pushFrom: lastPush }));
      if (this.#closed) this.#ctx.release(rec.id, this.id); // the socket left while the store wrote it
      this.#lastPush = lastPush;
    } catch (e) {
      if (previous) this.#selfRetired?.delete(previous.channel.id);
      wipe(key);
      wipeKeys(keys);
      throw e;
    }
    if (previous) {
      // The old binding answers what it already accepted, nothing more.
      previous.dead ??= "replaced";
      this.#retireOld();
      this.#old = previous;
      if (previous.channel.id !== replaced) this.#selfRetired?.delete(previous.channel.id);
    }
    const binary = p.features.includes(Feature.binary);
    this.#install({ id: undefined, channel: bound(rec), keys, lastSeq: 0, pushSeq: 0, active: true, dead: undefined, due: undefined, warned: false, binary });
    wipe(key);
    this.#ctx.stats.handshakes.established++;
    this.#proven();
    this.#log.info(renewal ? "channel renewed" : "channel established", { identity, channel: rec.id, replaced });
    const validUntil = new Date(rec.validUntil).toISOString();
    if (renewal) this.#ctx.events.emit(EventType.renewed, identity, { channel: rec.id, previous: previous.channel.id, valid_until: validUntil });
    else this.#ctx.events.emit(EventType.established, identity, { channel: rec.id, valid_until: validUntil, replaced });
    if (replaced !== undefined && !(renewal && replaced === previous.channel.id)) this.#ctx.events.emit(EventType.replaced, identity, { channel: replaced, by: rec.id });
    this.#send(established);
  }

  /**
   * Asks the authorize hook, where there is one (server/app/authorize.ts), about `p`'s key
   * with its registered `role` (for a move, both keys: the old one with the new as `move_to`, then
   * the new one with the old as `move_from`; both must allow). A refusal
   * is `forbidden` exactly as a closed service's; at a renewal it also revokes the current
   * channel (`channel.revoked`, reason `authorize`; the `revoked` notice with reason
   * `forbidden`), so the application ends the access there. No hook and no upstream: nothing to keep.
   * @throws PsimbolsError `forbidden` (close 4008) or `unavailable` (the hook gave no answer).
   */
  async #authorize(p: PendingHandshake, role: Role | null, renewal: boolean, previous: Binding | undefined): Promise<{ ttl: number | undefined; app: NonNullable<ChannelRecord["app"]> } | undefined> {
    const { authorize, upstream, config } = this.#ctx;
    if (!authorize && !upstream) return undefined;
    const { identity, moveTo } = p;
    // The channel's own key: the new one, for a move.
    const publicKey = wirePublicKey(moveTo ?? identity);
    if (!authorize) return { ttl: undefined, app: { publicKey } };
    const ask = { address: this.address, renewal, node: config.node, ttl: config.channelTtl };
    let d = await authorize.decide({ ...ask, identity, role, moveTo });
    // A move is asked about both keys, each as the question's `identity` (docs/BACKEND.md §3): a hook
    // that judges `identity` alone keeps a refused old key from escaping and a refused new key from
    // coming in. Both must allow; the channel is the new key's, so its answer gives ttl and info.
    if (moveTo && d.allow) {
      if (this.#closed) throw new PsimbolsError(ErrorCode.unavailable, "the connection closed during the handshake");
      const first = d;
      d = await authorize.decide({ ...ask, identity: moveTo, role, moveTo: undefined, moveFrom: identity });
      if (d.allow && first.ttl !== undefined) d = { ...d, ttl: d.ttl === undefined ? first.ttl : Math.min(d.ttl, first.ttl) };
    }
    // The socket may have closed while the application thought (handshake timeout, the peer left): write nothing for it.
    if (this.#closed) throw new PsimbolsError(ErrorCode.unavailable, "the connection closed during the handshake");
    if (!d.allow) {
      this.#ctx.stats.handshakes.forbidden++;
      this.#log.info("handshake forbidden by the application", { identity: identity.fingerprint, renewal, move: moveTo !== undefined });
      if (renewal && previous && !previous.dead) {
        previous.dead = "revoked";
        (this.#selfRetired ??= new Set()).add(previous.channel.id);
        const channel = previous.channel.id;
        if (await this.#store(() => this.#ctx.store.retire(channel, "revoked"))) {
          this.#ctx.events.emit(EventType.revoked, previous.channel.identity, { channel, reason: RevokeReason.authorize });
        }
        // Authenticated, before the unauthenticated answer and close below: the client learns from
        // the channel itself that the service refused its key (PROTOCOL.md §7, `revoked`).
        await this.#notice(previous, "revoked", undefined, NOTICE_REASON_FORBIDDEN);
      }
      throw new PsimbolsError(ErrorCode.forbidden, "this key is not registered with the service", { close: CloseCode.forbidden });
    }
    return { ttl: d.ttl, app: d.info === undefined ? { publicKey } : { publicKey, info: d.info } };
  }

  async #onResume(f: Resume): Promise<void> {
    if (this.#pending || this.#binding) {
      throw new PsimbolsError(ErrorCode.badRequest, "resume is only accepted on a fresh connection", { close: CloseCode.badRequest });
    }
    this.#checkStore();
    // From a fleet range the store is read first (§11.3): a resume of a channel that exists takes from
    // that channel's budget, anything else from the address's, so a keyless flood cannot spend the fleet's.
    const fleet = this.#ctx.fleet.has(this.address);
    if (!fleet) this.#checkResumeRate();
    const found = await this.#store(() => this.#ctx.store.getChannel(f.channel));
    const live = found !== undefined && !found.retired && found.validUntil > Date.now();
    try {
      // By capacity (§11.4): a channel that exists up to the resume target, anything else as a new handshake.
      this.#admit(live ? Work.resume : Work.hello);
      if (fleet) {
        if (live) {
          this.#checkChannelResumeRate(found.id);
          // Naming a channel that exists (128 random bits) takes the socket out of the address's unproven slots.
          this.#ctx.proven(this);
        } else this.#checkResumeRate();
      }
    } catch (e) {
      if (found) wipe(found.key);
      throw e;
    }
    // An unknown or expired channel is answered like a known one, with keys nobody holds, so that to
    // an outsider unknown, expired and retired channels look the same (DESIGN.md §7): the first
    // request fails with `unauthorised` either way; only the channel's holder learns more (§6.5).
    const rec = found ?? phantom(f.channel, this.#ctx.config.node, this.#ctx.config.channelTypes[0]!);
    const nonceS = randomBytes(SERVER_NONCE_BYTES);
    this.#resumeLastPush = f.last_push;
    // The channel's own type, whatever this node would choose today (§6.5).
    let keys: BindingKeys;
    try {
      keys = await deriveBinding(rec.key, rec.id, fromB64u(f.nonce, "nonce"), nonceS, rec.type);
    } finally {
      wipe(rec.key); // the binding keeps only its traffic keys (records from the store are copies)
    }
    // Features of this binding: what the resume asks for and this node offers (§4.11).
    const features = f.features?.filter((x) => this.#ctx.offer.features?.includes(x));
    const binary = features?.includes(Feature.binary) ?? false;
    this.#install({ id: b64u(randomBytes(9)), channel: bound(rec), keys, lastSeq: 0, pushSeq: 0, active: false, dead: undefined, due: undefined, warned: false, binary });
    this.#send({ type: "resumed", source: this.#ctx.config.source, channel: rec.id, nonce: b64u(nonceS), ...(features ? { features } : {}) });
  }

  /**
   * A request: checks, opens and dispatches it on this tick where the engine is
   * synchronous (node:crypto, libsodium) and the binding is active; a promise
   * only where something must be awaited (a WebCrypto engine, a resume's activation).
   */
  #onRequest(f: RequestFrame): void | Promise<void> {
    const b = this.#binding?.channel.id === f.channel ? this.#binding : this.#old?.channel.id === f.channel ? this.#old : undefined;
    // Past the binding's cap (§6.4: 2^24 for AES-256-GCM, 2^32 − 1 for ChaCha20-Poly1305): a protocol violation, as a seq past the wire's.
    if (b && f.seq > b.keys.maxSeq) {
      throw new PsimbolsError(ErrorCode.badRequest, `"seq" expected integer in 1..${b.keys.maxSeq} for ${b.keys.type}`, { close: CloseCode.badRequest });
    }
    if (!b || b.dead || b.channel.validUntil <= Date.now() || f.seq <= b.lastSeq) {
      this.#ctx.stats.requests.unauthorised++;
      this.#failedFrame();
      return this.#sendError(new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED), { seq: f.seq, channel: f.channel });
    }
    let opened: Uint8Array | Promise<Uint8Array>;
    try {
      opened = b.keys.c2s.open(frameNonce(FrameKind.request, f.seq), f.channel, f.request);
    } catch (e) {
      return this.#refused(e, f);
    }
    if (opened instanceof Uint8Array) return this.#opened(b, f, opened);
    return opened.then(
      (pt) => this.#opened(b, f, pt),
      (e: unknown) => this.#refused(e, f),
    );
  }

  /** A request that did not open: `unauthorised` (or the engine's `bad_request`), nothing consumed. */
  #refused(e: unknown, f: RequestFrame): void {
    this.#ctx.stats.requests.unauthorised++;
    this.#failedFrame();
    this.#sendError(e instanceof PsimbolsError ? e : new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED), { seq: f.seq, channel: f.channel });
  }

  #opened(b: Binding, f: RequestFrame, plaintext: Uint8Array): void | Promise<void> {
    // Consumed once authenticated, whatever comes next: a refused frame never becomes valid later.
    b.lastSeq = f.seq;
    this.#failed = 0;
    let text: string;
    try {
      text = innerText(plaintext);
    } catch (e) {
      return this.#sendError(e as PsimbolsError, { seq: f.seq, channel: f.channel });
    }
    if (this.#inFlight >= this.#ctx.config.limits.inFlightPerConnection) {
      this.#ctx.stats.requests.tooMany++;
      return this.#sendError(new PsimbolsError(ErrorCode.tooMany, "too many requests in flight on this connection"), { seq: f.seq, channel: f.channel });
    }
    if (!b.active) {
      return this.#activateResume(b).then((ok) =>
        ok ? this.#dispatch(b, f.seq, text) : this.#sendError(new PsimbolsError(ErrorCode.unauthorised, UNAUTHORISED), { seq: f.seq, channel: f.channel }),
      );
    }
    this.#dispatch(b, f.seq, text);
  }

  /** Runs the handler; requests then run concurrently, bounded by `inFlightPerConnection`. */
  #dispatch(b: Binding, seq: number, text: string): void {
    this.#inFlight++;
    let r: void | Promise<void>;
    try {
      r = this.#handle(b, seq, text);
    } catch (e) {
      this.#requestFailed(e);
      return this.#handled();
    }
    if (r === undefined) return this.#handled();
    r.catch((e: unknown) => this.#requestFailed(e)).finally(() => this.#handled());
  }

  #requestFailed(e: unknown): void {
    this.#log.error("request failed", { error: e instanceof Error ? e.message : String(e) });
  }

  #handled(): void {
    this.#inFlight--;
    if (this.#old && this.#inFlight === 0) this.#retireOld();
  }

  /** First authenticated frame of a resume: the binding takes over the channel (§6.5). */
  async #activateResume(b: Binding): Promise<boolean> {
    const { store } = this.#ctx;
    const rec = b.channel.identity === "" ? undefined : await this.#store(() => store.getChannel(b.channel.id));
    if (!rec || rec.retired) {
      b.dead = rec?.retired ?? "expired";
      this.#ctx.stats.resumes.rejected++;
      // A tombstone: the client missed the notice while away; tell it now, authenticated.
      if (rec?.retired) void this.#notice(b, rec.retired).then(() => this.#terminalClose(rec.retired!));
      return false;
    }
    b.active = true;
    this.#proven();
    this.#watch(rec.identity);
    // Where this channel stands (§6.5, §7.2): the client's `last_push`; without one (a client that
    // never got a push), the id the channel started from, so what was acknowledged while it was
    // away is delivered or reported lost. A record from an older node has no start: then the
    // newest id, as before.
    const fromSeq = this.#resumeLastPush ?? rec.pushFrom;
    this.#lastPush = fromSeq ?? (await this.#store(() => store.lastPush(rec.identity)));
    this.#ctx.index(this, rec, true);
    this.#schedule(b);
    this.#handshakeOver();
    try {
      await this.#store(() => store.bind(rec.id, rec.identity, b.id!, { node: this.#ctx.config.node, instance: this.#ctx.instance, conn: this.id }));
      if (this.#closed) this.#ctx.release(rec.id, this.id); // the socket left while the store wrote it
      this.#ctx.stats.resumes.ok++;
      this.#log.info("channel resumed", { identity: rec.identity, channel: rec.id });
      this.#ctx.events.emit(EventType.resumed, rec.identity, { channel: rec.id, node: this.#ctx.config.node });
    } finally {
      // After the takeover is recorded (and reported): the missed pushes' events follow `channel.resumed`.
      if (fromSeq !== undefined) this.#queuePush(() => this.#catchUp());
    }
    return true;
  }

  /**
   * Decodes the inner request, runs its handler and seals the answer. On this
   * tick when the handler returns a value (not a promise); `channel.close`
   * and async handlers make it a promise.
   */
  #handle(b: Binding, seq: number, text: string): void | Promise<void> {
    const started = performance.now();
    let req: InnerRequest;
    try {
      req = decodeInnerRequest(text);
    } catch (e) {
      return this.#answer(b, seq, this.#failure(e), started);
    }
    if (req.op === "channel.close") {
      (this.#selfRetired ??= new Set()).add(b.channel.id);
      b.dead = "closed";
      return this.#store(() => this.#ctx.store.retire(b.channel.id, "closed")).then(
        (retired) => {
          if (retired) this.#ctx.events.emit(EventType.closed, b.channel.identity, { channel: b.channel.id });
          return this.#answer(b, seq, { data: { closed: true } }, started);
        },
        (e: unknown) => this.#answer(b, seq, this.#failure(e), started),
      );
    }
    const handler = this.#ctx.route(req.op);
    if (!handler) return this.#answer(b, seq, this.#failure(new PsimbolsError(ErrorCode.notFound, "no handler for this op")), started);
    const ctx: HandlerContext = {
      identity: b.channel.identity,
      channel: b.channel.id,
      connection: this.id,
      node: this.#ctx.config.node,
      op: req.op,
      requestId: `req_${b.channel.id}.${this.id}.${seq}`,
      publicKey: b.channel.app?.publicKey,
      info: b.channel.app?.info,
      role: () => this.#role(b.channel.identity),
    };
    let result: unknown;
    try {
      result = handler(req.data, ctx);
    } catch (e) {
      return this.#answer(b, seq, this.#failure(e), started);
    }
    if (isThenable(result)) {
      return Promise.resolve(result).then(
        (v) => this.#answer(b, seq, v instanceof EncodedResponse ? v : { data: v ?? null }, started),
        (e: unknown) => this.#answer(b, seq, this.#failure(e), started),
      );
    }
    return this.#answer(b, seq, { data: result ?? null }, started);
  }

  /** The registered role of `identity` now, null for a key the service does not know. @throws PsimbolsError `unavailable`. */
  async #role(identity: string): Promise<Role | null> {
    const { registry } = this.#ctx;
    if (!registry) return null;
    return (await this.#store(() => registry.lookup(identity)))?.role ?? null;
  }

  /** A handler's failure as an inner error: a PsimbolsError's code, anything else `internal` (logged, not sent). */
  #failure(e: unknown): InnerResponse {
    if (e instanceof PsimbolsError) return { error: { code: e.code, message: e.message } };
    this.#log.error("handler failed", { error: e instanceof Error ? e.message : String(e) });
    return { error: { code: ErrorCode.internal, message: "the handler failed" } };
  }

  /** Counts, times, serialises (bounded by MAX_INNER_BYTES) and seals the inner response. */
  #answer(b: Binding, seq: number, inner: InnerResponse | EncodedResponse, started: number): void | Promise<void> {
    if (inner instanceof EncodedResponse || !("error" in inner)) this.#ctx.stats.requests.ok++;
    else this.#ctx.stats.requests.failed++;
    this.#ctx.observeLatency((performance.now() - started) / 1000);
    if (this.#closed) return;
    if (inner instanceof EncodedResponse) return this.#sendSealed(b, "response", seq, inner.json);
    let out: string;
    try {
      out = JSON.stringify(inner);
    } catch (e) {
      // A handler returned something JSON cannot carry (a BigInt, a cycle): its caller gets `internal`.
      this.#log.error("handler result is not JSON", { error: e instanceof Error ? e.message : String(e) });
      out = JSON.stringify({ error: { code: ErrorCode.internal, message: "the handler failed" } });
    }
    // One byte of UTF-8 per UTF-16 unit at least, three at most: only a long answer needs counting.
    if (out.length * 3 > MAX_INNER_BYTES && Buffer.byteLength(out) > MAX_INNER_BYTES) {
      // Sealed, it would pass the frame limit, and the client would close the socket (1009).
      this.#log.error("handler result too large", { bytes: Buffer.byteLength(out), limit: MAX_INNER_BYTES });
      out = JSON.stringify({ error: { code: ErrorCode.internal, message: `the response is larger than ${MAX_INNER_BYTES} bytes` } });
    }
    return this.#sendSealed(b, "response", seq, out);
  }

  // ------------------------------------------------------------ from the broker

  /** A store event: the channel was retired somewhere (maybe on another node). */
  onRetired(channel: string, reason: RetireReason): void {
    for (const b of [this.#binding, this.#old]) {
      if (!b || b.channel.id !== channel) continue;
      b.dead ??= reason;
      if (b !== this.#binding || this.#selfRetired?.delete(channel)) continue;
      this.#clearTimers(b);
      void this.#notice(b, reason).then(() => this.#terminalClose(reason));
    }
  }

  /** A store event: another binding (a resume, maybe elsewhere) took over `channel`. */
  onRebound(channel: string, binding: string): void {
    const b = this.#binding;
    if (b && b.channel.id === channel && b.id !== binding && b.active) {
      b.dead = "replaced";
      this.close(CloseCode.replaced);
    }
  }

  /** A store event: an application push for this socket's identity (maybe for one channel of it). */
  onPush(seq: number, data: string, channel: string | undefined): void {
    this.#queuePush(async () => {
      if (seq <= this.#lastPush) return; // already handled (a duplicate, or replayed by a catch-up)
      // Pub/sub is lossy: a gap means events were missed; the kept window fills it.
      if (seq > this.#lastPush + 1) await this.#catchUp();
      if (seq <= this.#lastPush) return;
      await this.#deliver(seq, data, channel);
    });
  }

  /**
   * After events may have been lost: re-checks the bound channel (revoked or
   * replaced meanwhile?) and fetches pushes missed from the kept window.
   */
  resync(): void {
    const b = this.#binding;
    if (!b || !b.active || b.dead) return;
    void this.#ctx.store
      .getChannel(b.channel.id)
      .then((rec) => {
        if (!rec) this.onRetired(b.channel.id, "expired");
        else if (rec.retired) this.onRetired(b.channel.id, rec.retired);
        else this.#queuePush(() => this.#catchUp());
      })
      .catch(() => {
        /* the store is still down: the next resync tries again */
      });
  }

  /**
   * Graceful shutdown: pushes `closing` (the client moves to another node),
   * keeps answering what arrives until the requests in flight are done (at
   * most `drainMs`), then closes with 4006.
   */
  async shutdown(drainMs = 5000): Promise<void> {
    const b = this.#binding;
    if (b && b.active && !b.dead) await this.#notice(b, "closing").catch(() => {});
    // The client leaves by itself once its requests are answered; until then every frame
    // it sent before it saw `closing` is answered. A quiet second also ends the wait.
    const deadline = Date.now() + drainMs;
    while (!this.#closed && Date.now() < deadline) {
      const quiet = this.#inFlight === 0 && this.#queued === 0 && Date.now() - this.#lastFrameAt > 1000;
      if (quiet) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    this.close(CloseCode.closing);
  }

  /** The one teardown path towards the peer. */
  close(code: CloseCode, message?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ws.close(code.code, message ?? code.reason);
    // A peer that never answers the close is cut off.
    setTimeout(() => this.#ws.terminate(), 2000).unref();
  }

  terminate(): void {
    this.#ws.terminate();
  }

  /** Called every ping interval: a peer that did not answer the last ping is cut off. */
  heartbeat(): void {
    if (!this.alive) {
      this.#log.info("no pong; closing");
      this.#ws.terminate();
      return;
    }
    this.alive = false;
    this.#ws.ping();
  }

  // ------------------------------------------------------------ internals

  #queuePush(f: () => Promise<void>): void {
    this.#pushChain = this.#pushChain.then(f).catch((e: unknown) => {
      this.#log.warn("push delivery failed", { error: e instanceof Error ? e.message : String(e) });
    });
  }

  /** Sends the kept pushes after `#lastPush`, or `pushes_lost` when the window moved past it. */
  async #catchUp(): Promise<void> {
    const b = this.#binding;
    if (!b || !b.active || b.dead || this.#closed) return;
    const identity = b.channel.identity;
    const kept = await this.#ctx.store.pushesSince(identity, this.#lastPush);
    if (kept === "gap") {
      const after = this.#lastPush;
      this.#lastPush = await this.#ctx.store.lastPush(identity);
      // Pushes after..newest fell out of the window before this channel got them.
      this.#ctx.events.emit(EventType.pushDropped, identity, { channel: b.channel.id, after, newest: this.#lastPush });
      await this.#notice(b, "pushes_lost");
      return;
    }
    for (const p of kept) if (p.seq > this.#lastPush) await this.#deliver(p.seq, p.data, undefined);
  }

  async #deliver(seq: number, data: string, channel: string | undefined): Promise<void> {
    this.#lastPush = seq;
    const b = this.#binding;
    if (!b || !b.active || b.dead || this.#closed || (channel !== undefined && channel !== b.channel.id)) return;
    this.#ctx.stats.pushes++;
    this.#ctx.events.emit(EventType.pushDelivered, b.channel.identity, { channel: b.channel.id, seq });
    // `data` is JSON text the broker made (Broker.push): wrapped as it is, not parsed and made again per socket.
    await this.#sendPush(b, applicationPushText(data, seq));
  }

  /** After a `replaced`/`revoked` notice the client must not come back on its own (terminal codes). */
  #terminalClose(reason: RetireReason): void {
    if (reason === "replaced") this.close(CloseCode.replaced);
    else if (reason === "revoked") this.close(CloseCode.revoked);
    else if (reason === "closed") this.close(CloseCode.normal);
  }

  #install(b: Binding): void {
    const prev = this.#binding;
    if (prev) {
      this.#clearTimers(prev);
      this.#ctx.index(this, prev.channel, false);
    }
    this.#binding = b;
    if (b.active) {
      this.#handshakeOver();
      this.#ctx.index(this, b.channel, true);
      this.#schedule(b);
    }
  }

  #retireOld(): void {
    if (this.#old && this.#inFlight === 0) {
      this.#clearTimers(this.#old);
      this.#old = undefined;
    }
  }

  /** Puts the binding's deadlines in the broker's schedule: `expiring` (if it is still ahead), then the expiry. */
  #schedule(b: Binding): void {
    this.#clearTimers(b);
    const { expiringBefore } = this.#ctx.config;
    const warnAt = b.channel.validUntil - expiringBefore * 1000;
    b.warned = !(expiringBefore > 0 && warnAt > Date.now());
    b.due = this.#ctx.schedule.add(b.warned ? b.channel.validUntil : warnAt, this);
  }

  /** The broker's schedule: a deadline of this socket's binding is due. */
  onDue(slot: Slot<Connection>): void {
    const b = this.#binding;
    if (!b || b.due !== slot) return; // a deadline of a binding that has gone since
    b.due = undefined;
    if (!b.warned) {
      b.warned = true;
      b.due = this.#ctx.schedule.add(b.channel.validUntil, this);
      void this.#notice(b, "expiring", new Date(b.channel.validUntil).toISOString());
      return;
    }
    if (b.dead) return;
    b.dead = "expired";
    this.#ctx.events.emit(EventType.expired, b.channel.identity, { channel: b.channel.id });
    void this.#notice(b, "expired");
  }

  #clearTimers(b: Binding): void {
    this.#ctx.schedule.cancel(b.due);
    b.due = undefined;
  }

  async #notice(b: Binding, notice: NoticeKind, validUntil?: string, reason?: string): Promise<void> {
    if (this.#closed) return;
    this.#ctx.stats.notices++;
    const inner: InnerPush = validUntil ? { notice, valid_until: validUntil } : { notice };
    if (reason !== undefined) inner.reason = reason;
    await this.#sendPush(b, JSON.stringify(inner));
  }

  /** Sends the JSON text of an inner push (§7). */
  async #sendPush(b: Binding, inner: string): Promise<void> {
    if (b.pushSeq >= b.keys.maxSeq) return this.close(CloseCode.tooMany, "push limit of this binding reached; resume");
    await this.#sendSealed(b, "push", ++b.pushSeq, inner);
  }

  /** Seals an inner payload under `b`'s s2c key and writes it: a binary frame where `b` agreed on it (§4.11), else JSON. */
  /**
   * Seals an inner payload under `b`'s s2c key and writes it, one `send` per
   * frame: a binary frame where `b` agreed on it (§4.11), else JSON. On this
   * tick with a synchronous engine; a promise with WebCrypto's.
   */
  #sendSealed(b: Binding, type: "response" | "push", seq: number, text: string): void | Promise<void> {
    const kind = type === "response" ? FrameKind.response : FrameKind.push;
    if (b.binary) {
      const frame = sealBinaryFrame(b.keys, kind, seq, text);
      if (frame instanceof Uint8Array) return this.#write(frame);
      return frame.then((f) => this.#write(f));
    }
    const ct = b.keys.s2c.seal(frameNonce(kind, seq), b.channel.id, text);
    if (typeof ct === "string") return this.#sendJsonFrame(b, type, seq, ct);
    return ct.then((c) => this.#sendJsonFrame(b, type, seq, c));
  }

  #sendJsonFrame(b: Binding, type: "response" | "push", seq: number, ct: string): void {
    const { source } = this.#ctx.config;
    const channel = b.channel.id;
    this.#send(type === "response" ? { type, source, channel, seq, response: ct } : { type, source, channel, seq, push: ct });
  }

  /** Past the store-loss bound this node takes no channel: the client should go to a node that can check it. */
  #checkStore(): void {
    if (this.#ctx.storeLost()) {
      throw new PsimbolsError(ErrorCode.unavailable, "this node cannot reach the service's store; try another node", { close: CloseCode.storeLost });
    }
  }

  /**
   * Hellos: by capacity (§11.4), then the per-address window, then the operator's node-wide cap if
   * set, shared fairly among addresses (§11.1).
   * From a fleet range (§11.3) a renewal (a hello on a bound socket) skips the address's window,
   * and a fresh hello's charge is given back once it proves: the window of an address in a fleet
   * range counts unproven hellos only. Returns that window, for a fresh hello from a fleet range.
   */
  #checkHelloRate(): number | undefined {
    // First by capacity (§11.4): a hello refused because the node is behind is charged to no window.
    // A renewal's refusal leaves its socket open: the channel still serves, and what is in flight on it
    // is answered (closing would cost the node a resume on top of the renewal it put off).
    this.#admit(Work.hello, this.bound !== undefined);
    const key = limitKey(this.address);
    const { hellosPerAddress, hellosTotal, fleet } = this.#ctx;
    const inFleet = fleet.has(this.address);
    const renewal = inFleet && this.bound !== undefined;
    const w = hellosPerAddress.window;
    // A fleet range's window counts admitted unproven hellos only: a refused one is given back at
    // once (it will never prove), so a flood's refused hellos do not hold the window shut longer.
    if (!renewal && !hellosPerAddress.take(key)) {
      if (inFleet) hellosPerAddress.give(key, w);
      return this.#helloRefused();
    }
    if (hellosTotal && !hellosTotal.take(key)) {
      if (inFleet && !renewal) hellosPerAddress.give(key, w);
      return this.#helloRefused();
    }
    return inFleet && !renewal ? w : undefined;
  }

  /**
   * Admission by capacity (§11.4): refuses `work` while the node's event loop is behind its
   * target, early (before any signature or store write), with `too_many`, close 4002 (unless
   * `keepOpen`: a renewal on a bound socket) and a hint of how long to wait; the client tries
   * again after at least that long.
   */
  #admit(work: Work, keepOpen = false): void {
    const { admission } = this.#ctx;
    if (admission.admit(work)) return;
    const retryAfterMs = admission.retryAfterMs();
    throw new PsimbolsError(ErrorCode.tooMany, `this node is busy; try again in ${retryAfterMs} ms`, keepOpen ? { retryAfterMs } : { close: CloseCode.tooMany, retryAfterMs });
  }

  #helloRefused(): never {
    this.#ctx.stats.handshakes.rateLimited++;
    throw new PsimbolsError(ErrorCode.tooMany, "too many handshakes; slow down", { close: CloseCode.tooMany });
  }

  /** A channel is bound on this socket (established, or a resume activated): a fleet range's counts see it (§11.3). */
  #proven(): void {
    this.#ctx.proven(this);
    if (this.#helloCharged !== undefined) this.#ctx.hellosPerAddress.give(limitKey(this.address), this.#helloCharged);
    this.#helloCharged = undefined;
  }

  /** A fleet range's resume of a channel that exists (§11.3): that channel's window, then the node's budget in a share of the channel's own. */
  #checkChannelResumeRate(channel: string): void {
    if (!this.#ctx.resumesPerChannel.take(channel) || this.#ctx.resumesTotal?.take(`channel ${channel}`) === false) {
      this.#ctx.stats.handshakes.rateLimited++;
      throw new PsimbolsError(ErrorCode.tooMany, "too many resumes; slow down", { close: CloseCode.tooMany });
    }
  }

  /** Resumes: a budget of their own (no signature to pay for), per address and in fair shares of the operator's node-wide cap if set (§11.1). */
  #checkResumeRate(): void {
    const key = limitKey(this.address);
    if (!this.#ctx.resumesPerAddress.take(key) || this.#ctx.resumesTotal?.take(key) === false) {
      this.#ctx.stats.handshakes.rateLimited++;
      throw new PsimbolsError(ErrorCode.tooMany, "too many resumes; slow down", { close: CloseCode.tooMany });
    }
  }

  /**
   * Counts a frame that failed authentication against the budgets of this connection (since its
   * last authenticated frame) and of its address (per window): a keyless flood of failed frames
   * costs the node a bounded share, as the frame queue once bounded it (PROTOCOL.md §11).
   * @throws PsimbolsError too_many, close 4002, past either budget.
   */
  #failedFrame(): void {
    if (++this.#failed > this.#ctx.config.limits.failedFramesPerConnection || !this.#ctx.failedPerAddress.take(limitKey(this.address))) {
      throw new PsimbolsError(ErrorCode.tooMany, "too many frames that fail authentication; slow down", { close: CloseCode.tooMany });
    }
  }

  /** Runs a store call; an unreachable store becomes `unavailable`. */
  async #store<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (cause) {
      if (cause instanceof MoveLostError) throw cause; // an answer, not an outage
      this.#ctx.stats.storeErrors++;
      this.#log.warn("store call failed", { error: cause instanceof Error ? cause.message : String(cause) });
      throw new PsimbolsError(ErrorCode.unavailable, "the service's store is unavailable; try again shortly", { cause });
    }
  }

  #watch(identity: string): void {
    const w = this.#watched;
    if (w === identity || (Array.isArray(w) && w.includes(identity))) return;
    this.#watched = w === undefined ? identity : Array.isArray(w) ? [...w, identity] : [w, identity];
    this.#ctx.store.watch(identity);
  }

  #armHandshakeTimer(): void {
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = setTimeout(() => {
      if (this.#pending || !this.#binding?.active) this.close(CloseCode.handshakeTimeout);
    }, this.#ctx.config.limits.handshakeTimeoutMs);
    this.#handshakeTimer.unref?.();
  }

  #disarmHandshakeTimer(): void {
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
  }

  /**
   * Bound: drops what only the handshake needed. Besides the timer, the ws
   * receiver's list of pending chunks (grown to 16 slots by the handshake
   * frames, ~140 bytes an idle socket keeps for nothing) loses its storage
   * when it is empty, as it is between frames. `_receiver._buffers` is ws's
   * (8.x, undocumented, as `_socket` in #cork); if it is not there, nothing happens.
   */
  #handshakeOver(): void {
    this.#disarmHandshakeTimer();
    const r = (this.#ws as unknown as { _receiver?: { _buffers?: unknown } })._receiver;
    if (Array.isArray(r?._buffers) && r._buffers.length === 0) r._buffers.length = 0;
  }

  #send(frame: ServerFrame): void {
    this.#write(JSON.stringify(frame));
  }

  /** Writes a JSON frame's text or a binary channel frame (§4.11). */
  #write(data: string | Uint8Array): void {
    if (this.#closed) return;
    if (this.#ws.bufferedAmount > this.#ctx.config.limits.sendBufferBytes) {
      this.#log.warn("slow consumer cut off", { buffered: this.#ws.bufferedAmount });
      this.close(CloseCode.slowConsumer);
      return;
    }
    this.#cork();
    this.#ws.send(data);
  }

  /**
   * Holds this socket's writes until the current run of callbacks and
   * microtasks is over, so the answers to one read's worth of requests leave
   * in one writev instead of one syscall each (docs/PERFORMANCE.md: the per-frame write
   * was the largest single cost once AES-GCM ran on node:crypto). ws corks
   * around each frame itself; the counts nest. `_socket` is ws's (stable,
   * undocumented) handle on the net.Socket.
   */
  #cork(): void {
    if (this.#corked) return;
    const socket = (this.#ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (!socket) return;
    this.#corked = true;
    socket.cork();
    process.nextTick(() => {
      this.#corked = false;
      socket.uncork();
    });
  }

  #sendError(e: PsimbolsError, extra?: { seq?: number; channel?: string }): void {
    this.#send(errorFrame(e.code, e.message, e.retryAfterMs === undefined ? extra : { ...extra, retry_after_ms: e.retryAfterMs }));
  }

  /** A frame broke the rules: answer with its error, then close if the error says so. */
  #fail(e: unknown): void {
    const err =
      e instanceof PsimbolsError ? e : new PsimbolsError(ErrorCode.internal, "internal error", { close: CloseCode.badRequest, cause: e });
    if (!(e instanceof PsimbolsError)) this.#log.error("unexpected error", { error: e instanceof Error ? e.stack : String(e) });
    else this.#log.debug("frame rejected", { code: err.code, message: err.message });
    this.#sendError(err);
    if (err.close) this.close(err.close);
  }

  #teardown(code: number): void {
    this.#closed = true;
    this.#disarmHandshakeTimer();
    this.#pending = undefined;
    const held = this.#binding;
    if (held?.active && !held.dead) this.#ctx.release(held.channel.id, this.id);
    for (const b of [this.#binding, this.#old]) {
      if (!b) continue;
      this.#clearTimers(b);
      this.#ctx.index(this, b.channel, false);
      wipeKeys(b.keys); // closed: nothing is sealed or opened for this socket any more
    }
    const w = this.#watched;
    for (const identity of w === undefined ? [] : Array.isArray(w) ? w : [w]) this.#ctx.store.unwatch(identity);
    this.#watched = undefined;
    this.#ctx.closed(this, code);
  }
}

/** A stand-in record for a resume of an unknown channel: a random key, no identity; never stored. */
function phantom(id: string, node: string, type: ChannelType): ChannelRecord {
  return { id, identity: "", key: randomBytes(32), type, validUntil: Date.now() + 60_000, ttl: 60, node };
}

/** Zeroes a finished binding's traffic keys where the engine can (node:crypto keys can; CryptoKeys cannot). */
function wipeKeys(keys: BindingKeys): void {
  keys.c2s.wipe?.();
  keys.s2c.wipe?.();
}

/** A fresh channel id: base64url of 16 random bytes, as one flat string (b64u's would be a slice of a padded one). */
function channelId(): string {
  return Buffer.from(randomBytes(16)).toString("base64url");
}

/** What a binding keeps of a record (a fresh object: the record, and its key, can go). */
function bound(rec: ChannelRecord): BoundChannel {
  return rec.app
    ? { id: rec.id, identity: rec.identity, validUntil: rec.validUntil, node: rec.node, app: rec.app }
    : { id: rec.id, identity: rec.identity, validUntil: rec.validUntil, node: rec.node };
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return typeof x === "object" && x !== null && typeof (x as { then?: unknown }).then === "function";
}

function withClose(e: unknown, close: CloseCode): unknown {
  return e instanceof PsimbolsError && !e.close ? new PsimbolsError(e.code, e.message, { close, cause: e.cause }) : e;
}
