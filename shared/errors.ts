/**
 * Error codes and WebSocket close codes of psimbols protocol version 1.
 * docs/PROTOCOL.md §9 ("Errors") and §10 ("Close codes") list the same values;
 * change both together.
 */

/** Codes carried in `{error: {code, message}}` frames and in {@link PsimbolsError}. */
export const ErrorCode = {
  /** Malformed frame: bad JSON, wrong field type, bad base64url, bad key. */
  badRequest: "bad_request",
  /** Nothing offered is acceptable (channel type, KEM, key type, version). */
  unsupported: "unsupported",
  /** Unknown, expired, revoked, replaced or closed channel; failed decryption; replay. */
  unauthorised: "unauthorised",
  /** Closed service: the proven key is not registered, or lacks the role. */
  forbidden: "forbidden",
  /** A rate or size limit was hit. */
  tooMany: "too_many",
  /** The store is unreachable; try again later. */
  unavailable: "unavailable",
  /** Inner error: no handler for the requested `op`. */
  notFound: "not_found",
  /** Inner error: a handler threw. The message never carries the handler's own text. */
  internal: "internal",
  /** Client side: no response within the request timeout. */
  timeout: "timeout",
  /** Client side: the socket closed while the request was in flight. */
  connectionLost: "connection_lost",
  /** Client side: the server's key is not the pinned or known one. */
  serverKeyMismatch: "server_key_mismatch",
  /** Client side: the server broke the protocol (bad signature, bad grant). */
  protocol: "protocol",
  /** Client side: the connection was closed by the application. */
  closed: "closed",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const errorCodes: ReadonlySet<string> = new Set(Object.values(ErrorCode));
/** True when `x` is one of the documented error codes. */
export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === "string" && errorCodes.has(x);
}

/**
 * WebSocket close codes (RFC 6455 §7.4; 4000–4999 are private use).
 * `reconnect` tells a client whether reconnecting (then `resume`) is sensible.
 */
export const CloseCode = {
  normal: { code: 1000, reconnect: false, reason: "normal" },
  goingAway: { code: 1001, reconnect: true, reason: "going away" },
  unsupportedData: { code: 1003, reconnect: false, reason: "binary frames are not accepted" },
  tooBig: { code: 1009, reconnect: false, reason: "frame too large" },
  badRequest: { code: 4000, reconnect: false, reason: "protocol violation" },
  handshakeTimeout: { code: 4001, reconnect: true, reason: "handshake timeout" },
  tooMany: { code: 4002, reconnect: true, reason: "rate limited" },
  slowConsumer: { code: 4003, reconnect: true, reason: "send buffer full" },
  replaced: { code: 4004, reconnect: false, reason: "channel replaced" },
  revoked: { code: 4005, reconnect: false, reason: "channel revoked" },
  closing: { code: 4006, reconnect: true, reason: "node shutting down" },
  idle: { code: 4007, reconnect: true, reason: "no pong" },
  forbidden: { code: 4008, reconnect: false, reason: "forbidden" },
  storeLost: { code: 4009, reconnect: true, reason: "store unreachable" },
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Close codes after which a client must not reconnect on its own. */
export function isTerminalClose(code: number): boolean {
  for (const c of Object.values(CloseCode)) if (c.code === code) return !c.reconnect;
  return false; // unknown codes (1006 abnormal, 1011, ...) are treated as transient
}

/**
 * The one error type of psimbols. `message` is written for humans and never
 * contains key material, ciphertext, or attacker-supplied text.
 */
export class PsimbolsError extends Error {
  readonly code: ErrorCode;
  readonly close: CloseCode | undefined;
  /** With `too_many` from a node's admission by capacity (PROTOCOL.md §11.4): wait at least this long (ms) before trying again. */
  readonly retryAfterMs: number | undefined;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; close?: CloseCode; retryAfterMs?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PsimbolsError";
    this.code = code;
    this.close = options?.close;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/**
 * A failure caused by what a server sent, as a client reports it (PROTOCOL.md §4, §9):
 * the decoders' `bad_request` and a check's `unauthorised` become `protocol`, and so
 * does anything that is not a PsimbolsError; a specific code (`server_key_mismatch`,
 * `unavailable`, ...) stays. `what` says what failed; the cause's message is appended.
 */
export function asProtocol(e: unknown, what: string): PsimbolsError {
  if (e instanceof PsimbolsError && e.code !== ErrorCode.badRequest && e.code !== ErrorCode.unauthorised) return e;
  const detail = e instanceof PsimbolsError ? `: ${e.message}` : "";
  return new PsimbolsError(ErrorCode.protocol, `${what}${detail}`, { cause: e });
}

/** Shorthand for a `bad_request` error about one field, in the noble style. */
export function badField(field: string, expected: string, got?: unknown): PsimbolsError {
  const what = got === undefined ? "" : `, got ${describe(got)}`;
  return new PsimbolsError(ErrorCode.badRequest, `"${field}" expected ${expected}${what}`);
}

/** Names the type of an untrusted value without echoing its content. */
export function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "array";
  return typeof x;
}
