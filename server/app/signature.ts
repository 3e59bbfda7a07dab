/**
 * Signatures on every call the broker makes to the application (upstream
 * requests, the authorize hook, event webhooks), as Standard Webhooks 1.0
 * specifies, so backends verify them with that specification's libraries or
 * a few lines of their own language's standard library:
 *
 *   webhook-id:        a unique message id (the same on every retry of one message)
 *   webhook-timestamp: seconds since the Unix epoch
 *   webhook-signature: "v1," + base64(HMAC-SHA256(secret, id + "." + timestamp + "." + body)),
 *                      several space-separated when several secrets are in use (rotation)
 *
 * Secrets are `whsec_` + base64 of 24 to 64 random bytes. docs/BACKEND.md
 * is the contract; test/server/app/signature.test.ts checks the
 * specification's own example.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** Header names (Standard Webhooks 1.0, "Signature scheme"). */
export const WebhookHeader = { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" } as const;

/** The prefix of a signing secret's text form. */
export const SECRET_PREFIX = "whsec_";
const MIN_SECRET_BYTES = 24;
const MAX_SECRET_BYTES = 64;
/** Default tolerance of {@link verifyWebhook} for the timestamp, seconds (the specification's recommendation: 5 minutes). */
export const DEFAULT_TOLERANCE_S = 300;

/** A signing secret: its raw bytes, never printed. */
export class WebhookSecret {
  readonly #key: Buffer;

  private constructor(key: Buffer) {
    this.#key = key;
  }

  /**
   * Parses `whsec_` + base64.
   *
   * @param text - the secret's text form.
   * @param setting - names the setting in errors (never the value).
   * @throws TypeError naming `setting` when the text is not such a secret.
   */
  static parse(text: unknown, setting = "secret"): WebhookSecret {
    if (typeof text !== "string" || !text.startsWith(SECRET_PREFIX)) throw new TypeError(`${setting}: expected "${SECRET_PREFIX}" followed by base64`);
    const b64 = text.slice(SECRET_PREFIX.length);
    const key = Buffer.from(b64, "base64");
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || key.length < MIN_SECRET_BYTES || key.length > MAX_SECRET_BYTES) {
      throw new TypeError(`${setting}: expected "${SECRET_PREFIX}" followed by the base64 of ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES} bytes`);
    }
    return new WebhookSecret(key);
  }

  /** A new random secret (32 bytes) in text form, for `psimbols` to print once. */
  static generate(): string {
    return SECRET_PREFIX + randomBytes(32).toString("base64");
  }

  /** base64(HMAC-SHA256(key, id.timestamp.body)). */
  mac(id: string, timestamp: number, body: string | Uint8Array): Buffer {
    const h = createHmac("sha256", this.#key);
    h.update(`${id}.${timestamp}.`);
    h.update(body);
    return h.digest();
  }

  /** Never prints the key. */
  toJSON(): string {
    return "[webhook secret]";
  }
}

/**
 * The three headers for one message, signed with every secret given (during
 * a rotation, the new and the old one: the specification lets a receiver
 * accept any listed signature).
 *
 * @param secrets - at least one.
 * @param id - unique per message, stable across retries of it.
 * @param timestamp - seconds since the epoch. Default now.
 */
export function signWebhook(secrets: readonly WebhookSecret[], id: string, body: string | Uint8Array, timestamp = Math.floor(Date.now() / 1000)): Record<string, string> {
  if (secrets.length === 0) throw new RangeError('"secrets" expected at least one secret');
  if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(id)) throw new RangeError('"id" expected 1..128 characters of [A-Za-z0-9_.:-]');
  return {
    [WebhookHeader.id]: id,
    [WebhookHeader.timestamp]: String(timestamp),
    [WebhookHeader.signature]: secrets.map((s) => `v1,${s.mac(id, timestamp, body).toString("base64")}`).join(" "),
  };
}

/**
 * Verifies a signed message as a receiver does: the timestamp within
 * `toleranceS` of `now`, and any `v1,` signature matching any secret
 * (compared in constant time).
 *
 * @returns true when valid.
 */
export function verifyWebhook(
  secrets: readonly WebhookSecret[],
  headers: Record<string, string | undefined>,
  body: string | Uint8Array,
  options: { toleranceS?: number; now?: number } = {},
): boolean {
  const id = headers[WebhookHeader.id];
  const ts = headers[WebhookHeader.timestamp];
  const sig = headers[WebhookHeader.signature];
  if (id === undefined || ts === undefined || sig === undefined || !/^\d{1,12}$/.test(ts)) return false;
  const timestamp = Number(ts);
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (options.toleranceS ?? DEFAULT_TOLERANCE_S)) return false;
  const given = sig
    .split(" ")
    .filter((s) => s.startsWith("v1,"))
    .map((s) => Buffer.from(s.slice(3), "base64"));
  let ok = false;
  for (const secret of secrets) {
    const want = secret.mac(id, timestamp, body);
    for (const g of given) if (g.length === want.length && timingSafeEqual(g, want)) ok = true;
  }
  return ok;
}

/**
 * Parses the signing secrets of one setting: one `whsec_` secret, or two
 * separated by white space during a rotation (every call is then signed with
 * both). An empty or absent text gives no secret; the caller decides whether
 * that is allowed.
 *
 * @throws TypeError naming `setting`, never echoing the value.
 */
export function parseSecrets(text: string | undefined, setting: string): WebhookSecret[] {
  const parts = (text ?? "").trim().split(/\s+/).filter((x) => x !== "");
  if (parts.length > 2) throw new TypeError(`${setting}: expected one secret, or two separated by white space during a rotation`);
  return parts.map((p) => WebhookSecret.parse(p, setting));
}
