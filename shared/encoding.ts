/**
 * Byte encodings of the protocol (docs/PROTOCOL.md §2): base64url without
 * padding for binary fields, UTF-8 text, and the length-prefixed encoding
 * `LP(x) = uint32_be(len(x)) || x` used by every transcript.
 */
import { badField } from "./errors.js";

const utf8Enc = new TextEncoder();
const utf8Dec = new TextDecoder("utf-8", { fatal: true });

export function utf8(s: string): Uint8Array {
  return utf8Enc.encode(s);
}
export function fromUtf8(b: Uint8Array): string {
  return utf8Dec.decode(b);
}

const B64URL = /^[A-Za-z0-9_-]*$/;

const B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** base64url without padding (RFC 4648 §5). A table, not btoa and three regexes: it runs per frame (channel ids). */
export function b64u(bytes: Uint8Array): string {
  const A = B64URL_ALPHABET;
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += A[n >> 18]! + A[(n >> 12) & 63]! + A[(n >> 6) & 63]! + A[n & 63]!;
  }
  if (bytes.length - i === 1) {
    const n = bytes[i]! << 16;
    out += A[n >> 18]! + A[(n >> 12) & 63]!;
  } else if (bytes.length - i === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += A[n >> 18]! + A[(n >> 12) & 63]! + A[(n >> 6) & 63]!;
  }
  return out;
}

/**
 * Strict base64url decoder: rejects padding, other alphabets, whitespace and
 * non-canonical trailing bits, so one value has exactly one encoding.
 * @throws PsimbolsError `bad_request` naming `field`.
 */
export function fromB64u(s: unknown, field: string, maxBytes = 1 << 20): Uint8Array {
  if (typeof s !== "string") throw badField(field, "base64url string", s);
  if (s.length % 4 === 1 || !B64URL.test(s)) throw badField(field, "base64url without padding");
  if (Math.floor((s.length * 3) / 4) > maxBytes) throw badField(field, `at most ${maxBytes} bytes`);
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (b64u(out) !== s) throw badField(field, "canonical base64url");
  return out;
}

/** Standard base64 without padding, used only for fingerprints (as OpenSSH does). */
export function b64(bytes: Uint8Array): string {
  return b64u(bytes).replace(/-/g, "+").replace(/_/g, "/");
}

/** Concatenates byte strings. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** `LP(x1) || LP(x2) || ...`; strings are taken as UTF-8. PROTOCOL.md §2.3. */
export function lp(...parts: (Uint8Array | string)[]): Uint8Array {
  const bytes = parts.map((p) => (typeof p === "string" ? utf8(p) : p));
  let n = 0;
  for (const b of bytes) n += 4 + b.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const b of bytes) {
    const len = b.length;
    out[o] = len >>> 24;
    out[o + 1] = (len >>> 16) & 0xff;
    out[o + 2] = (len >>> 8) & 0xff;
    out[o + 3] = len & 0xff;
    out.set(b, o + 4);
    o += 4 + len;
  }
  return out;
}

/** Constant-time equality for secrets and MACs: time depends on length only. */
export function ctEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** Overwrites a secret buffer with zeros once it is no longer needed. */
export function wipe(...bufs: (Uint8Array | undefined)[]): void {
  for (const b of bufs) b?.fill(0);
}
