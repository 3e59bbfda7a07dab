/**
 * HPKE (RFC 9180) base mode for the handshake grant, through `@hpke/core`,
 * which runs on the runtime's WebCrypto. PROTOCOL.md §5.3.
 * Suites: DHKEM(X25519, HKDF-SHA256) or DHKEM(P-256, HKDF-SHA256), with
 * HKDF-SHA256 and AES-256-GCM.
 */
import { Aes256Gcm, CipherSuite, DhkemP256HkdfSha256, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { KemType } from "./frames.js";
import { ErrorCode, PsimbolsError } from "./errors.js";

export type { CipherSuite };

const suites = new Map<KemType, CipherSuite>();

/** The HPKE suite for an ephemeral key type. */
export function hpkeSuite(kem: KemType): CipherSuite {
  let s = suites.get(kem);
  if (!s) {
    const k = kem === KemType.x25519 ? new DhkemX25519HkdfSha256() : new DhkemP256HkdfSha256();
    s = new CipherSuite({ kem: k, kdf: new HkdfSha256(), aead: new Aes256Gcm() });
    suites.set(kem, s);
  }
  return s;
}

/** Public key length of each KEM (RFC 9180 §7.1 Npk). */
export const KEM_PUBLIC_BYTES: Record<KemType, number> = { X25519: 32, "P-256": 65 };

/** Imports a client's ephemeral public key, mapping library errors to `bad_request`. */
export async function importKemPublic(kem: KemType, raw: Uint8Array): Promise<CryptoKey> {
  if (raw.length !== KEM_PUBLIC_BYTES[kem]) {
    throw new PsimbolsError(ErrorCode.badRequest, `"kem.data" expected ${KEM_PUBLIC_BYTES[kem]} bytes for ${kem}`);
  }
  try {
    return await hpkeSuite(kem).kem.deserializePublicKey(raw as Uint8Array<ArrayBuffer>);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `"kem.data" is not a valid ${kem} public key`, { cause });
  }
}
