/**
 * The authorize hook (docs/BACKEND.md "Authorize"): after a
 * valid proof, and before the channel is written to the store, the node asks
 * the application whether this identity may have a channel, on the first
 * handshake, on every renewal and on an identity move (asked about the old
 * key, with the new one beside it). The answer allows (optionally with a
 * shorter ttl and a small JSON `info` kept with the channel, wrapped at rest)
 * or refuses; the client then gets `forbidden` exactly as a closed service
 * refuses. No usable answer (down, slow, 5xx, garbage) is `unavailable`:
 * the hook fails closed.
 */
import { Counter as PromCounter, type Registry } from "prom-client";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type PublicKey, randomBytes, wirePublicKey } from "../../shared/crypto.js";
import { b64u } from "../../shared/encoding.js";
import type { Logger } from "../log.js";
import type { Role } from "../registry.js";
import { type AppClient, CallError, CallFailure, parseAnswer } from "./http.js";

/** Defaults of the hook's bounds (docs/BACKEND.md "Limits"). */
export const AuthorizeDefaults = {
  timeoutMs: 3000,
  /** Largest `info`, bytes of its JSON text. */
  maxInfoBytes: 4096,
  /** Largest answer read, bytes. */
  maxResponseBytes: 8192,
} as const;

/** What the hook is asked. */
export interface AuthorizeQuestion {
  /** The key that proved the handshake: for an identity move, the old key, whose registration moves. */
  identity: PublicKey;
  /** Its registered role (the one that moves, for a move), or null for a key the service does not know. */
  role: Role | null;
  /** An identity move (PROTOCOL.md §5.7), asked about the old key: the new key, which the channel is for. */
  moveTo: PublicKey | undefined;
  /** An identity move, asked about the new key: the old key, whose registration moves to it. */
  moveFrom?: PublicKey | undefined;
  address: string;
  renewal: boolean;
  node: string;
  /** The ttl the channel gets unless the answer shortens it, seconds. */
  ttl: number;
}

/** The hook's decision. `info` is the JSON text of the answer's `info`. */
export type Decision = { allow: true; ttl: number | undefined; info: string | undefined } | { allow: false };

export type AuthorizeOutcome = "allow" | "deny" | CallFailure;

export interface AuthorizerOptions {
  /** The hook's URL and secret(s) (its own, or the shared default: setup.ts). */
  client: AppClient;
  /** Whole-call timeout, ms. Default 3000. */
  timeoutMs?: number;
  /** Largest `info` (bytes of JSON). Default 4096. */
  maxInfoBytes?: number;
  log?: Logger;
}

/** Asks the application's authorize hook. */
export class Authorizer {
  readonly #client: AppClient;
  readonly #timeoutMs: number;
  readonly #maxInfoBytes: number;
  readonly #log: Logger | undefined;
  readonly #outcomes = new Map<AuthorizeOutcome, number>();

  constructor(o: AuthorizerOptions) {
    this.#client = o.client;
    this.#timeoutMs = bounded("authorize-timeout", o.timeoutMs ?? AuthorizeDefaults.timeoutMs, 1, 600_000);
    this.#maxInfoBytes = bounded("authorize-max-info-bytes", o.maxInfoBytes ?? AuthorizeDefaults.maxInfoBytes, 2, 65_536);
    this.#log = o.log?.child({ component: "authorize" });
  }

  /**
   * Asks whether `q.identity` may have a channel.
   * @throws PsimbolsError `unavailable` when the hook gives no usable answer (fail closed).
   */
  async decide(q: AuthorizeQuestion): Promise<Decision> {
    const id = `auth_${b64u(randomBytes(16))}`;
    const body = JSON.stringify({
      kind: "authorize",
      type: "authorize",
      id,
      identity: { fingerprint: q.identity.fingerprint, public_key: wirePublicKey(q.identity) },
      role: q.role,
      move_to: q.moveTo ? { fingerprint: q.moveTo.fingerprint, public_key: wirePublicKey(q.moveTo) } : null,
      move_from: q.moveFrom ? { fingerprint: q.moveFrom.fingerprint, public_key: wirePublicKey(q.moveFrom) } : null,
      address: q.address,
      renewal: q.renewal,
      node: q.node,
      ttl: q.ttl,
    });
    try {
      const text = await this.#client.post({ id, body, timeoutMs: this.#timeoutMs, maxBytes: Math.max(AuthorizeDefaults.maxResponseBytes, this.#maxInfoBytes + 256) });
      const d = decodeDecision(text, q.ttl, this.#maxInfoBytes);
      this.#count(d.allow ? "allow" : "deny");
      return d;
    } catch (e) {
      if (!(e instanceof CallError)) throw e;
      this.#count(e.reason);
      this.#log?.warn("authorize hook failed", { reason: e.reason, error: e.message, identity: q.identity.fingerprint });
      throw new PsimbolsError(ErrorCode.unavailable, "the service cannot authorize now; try again shortly", { cause: e });
    }
  }

  /** Closes the hook's connections. */
  async close(): Promise<void> {
    await this.#client.close();
  }

  /** Outcome counts (what `/metrics` exports). */
  counts(): Partial<Record<AuthorizeOutcome, number>> {
    return Object.fromEntries(this.#outcomes);
  }

  /** Adds `psimbols_authorize_total{outcome}`. */
  registerMetrics(registry: Registry): void {
    const outcomes = this.#outcomes;
    new PromCounter({
      name: "psimbols_authorize_total",
      help: "Authorize hook calls by outcome",
      labelNames: ["outcome"],
      registers: [registry],
      collect() {
        this.reset();
        for (const [outcome, n] of outcomes) this.inc({ outcome }, n);
      },
    });
  }

  #count(o: AuthorizeOutcome): void {
    this.#outcomes.set(o, (this.#outcomes.get(o) ?? 0) + 1);
  }
}

/**
 * A 200 answer: `{"allow": false}`, or `{"allow": true, "ttl"?: N, "info"?: V}`
 * with `N` an integer in 2..`maxTtl` and `V` any JSON of at most `maxInfoBytes`.
 * @throws CallError(bad_body) for anything else.
 */
export function decodeDecision(text: string, maxTtl: number, maxInfoBytes: number): Decision {
  const o = parseAnswer(text);
  for (const k of Object.keys(o)) if (k !== "allow" && k !== "ttl" && k !== "info") throw new CallError(CallFailure.badBody, "unknown field in the answer");
  if (o.allow === false) return { allow: false };
  if (o.allow !== true) throw new CallError(CallFailure.badBody, '"allow" must be true or false');
  let ttl: number | undefined;
  if (o.ttl !== undefined) {
    if (typeof o.ttl !== "number" || !Number.isSafeInteger(o.ttl) || o.ttl < 2 || o.ttl > maxTtl) {
      throw new CallError(CallFailure.badBody, `"ttl" must be an integer in 2..${maxTtl}`);
    }
    ttl = o.ttl;
  }
  let info: string | undefined;
  if (o.info !== undefined && o.info !== null) {
    info = JSON.stringify(o.info);
    if (Buffer.byteLength(info) > maxInfoBytes) throw new CallError(CallFailure.tooLarge, `"info" is larger than ${maxInfoBytes} bytes`);
  }
  return { allow: true, ttl, info };
}

function bounded(name: string, v: number, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`setting ${name}: expected an integer in ${min}..${max}, got ${String(v)}`);
  return v;
}
