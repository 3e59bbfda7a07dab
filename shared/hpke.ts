/**
 * HPKE (RFC 9180) base mode for the handshake grant. PROTOCOL.md §5.3.
 * Suites: DHKEM(X25519, HKDF-SHA256), DHKEM(P-256, HKDF-SHA256) or X-Wing
 * (ML-KEM-768 + X25519, HPKE KEM id 0x647a, draft-connolly-cfrg-xwing-kem),
 * with HKDF-SHA256 and AES-256-GCM.
 *
 * The handshake reaches HPKE through {@link HpkeEngine}, the HPKE part of the
 * installed handshake-crypto engine (shared/crypto.ts `useHandshakeCrypto`).
 * {@link webCryptoHpke}, the default, is `@hpke/core` on the runtime's WebCrypto.
 *
 * X-Wing's code (`@hpke/hybridkem-x-wing`, with ML-KEM-768 and a JavaScript
 * X25519) is imported on first use only (PROTOCOL.md §5.3.1): a client that never asks
 * for X-Wing never loads it, and the browser bundle imports it from
 * `xwing.js`, a bundle of its own (bin/build-browser.mjs).
 */
import { Aes256Gcm, CipherSuite, DhkemP256HkdfSha256, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { KemType } from "./frames.js";
import { ErrorCode, PsimbolsError } from "./errors.js";

export type { CipherSuite };

const suites = new Map<KemType, CipherSuite>();

/**
 * The `@hpke/core` suite for an ephemeral key type (the default engine's; the
 * suite ids of the vectors). X-Wing's exists once {@link loadHpkeSuite} has
 * loaded it.
 * @throws RangeError for X-Wing before it is loaded.
 */
export function hpkeSuite(kem: KemType): CipherSuite {
  let s = suites.get(kem);
  if (!s) {
    if (kem === KemType.xwing) throw new RangeError("the X-Wing suite is loaded on first use: call loadHpkeSuite first");
    const k = kem === KemType.x25519 ? new DhkemX25519HkdfSha256() : new DhkemP256HkdfSha256();
    s = new CipherSuite({ kem: k, kdf: new HkdfSha256(), aead: new Aes256Gcm() });
    suites.set(kem, s);
  }
  return s;
}

let xwingLoad: Promise<CipherSuite> | undefined;

/** The `@hpke/core` suite for `kem`, importing X-Wing's code on first use. */
export function loadHpkeSuite(kem: KemType): Promise<CipherSuite> | CipherSuite {
  if (kem !== KemType.xwing || suites.has(kem)) return hpkeSuite(kem);
  xwingLoad ??= import("@hpke/hybridkem-x-wing").then(
    ({ XWing }) => {
      const s = new CipherSuite({ kem: new XWing(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
      suites.set(KemType.xwing, s);
      return s;
    },
    (cause: unknown) => {
      xwingLoad = undefined; // a failed chunk load (network) may be retried
      throw new PsimbolsError(ErrorCode.unsupported, "the X-Wing KEM could not be loaded in this runtime (on Node it needs the optional dependency @hpke/hybridkem-x-wing)", { cause });
    },
  );
  return xwingLoad;
}

/** The X-Wing ML-KEM-768 ciphertext and X25519 share (draft-connolly-cfrg-xwing-kem §5: ct_M 1088 + ct_X 32). */
export const XWING_ENC_BYTES = 1120;

/** Public key length of each KEM (RFC 9180 §7.1 Npk). */
export const KEM_PUBLIC_BYTES: Record<KemType, number> = { X25519: 32, "P-256": 65, "X-Wing": 1216 };

// ------------------------------------------------------------------ engine

/** A recipient's KEM public key as one engine imported it. */
export interface KemPublicKey {
  readonly kem: KemType;
  /** SerializePublicKey(pk): the `kem.data` bytes. */
  readonly raw: Uint8Array;
}

/** An ephemeral KEM key pair (the client's); the private half stays inside the engine that made it. */
export interface KemKeyPair {
  readonly kem: KemType;
  /** SerializePublicKey(pk): what the hello's `kem.data` carries. */
  readonly publicKey: Uint8Array;
  /**
   * SetupBaseR(enc, skR, info), then Open(aad, ciphertext) as the context's
   * first message (sequence 0). Throws (anything) when it does not open.
   */
  open(enc: Uint8Array, info: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> | Uint8Array;
}

/** SetupBaseS's result: `enc` and the context's one seal (sequence 0; the grant is a single message). */
export interface HpkeSender {
  readonly enc: Uint8Array;
  /** Seals one message; a second call throws `internal`. */
  seal(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> | Uint8Array;
}

/**
 * The HPKE operations of the handshake, base mode, KDF HKDF-SHA256, AEAD
 * AES-256-GCM. Every engine gives the same bytes for the same inputs (RFC 9180
 * is deterministic given the ephemeral key): `enc` and ciphertext are equal
 * for equal `ekm`, and each opens what the other sealed.
 */
export interface HpkeEngine {
  /** A fresh ephemeral key pair of `kem`. */
  generateKeyPair(kem: KemType): Promise<KemKeyPair> | KemKeyPair;
  /** RFC 9180 §7.1.3 DeriveKeyPair (test vectors only). */
  deriveKeyPair(kem: KemType, ikm: Uint8Array): Promise<KemKeyPair> | KemKeyPair;
  /**
   * DeserializePublicKey. The caller has checked the length
   * ({@link KEM_PUBLIC_BYTES}) and maps any throw to `bad_request`.
   */
  importPublicKey(kem: KemType, raw: Uint8Array): Promise<KemPublicKey> | KemPublicKey;
  /**
   * SetupBaseS(pkR, info), with the ephemeral key derived from `ekm` when
   * given (test vectors only), else fresh. Must throw on a DH output of all
   * zeros (RFC 9180 §7.1.4); the caller maps any throw to `bad_request`. A
   * `recipient` from another engine is re-imported from its `raw` bytes.
   */
  createSender(recipient: KemPublicKey, info: Uint8Array, ekm?: Uint8Array): Promise<HpkeSender> | HpkeSender;
}

/** Single-use wrapper: the grant is the context's only message. */
export function sealOnce(seal: (plaintext: Uint8Array, aad: Uint8Array) => Promise<Uint8Array> | Uint8Array): HpkeSender["seal"] {
  let used = false;
  return (plaintext, aad) => {
    if (used) throw new PsimbolsError(ErrorCode.internal, "this HPKE sender context has sealed its one message");
    used = true;
    return seal(plaintext, aad);
  };
}

type AB = Uint8Array<ArrayBuffer>;
const webPublicKeys = new WeakMap<KemPublicKey, CryptoKey>();

function webKeyPair(kem: KemType, pair: CryptoKeyPair, publicKey: Uint8Array): KemKeyPair {
  return {
    kem,
    publicKey,
    async open(enc, info, aad, ciphertext) {
      const ctx = await (await loadHpkeSuite(kem)).createRecipientContext({ recipientKey: pair, enc: enc as AB, info: info as AB });
      return new Uint8Array(await ctx.open(ciphertext as AB, aad as AB));
    },
  };
}

async function webImportPublicKey(kem: KemType, raw: Uint8Array): Promise<KemPublicKey> {
  const key = await (await loadHpkeSuite(kem)).kem.deserializePublicKey(raw as AB);
  const pub: KemPublicKey = { kem, raw };
  webPublicKeys.set(pub, key);
  return pub;
}

/** The default HPKE engine: `@hpke/core` on the runtime's WebCrypto. */
export const webCryptoHpke: HpkeEngine = {
  async generateKeyPair(kem) {
    const suite = await loadHpkeSuite(kem);
    const pair = await suite.kem.generateKeyPair();
    return webKeyPair(kem, pair, new Uint8Array(await suite.kem.serializePublicKey(pair.publicKey)));
  },
  async deriveKeyPair(kem, ikm) {
    const suite = await loadHpkeSuite(kem);
    const pair = await suite.kem.deriveKeyPair(ikm as AB);
    return webKeyPair(kem, pair, new Uint8Array(await suite.kem.serializePublicKey(pair.publicKey)));
  },
  importPublicKey: webImportPublicKey,
  async createSender(recipient, info, ekm) {
    // A key another engine imported: import it here (the same checks) from its bytes.
    const suite = await loadHpkeSuite(recipient.kem);
    const key = webPublicKeys.get(recipient) ?? (await suite.kem.deserializePublicKey(recipient.raw as AB));
    const ctx = await suite.createSenderContext({
      recipientPublicKey: key,
      info: info as AB,
      ...(ekm ? { ekm: ekm as AB } : {}),
    });
    return { enc: new Uint8Array(ctx.enc), seal: sealOnce(async (pt, aad) => new Uint8Array(await ctx.seal(pt as AB, aad as AB))) };
  },
};
