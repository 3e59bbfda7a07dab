/**
 * Server key rotation: the statement by which the current server key names
 * its successor (docs/PROTOCOL.md §5.6), as SSH's `hostkeys-00@openssh.com`
 * does for host keys. A node in a rollover carries the statement in every
 * challenge of a client that offers the `server-key-next` feature; the
 * statement's fields also enter the transcript that the challenge signature
 * covers, so it is bound to this handshake as well as signed on its own.
 *
 * Statement (PROTOCOL.md §5.6), signed by the current server key:
 *   LP(LABEL_NEXT_KEY) || LP(source) || LP(current SPKI) || LP(next SPKI) || LP(not_before)
 */
import { ErrorCode, PsimbolsError } from "./errors.js";
import { b64u, fromB64u, lp } from "./encoding.js";
import { type PublicKey, type SigningKey, importPublicKey, sign, verify, wirePublicKey } from "./crypto.js";
import { type NextKeyWire, RFC3339_UTC } from "./frames.js";

/** Domain-separation label of the rotation statement. PROTOCOL.md §5.6. */
export const LABEL_NEXT_KEY = "psimbols/1 next server key";

/** A verified rotation statement. */
export interface NextKey {
  /** The successor key. */
  readonly key: PublicKey;
  /** Its fingerprint (`SHA256:...`). */
  readonly fingerprint: string;
  /** The earliest time the service will present it as its key (RFC 3339 UTC). */
  readonly notBefore: string;
}

/** The exact bytes the current key signs. */
export function nextKeyStatement(source: string, current: PublicKey, next: PublicKey, notBefore: string): Uint8Array {
  return lp(LABEL_NEXT_KEY, source, current.spki, next.spki, notBefore);
}

/**
 * Signs a rotation statement with the current server key.
 * @param notBefore - RFC 3339 UTC (`...Z`); a Date is written with milliseconds dropped.
 * @throws RangeError when `next` is the current key or `notBefore` is malformed.
 */
export async function signNextKey(current: SigningKey, next: PublicKey, source: string, notBefore: string | Date): Promise<NextKeyWire> {
  const nb = typeof notBefore === "string" ? notBefore : notBefore.toISOString().replace(/\.\d{3}Z$/, "Z");
  if (!RFC3339_UTC.test(nb) || Number.isNaN(Date.parse(nb))) throw new RangeError(`"notBefore" expected an RFC 3339 UTC time`);
  if (current.public.fingerprint === next.fingerprint) throw new RangeError(`"next" expected a key other than the current one`);
  const signature = await sign(current, nextKeyStatement(source, current.public, next, nb));
  return { key: wirePublicKey(next), not_before: nb, signature: b64u(signature) };
}

/**
 * Verifies a rotation statement under the key that presents it, for `source`.
 * @throws PsimbolsError `protocol` when the key is unusable, names the current
 *   key itself, or the signature does not verify (forged, or for another source).
 */
export async function verifyNextKey(current: PublicKey, source: string, w: NextKeyWire): Promise<NextKey> {
  let key: PublicKey;
  try {
    key = await importPublicKey(w.key, "next_key.key");
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.protocol, "the next server key in the challenge is not a usable key", { cause });
  }
  if (key.fingerprint === current.fingerprint) throw new PsimbolsError(ErrorCode.protocol, "the next server key is the current one");
  const sig = fromB64u(w.signature, "next_key.signature");
  if (!(await verify(current, sig, nextKeyStatement(source, current, key, w.not_before)))) {
    throw new PsimbolsError(ErrorCode.protocol, "the next-server-key statement does not verify under the server key for this source");
  }
  return { key, fingerprint: key.fingerprint, notBefore: w.not_before };
}

/** The statement's fields as they enter the handshake transcript (PROTOCOL.md §5.2, §5.6). */
export function nextKeyTranscript(w: NextKeyWire): Uint8Array {
  return lp(fromB64u(w.key.data, "next_key.key.data"), w.not_before, fromB64u(w.signature, "next_key.signature"));
}
