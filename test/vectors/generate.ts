/**
 * Generates `test/vectors/v1.json`, the test vectors of psimbols protocol
 * version 1 (docs/PROTOCOL.md §14), from the fixed inputs below through the
 * public functions of `shared/`.
 *
 *   node dist/test/vectors/generate.js           writes test/vectors/v1.json
 *   node dist/test/vectors/generate.js --check   regenerates in memory and compares with the
 *                                                committed file; exits 1 on any difference
 *   node dist/test/vectors/generate.js --resign  prints fresh ECDSA/RSA signatures for
 *                                                RANDOMIZED_SIGNATURES (only needed when an
 *                                                input they cover changes)
 *
 * Ed25519 signatures (RFC 8032) are deterministic and the HPKE ephemeral keys
 * come from fixed IKM (RFC 9180 §7.1.3 DeriveKeyPair), so every Ed25519
 * transcript is reproducible byte for byte. ECDSA and RSA-PSS signatures are
 * randomized: their signatures were made once and are pasted below, and the
 * vectors that use them are verify-only on that signature.
 *
 * The types of the vector file are exported here; test/vectors/conformance.test.ts
 * imports them as types only and recomputes every value on its own.
 * ALL PRIVATE KEYS IN THIS FILE ARE PUBLIC TEST KEYS. Never use them for anything else.
 */
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { b64u, concat, fromB64u, fromUtf8, lp, utf8 } from "../../shared/encoding.js";
import { KeyType, fingerprint, importPkcs8, sha256, sign, type SigningKey } from "../../shared/crypto.js";
import {
  LABEL_CLIENT_SIG,
  LABEL_GRANT_AAD,
  LABEL_INFO,
  LABEL_SERVER_SIG,
  acceptHello,
  answerChallenge,
  createHello,
  openGrant,
  sealGrant,
  verifyProof,
} from "../../shared/handshake.js";
import { FrameKind, LABEL_C2S, LABEL_S2C, deriveTrafficKeys, frameNonce, sealFrame, trafficKey } from "../../shared/channel.js";
import { nodeTrafficKey } from "../../node/aead.js";
import {
  ChannelType,
  applicationPushText,
  decodeClientFrame,
  decodeServerFrame,
  encodeBinaryHeader,
  MAX_SEQ,
  MAX_SEQ_BY_TYPE,
  MAX_WIRE_SEQ,
  type Challenge,
  type Grant,
  type Hello,
  type KemType,
} from "../../shared/frames.js";
import { hpkeSuite, loadHpkeSuite } from "../../shared/hpke.js";

// ===================================================================== types

/** Lower-case hexadecimal bytes. */
export type Hex = string;
/** base64url without padding, as on the wire (PROTOCOL.md §2.2). */
export type B64u = string;

/** The whole vector file. */
export interface VectorFile {
  protocol: "psimbols";
  version: 1;
  note: string;
  /** The spec labels, exactly as fed to LP (PROTOCOL.md §5.2, §6.1). */
  labels: { hpke_info: string; server_signature: string; client_signature: string; grant_aad: string; c2s: string; s2c: string };
  /** RFC 9180 algorithm ids of the HPKE suite per `kem.type` (PROTOCOL.md §5.3). */
  hpke_suites: Record<KemType, { kem_id: number; kdf_id: number; aead_id: number }>;
  /** MAX_SEQ for AES-256-GCM; the frame cap per binding and direction of each channel type (PROTOCOL.md §6.4). */
  max_seq: number;
  max_seq_by_type: Record<ChannelType, number>;
  keys: Record<string, KeyVector>;
  base64url: { valid: { hex: Hex; text: string }[]; invalid: { text: string; why: string }[] };
  lp: LpVector[];
  signatures: SignatureVector[];
  transcripts: TranscriptVector[];
  accepted_frames: AcceptedFrameVector[];
  negative: NegativeVectors;
}

/** A key: its PKCS#8 (test keys only), SPKI DER and fingerprint (PROTOCOL.md §3). */
export interface KeyVector {
  type: KeyType;
  /** PKCS#8 DER, base64url. Absent for keys given by their public half only. */
  pkcs8?: B64u;
  /** SubjectPublicKeyInfo DER, base64url: the wire `data`. */
  spki: B64u;
  fingerprint: string;
}

/** `LP(parts[0]) || LP(parts[1]) || ...` (PROTOCOL.md §2.3). */
export interface LpVector {
  parts: ({ utf8: string } | { hex: Hex })[];
  hex: Hex;
}

/** A verify-only signature vector over `message` (PROTOCOL.md §3.1). */
export interface SignatureVector {
  description: string;
  /** Name in {@link VectorFile.keys}. */
  key: string;
  message: Hex;
  signature: Hex;
  valid: boolean;
}

/** One complete handshake and the channel traffic after it (PROTOCOL.md §5, §6). */
export interface TranscriptVector {
  name: string;
  /**
   * True when every value is reproducible from `inputs` (Ed25519 identity).
   * False for ECDSA/RSA identities: the client signature is randomized, so the
   * stored proof is checked by verification, and everything after it is
   * reproducible given that stored signature.
   */
  deterministic: boolean;
  inputs: TranscriptInputs;
  /** The exact frames, as the UTF-8 text of each WebSocket message. */
  frames: { hello: string; challenge: string; proof: string; established: string };
  intermediate: {
    /** Serialised ephemeral KEM public key (RFC 9180 SerializePublicKey). */
    kem_public: Hex;
    enc: Hex;
    t_info: Hex;
    /** HPKE info = SHA-256(LP(LABEL_INFO) || T_info). */
    info: Hex;
    t_chal: Hex;
    server_sign_input: Hex;
    server_signature: Hex;
    client_sign_input: Hex;
    client_signature: Hex;
    grant_aad: Hex;
    /** The plaintext sealed into `established.response`. */
    grant_plaintext: string;
    channel_key: Hex;
  };
  bindings: BindingVector[];
}

export interface TranscriptInputs {
  /** Names in {@link VectorFile.keys}. */
  identity: string;
  server_key: string;
  source: string;
  /** Features the server is configured with for this vector. */
  server_features: string[];
  channel_types: string[];
  kem: KemType;
  hello_features: string[];
  nonce_c: Hex;
  /** IKM for DeriveKeyPair of the client's ephemeral KEM key. */
  kem_ikm: Hex;
  nonce_s: Hex;
  /** IKM for DeriveKeyPair of the server's HPKE encapsulation key (ikmE); for X-Wing, the 64-byte eseed of EncapsulateDerand. */
  ekm: Hex;
  grant: Grant;
}

/** One binding of the channel to a connection and frames under its keys (PROTOCOL.md §6). */
export interface BindingVector {
  name: string;
  /** "handshake": nonce_c/nonce_s are the hello and challenge nonces; "resume": the resume/resumed nonces. */
  via: "handshake" | "resume";
  /** The channel's type (the grant's `key.type`): the AEAD of every frame below (§6.3). */
  channel_type: ChannelType;
  channel: string;
  nonce_c: Hex;
  nonce_s: Hex;
  /** Present for `via: "resume"`: the exact frames. */
  resume?: string;
  resumed?: string;
  salt: Hex;
  c2s_info: Hex;
  s2c_info: Hex;
  c2s: Hex;
  s2c: Hex;
  frames: ChannelFrameVector[];
}

export interface ChannelFrameVector {
  kind: "request" | "response" | "push";
  seq: number;
  /** The 12-byte AEAD nonce. */
  nonce: Hex;
  /** Inner payload, UTF-8 JSON. */
  plaintext: string;
  /** AEAD (the binding's channel type) ciphertext || tag. */
  ciphertext: Hex;
  /** The exact outer frame. */
  frame: string;
  /** The same frame as a binary message (the `binary` feature, PROTOCOL.md §4.11): kind || channel id || uint32_be(seq) || ciphertext. */
  binary: Hex;
}

/**
 * `side` names the sender of a frame. A `client` frame is received by a server: a refusal is
 * `bad_request`, sent back in an `error` frame before close 4000. A `server` frame is received by a
 * client: a refusal is `protocol`, reported to the application, and the client closes with 4000
 * (PROTOCOL.md §4, §9).
 */
export type Side = "client" | "server";
/** The code a receiver reports when it refuses a frame of `side` (see {@link Side}). */
export type RefusalCode = "bad_request" | "protocol";

/** A frame a receiver must accept, and what it means (PROTOCOL.md §2.1, §4). */
export interface AcceptedFrameVector {
  description: string;
  side: Side;
  text: string;
  /** The frame as the receiver must understand it: its known members, with defaults filled in. */
  decoded: Record<string, unknown>;
}

export interface NegativeVectors {
  /** Frames a receiver must refuse: `bad_request` from a server, `protocol` from a client. */
  frames: { description: string; side: Side; text: string; error: RefusalCode; known_issue?: string }[];
  /** Binary channel frames (§4.11) a receiver must refuse, with the same codes as `frames`. */
  binary_frames: { description: string; side: Side; hex: Hex; error: RefusalCode }[];
  /** Hellos that decode but that the server must refuse, with the code of its error frame. */
  hellos: { description: string; text: string; error: "unsupported" | "bad_request"; known_issue?: string }[];
  /** Wire public keys that must not import. */
  public_keys: { description: string; key: { type: string; data: string }; error: "unsupported" | "bad_request"; known_issue?: string }[];
  /** Channel frames that must not open (`unauthorised`). */
  /** `channel_type` absent: AES-256-GCM. */
  channel: { description: string; channel_type?: ChannelType; key: Hex; kind: "request" | "response" | "push"; seq: number; channel: string; ciphertext: B64u; error: "unauthorised" }[];
  /**
   * Challenges the client of `transcript` must refuse. `error` is the code of a client with no
   * key pinned or known for the service (it would learn the key on first use); `error_pinned` of a
   * client that pinned the transcript's `inputs.server_key` (PROTOCOL.md §5.2: the pin is checked
   * first, so a challenge carrying another server key fails with `server_key_mismatch`).
   */
  challenges: { description: string; transcript: string; challenge: string; error: "protocol"; error_pinned: "protocol" | "server_key_mismatch" }[];
  /**
   * Proofs that must not verify: `signature` against the server state of `hello` in `transcript`.
   * The server answers `unauthorised` and closes with 4000 (PROTOCOL.md §5.2).
   */
  proofs: { description: string; transcript: string; hello: string; signature: Hex; error: "unauthorised" }[];
  /**
   * `established` frames the client of `transcript` must refuse (`protocol`): tampered or foreign
   * ones, and grants sealed correctly whose content breaks PROTOCOL.md §5.4.
   */
  established: { description: string; transcript: string; established: string; error: "protocol" }[];
}

// ============================================================== fixed inputs

/** Public test keys. Generated once with WebCrypto; PKCS#8 DER, base64url. */
const KEY_INPUTS: Record<string, { type: KeyType; pkcs8?: string[]; spki?: string[] }> = {
  "identity-ed25519": { type: KeyType.ed25519, pkcs8: ["MC4CAQAwBQYDK2VwBCIEILDkY7_wmyNykTvvRGk9gxnPiMUilnZYUNfM3FJMlr88"] },
  "server-ed25519": { type: KeyType.ed25519, pkcs8: ["MC4CAQAwBQYDK2VwBCIEIIXW27i6bcwF0G638zuhtJCuKPoJAbp1qKtcqDowmPgK"] },
  "identity-p256": {
    type: KeyType.p256,
    pkcs8: [
      "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGFmSsstGXK6RilmTagNHZdGpHTPx_h7HFPviiNcbbtKhRANC",
      "AASGw_E3u3KkxNWYoBVko9f-mxjHttJKYYfT6VwwX9E2P1ptfa3_PEvvdHMCs0dEmz3Yrn9OegOQA53M7D64P1ax",
    ],
  },
  "identity-rsa2048": {
    type: KeyType.rsa,
    pkcs8: [
      "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC6gJXwvwxNGMiEG6Anw335zaQAtvM2KNZGdOBXBpy4ytG2",
      "tDnDmxKxcDtLZ8THt6slgHW972yPwQesqBEnvgPBuR2NgwDgVD_LDWIqp6zd496cmeNuvqiJln0jl4WqxOGJYY7JNHQ2cipI",
      "A4fLvX2mYwccDt3u9OetdC1awRg2MlHtKCm_lL04OG9x6hhIMJWnyM9TXvsMTaekQZFAWSVJqw2M-qX34NLVQElcEv9oZtHF",
      "gMHgMhdfEsPnUVZ3WMiuGwpheH3qpxxOuI_aYvP46Zh-IEaqvh8570WD6Sfbc6Bt7pHiy_IgCJhBbQR5xvXipijEeI0pIIQD",
      "hwK4Li63AgMBAAECggEAF7SEWmdOHvaJdhE02BkHCBtVPyoB295w7d-pLCaRAQP2h-x8cxpg0-DaCImV_3Se8lNTo-Ksv9Df",
      "Mtjh5VVHkPYAhZ4jHGBZA2weECHj3Qg7oVgGCmt9bI-ONFnsCXqg2B9oULa0Fr-IFEMunXzmXaG0o6JYHylN0UQ1B5YHh8vB",
      "lzQVZgNyBNDa1vGIFG9yaamtZhs1NRNAm3EX8iz8iIy0QbYe-uJxMjpANHDFRLbvL4MkAe-OQZVnhYDvq2XjGjNEELS-6PtT",
      "2FpF7mVavcsbbjVcuiyudc5mFR0dRpBNb1o4OwatDB2FASaOd0xdqXMUUT0txh_LcSUPlLwSEQKBgQD3jmVF7pRc_6P1gAKU",
      "MTtt4ElGOXPERLEkS9KYp5HtOGBUpaE1YI0KjJ0dcJgFZdfI5Yi2dYBtzE2Qr2q6EVvD1U_ObRpiM8uXmoHj0QPdTOnzh1J9",
      "f5-2wRhijFpkxTr_FEO_0BC-zw6bqfLUdio93aX4rIOF3aQqrI1zXNRFZQKBgQDA3RS-A0DppdZQxRXULdZGK49MoHI2GEzd",
      "XqaNyzZDg6OyvpY1AEPcTPT3txUjg7CJMv9fptHdKybFmV6dfpZ7CmJtzZ64JmiN3zwx8odQGyGYwO-_ObQ9P1f3NC-50Md5",
      "WPC3-VGKYycROSSEiEnlgk3i4mAhUNiun6wH5Spf6wKBgB_U7IrIecVXjdKkijBaAEVJoMJp4svq9Ugwg7zjVy1EoYZg4dDG",
      "QHyJxi4h6zpOdSe89A5aH5B-w76F_9g7ISyWQjPN7aWQ-W3eDTOpDbEoEbEhxmaiwXuzappJZ9orTkG8blW8wFp4r20uti3B",
      "n_7igFPwgtz0ugZOt8WMuzLNAoGBAIeww_Av39LDP7bSAtqmaTQzX329AL34eNPizPHEAGidzGVs28dsaVIsvskuAWxcMa9F",
      "txB4EP03Z-7sSfoq3vqwQrIYUcwkEbmHTxWhGfyNKiUL0WHL2nihAWXGTLHCJyXEIpB9lBX2Tr06Y-vu63bTJ7MyLAoklF6_",
      "rkxbumWDAoGALz7D1EzK2tHjDB8_nuhuE6guMCKPxrvOKoqAcvCzhk9fIYrMz6y6Z4CXpwCDO1D220bPsfAXkPP7h05bEQLZ",
      "6CUhul69gCCUir5OidV7lWTD04lWeaeS4BMjhI2D3dMZmnu1R3gSM6tqsvuxHF3E4r-TnRc79IxU-j9QGyKhgkM",
    ],
  },
  /** An RSA-1024 public key: below the 2048-bit minimum, so every import must refuse it. */
  "rsa1024-too-small": {
    type: KeyType.rsa,
    spki: [
      "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDiAdq1lhsOfl73pLK57ZhlLzzX55EqUw0-0qDzENMxsjGegsnr9Y-eNizY",
      "WyepbankoRyqh_sgsrO2dTRbw51NWJcDREFVZMNug7gK1TRPMPEuTvVlIaSmjiyNca1vJa9nGv7Dy9CsQvjXQedlN0vONala",
      "cwYMkSJWn7ojiRpeJQIDAQAB",
    ],
  },
};

/**
 * Randomized signatures made once (`--resign`) and pasted here, hex.
 * `proof:<transcript>` is the identity key's proof signature of that transcript;
 * `message:<key>` signs MESSAGE; `message-salt64:identity-rsa2048` is RSA-PSS with
 * a 64-byte salt (valid PSS, but not psimbols' saltLength 32, so it must not verify).
 */
const RANDOMIZED_SIGNATURES: Record<string, Hex> = {
  "message-salt64:identity-rsa2048": "a1ea3697d1edc446ed139668796a82db0bb65b8e1a64abfbcd9fbb20b7480ba5d5386c70a4f672baf47a45688be6722bdd6e406383d9475d02f298f7b685a4b346854c0c163c60ca5004499e2c38d01482a47b8f9a837e947c6fb3fa31e6b3320555e46d48a52e2a42fb7b79d6a42df5bc567245cdea3f12839612268fbe0c89c9223ab440ec584d62cfce3b2400b314c4cdcaabb14b6cb9cd519e27e60d219ace47ae18ce413069d2da8a1f6faaa9d729aeac7c9238b6d3a483a4cc1737b7a218003e5c99cd91b377f35b5640448a7236c0845c6df8d9a185c7f5eb2f05a5baf0a19a13dfa5886a6d9facb06ac67cbbdf9529c521eeef9683cbdc6ec98b4c01",
  "message:identity-p256": "b5bdbe08b109afdcc3e26d854a650083d9db889039ada45e7aeaa95315470bfcf67ab5ab13292fd9254db90680606a3aa40ab8ae52955a486b005c9cb57bbb3d",
  "message:identity-rsa2048": "7475af5912acedf01887d36b140ad93f355ea78fdd854bc1225363174791442d5d58e183325b44fccabc0dd01c336ce6f73544717480c32ea6c9d5d816e6d90a55170bc527db6abe61e38bdfffb0b913e9705f13a6795042acc63cd00d7630f3ffc2a1a7a37c80063a10d28ec30af41288cf6097b350dfba9a40539dd7cbf0298e150e3b6e5bdda5398c9509ad955f67e790eb732ba96c4b599492e7579e0aebb2fadc95793a6cbf9fbde67f189561b5e220d121ca6f737c086fe029da6a5faad4d3f28617649a55905bb8dbe1c87f7ab9b2393fbfe4ddb723fc9dca378f7f0c51e19c2ed463b6c5577e2792d855ac9964dfad7d11256a6a077ab3c152c684b8",
  "proof:p256-identity": "c2eb99cb2885bbed441a80c91e1db94d73a529707a278d5fc9cd6cd0201258090ea09567be88cf92cf42404335256321ac0ed5b0e58908076f6f76b127f1b9ec",
  "proof:rsa-identity": "18540a04d4cedf407e1ab7984585f326f65c73a5df6538800e47a8976c50d8ff9e99cc2ae87dc30fff426c65943a3166549353687e6bc876865b5f29207132b2e0ebfc8eb06d109de47980b7b141d7ce77d870a94bee15cd9e60b253723728a3d4ba4dbdda1cab87c472647eb4b660f061769cb5cb5302e3f39b298d1bb04bfbcc2c4d25f3fc6105fa9ff08bc6cbf638f86722625e6f6a35f60b765209ef00ba044d21079326709a2fdd12d0c0ea3d86920647ef6c03380e401bb9b83dab27fd9a11142f10afbb94092614cb437370a5a045094250a9f4e4d015e285fe8f4b8dfb83cca13cf6958a59f8662f2c93ccd28574fbaad1b5d9a4015c7e9eab291fae",
};

/** The message of the stand-alone signature vectors. */
const MESSAGE = "psimbols/1 test vector message";
const SOURCE = "wss://psimbols.example.com/";

/** `n` bytes `start, start+1, ...` (mod 256): distinct, easy to spot in a hex dump. */
function run(start: number, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
}

interface ChannelScript {
  name: string;
  via: "handshake" | "resume";
  /** For `resume`: the client's and server's nonces. */
  nonces?: { c: Uint8Array; s: Uint8Array };
  /**
   * Timeline of frames: a request and its response, a notice push (`payload` is the inner push),
   * or an application push (`message` and its `id`, wrapped as the broker wraps them, §7.2).
   */
  steps: ({ request: number; op: string; data?: unknown; response: unknown } | { push: number; payload: unknown } | { push: number; message: unknown; id: number })[];
}

interface TranscriptSpec {
  name: string;
  identity: string;
  kem: KemType;
  channel_types: string[];
  hello_features: string[];
  server_features: string[];
  /** First byte of the run of fixed bytes this transcript's inputs use. */
  seed: number;
  ttl: number;
  valid_until: string;
  bindings: ChannelScript[];
}

const TRANSCRIPTS: TranscriptSpec[] = [
  {
    name: "ed25519-x25519",
    identity: "identity-ed25519",
    kem: "X25519",
    channel_types: ["AES-256-GCM"],
    hello_features: [],
    server_features: [],
    seed: 0x00,
    ttl: 3600,
    valid_until: "2030-01-01T01:00:00.000Z",
    bindings: [
      {
        name: "handshake binding",
        via: "handshake",
        steps: [
          { request: 1, op: "echo", data: { hello: "world", n: [1, 2, 3] }, response: { data: { hello: "world", n: [1, 2, 3] } } },
          { request: 2, op: "ping", response: { data: { pong: true, time: "2030-01-01T00:00:01.000Z" } } },
          { push: 1, message: { text: "application push" }, id: 7 },
          { request: 3, op: "no.such.op", data: null, response: { error: { code: "not_found", message: "no handler for this op" } } },
          { push: 2, payload: { notice: "expiring", valid_until: "2030-01-01T01:00:00.000Z" } },
        ],
      },
      {
        name: "resume binding",
        via: "resume",
        nonces: { c: run(0xc0, 32), s: run(0xe0, 32) },
        steps: [
          { request: 1, op: "ping", response: { data: { pong: true, time: "2030-01-01T00:10:00.000Z" } } },
          { push: 1, payload: { notice: "closing", reason: "node shutting down" } },
          { request: 2, op: "channel.close", response: { data: { closed: true } } },
        ],
      },
    ],
  },
  {
    name: "ed25519-p256kem",
    identity: "identity-ed25519",
    kem: "P-256",
    // `AES` is the original design's alias; DES is never chosen.
    channel_types: ["DES", "AES"],
    // `binary` (§4.11) and placeholders: the challenge lists what both sides support, in the hello's order.
    hello_features: ["x-vector-b", "binary", "x-vector-a"],
    server_features: ["x-vector-a", "binary", "x-vector-c"],
    seed: 0x11,
    ttl: 600,
    valid_until: "2030-06-01T12:10:00.000Z",
    bindings: [
      {
        name: "handshake binding",
        via: "handshake",
        steps: [{ request: 1, op: "echo", data: "é ✓ 😀", response: { data: "é ✓ 😀" } }],
      },
    ],
  },
  {
    // ChaCha20-Poly1305 (RFC 8439), as a Node client offers it first; the same derivations, nonces and AAD (§6.3).
    name: "ed25519-x25519-chacha20poly1305",
    identity: "identity-ed25519",
    kem: "X25519",
    channel_types: ["ChaCha20-Poly1305", "AES-256-GCM"],
    hello_features: ["binary"],
    server_features: ["binary"],
    seed: 0x55,
    ttl: 3600,
    valid_until: "2030-01-01T01:00:00.000Z",
    bindings: [
      {
        name: "handshake binding",
        via: "handshake",
        steps: [
          { request: 1, op: "echo", data: { hello: "world", n: [1, 2, 3] }, response: { data: { hello: "world", n: [1, 2, 3] } } },
          { push: 1, message: { text: "application push" }, id: 7 },
          { request: 2, op: "echo", data: "é ✓ 😀", response: { data: "é ✓ 😀" } },
        ],
      },
      {
        name: "resume binding",
        via: "resume",
        nonces: { c: run(0xc4, 32), s: run(0xe4, 32) },
        steps: [
          { request: 1, op: "ping", response: { data: { pong: true, time: "2030-01-01T00:10:00.000Z" } } },
          { push: 1, payload: { notice: "expiring", valid_until: "2030-01-01T01:00:00.000Z" } },
        ],
      },
    ],
  },
  {
    name: "p256-identity",
    identity: "identity-p256",
    kem: "X25519",
    channel_types: ["AES-256-GCM"],
    hello_features: [],
    server_features: [],
    seed: 0x22,
    ttl: 3600,
    valid_until: "2030-01-01T01:00:00.000Z",
    bindings: [],
  },
  {
    name: "rsa-identity",
    identity: "identity-rsa2048",
    kem: "X25519",
    channel_types: ["AES-256-GCM"],
    hello_features: [],
    server_features: [],
    seed: 0x33,
    ttl: 3600,
    valid_until: "2030-01-01T01:00:00.000Z",
    bindings: [],
  },  {
    // The post-quantum hybrid KEM (PROTOCOL.md §5.3.1). `ekm` is X-Wing's 64-byte eseed.
    name: "ed25519-xwing",
    identity: "identity-ed25519",
    kem: "X-Wing",
    channel_types: ["AES-256-GCM"],
    hello_features: [],
    server_features: [],
    seed: 0x44,
    ttl: 3600,
    valid_until: "2030-01-01T01:00:00.000Z",
    bindings: [
      {
        name: "handshake binding",
        via: "handshake",
        steps: [{ request: 1, op: "echo", data: { kem: "X-Wing" }, response: { data: { kem: "X-Wing" } } }],
      },
    ],
  },
];

// ================================================================== helpers

export function hex(b: Uint8Array): Hex {
  let s = "";
  for (let i = 0; i < b.length; i++) s += b[i]!.toString(16).padStart(2, "0");
  return s;
}
export function unhex(s: Hex): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-f]*$/.test(s)) throw new RangeError("hex expected");
  return Uint8Array.from({ length: s.length / 2 }, (_, i) => parseInt(s.slice(2 * i, 2 * i + 2), 16));
}

/** ECDSA P1363 `r || s` to DER (RFC 3279 Ecdsa-Sig-Value), for the "DER is not accepted" vector. */
function p1363ToDer(sig: Uint8Array): Uint8Array {
  const int = (x: Uint8Array) => {
    let i = 0;
    while (i < x.length - 1 && x[i] === 0) i++;
    let v: Uint8Array = x.slice(i);
    if (v[0]! & 0x80) v = concat(new Uint8Array([0]), v);
    return concat(new Uint8Array([0x02, v.length]), v);
  };
  const body = concat(int(sig.slice(0, 32)), int(sig.slice(32)));
  return concat(new Uint8Array([0x30, body.length]), body);
}

function flip(b: Uint8Array, i: number): Uint8Array {
  const c = b.slice();
  c[i] = c[i]! ^ 0x01;
  return c;
}

async function signingKey(name: string): Promise<SigningKey> {
  const k = KEY_INPUTS[name];
  if (!k?.pkcs8) throw new Error(`no private key for ${name}`);
  return importPkcs8(k.type, fromB64u(k.pkcs8.join(""), name, 8192), true);
}

function randomizedSignature(id: string): Uint8Array {
  const s = RANDOMIZED_SIGNATURES[id];
  if (s === undefined) throw new Error(`RANDOMIZED_SIGNATURES["${id}"] is missing: run with --resign and paste the output`);
  return unhex(s);
}

const signInput = async (label: string, t: Uint8Array) => concat(lp(label), await sha256(t));

// ================================================================ generation

async function keyVectors(): Promise<Record<string, KeyVector>> {
  const out: Record<string, KeyVector> = {};
  for (const [name, k] of Object.entries(KEY_INPUTS)) {
    let spki: Uint8Array;
    if (k.pkcs8) spki = (await signingKey(name)).public.spki;
    else spki = fromB64u(k.spki!.join(""), name, 8192);
    out[name] = {
      type: k.type,
      ...(k.pkcs8 ? { pkcs8: k.pkcs8.join("") } : {}),
      spki: b64u(spki),
      fingerprint: await fingerprint(spki),
    };
  }
  return out;
}

/**
 * One transcript. With `resign`, the ECDSA/RSA proof is signed afresh and collected
 * there instead of being read from RANDOMIZED_SIGNATURES.
 */
async function transcriptVector(t: TranscriptSpec, resign?: Map<string, Hex>): Promise<TranscriptVector> {
  const identity = await signingKey(t.identity);
  const server = await signingKey("server-ed25519");
  const deterministic = identity.public.type === KeyType.ed25519;
  const nonceC = run(t.seed, 32);
  const kemIkm = run(t.seed + 0x20, 32);
  const nonceS = run(t.seed + 0x40, 32);
  // IKM of the ephemeral key for the DHKEMs (RFC 9180 DeriveKeyPair); X-Wing's eseed is 64 bytes (PROTOCOL.md §5.3.1)
  const ekm = run(t.seed + 0x60, t.kem === "X-Wing" ? 64 : 32);
  const channelId = b64u(run(t.seed + 0x80, 16));
  const channelKey = run(t.seed + 0xa0, 32);

  // Client: hello. Server: challenge, from the exact bytes received.
  const h = await createHello(identity, { channelTypes: t.channel_types, kem: t.kem, features: t.hello_features, fixed: { nonceC, kemIkm } });
  const helloText = fromUtf8(h.bytes);
  const hello = decodeClientFrame(helloText) as Hello;
  const offer = { key: server, source: SOURCE, features: t.server_features };
  const { challenge, pending } = await acceptHello(h.bytes, hello, offer, { nonceS, ekm });
  const challengeText = JSON.stringify(challenge);
  // The grant's key is of the type the challenge chose (§5.4).
  const grant: Grant = { channel: channelId, key: { type: challenge.channel_type, data: b64u(channelKey) }, valid_until: t.valid_until, ttl: t.ttl };

  // Client: proof. For ECDSA/RSA the stored (pasted) signature replaces the fresh random one.
  const { proof, state } = await answerChallenge(h, decodeServerFrame(challengeText) as Challenge, () => {});
  let sigC = fromB64u(proof.signature, "signature");
  const tInfo = lp(h.bytes, SOURCE, server.public.spki, challenge.channel_type, nonceS, challenge.features.join(","));
  const info = await sha256(concat(lp(LABEL_INFO), tInfo));
  const enc = fromB64u(challenge.enc, "enc");
  const tChal = concat(tInfo, lp(enc));
  const sigS = fromB64u(challenge.signature, "signature");
  const clientSignInput = await signInput(LABEL_CLIENT_SIG, concat(tChal, lp(sigS)));
  if (!deterministic) {
    if (resign) resign.set(`proof:${t.name}`, hex(sigC));
    else sigC = randomizedSignature(`proof:${t.name}`);
  }
  const proofText = JSON.stringify({ type: "proof", signature: b64u(sigC) });
  if (!(await verifyProof(pending, sigC))) throw new Error(`${t.name}: the proof does not verify (stale RANDOMIZED_SIGNATURES? run --resign)`);
  const grantAad = concat(lp(LABEL_GRANT_AAD), await sha256(concat(tChal, lp(sigS), lp(sigC))));

  // Server: established. Client: opens it (with the aad of the stored proof).
  const est = await sealGrant(pending, sigC, grant, SOURCE);
  const establishedText = JSON.stringify(est);
  const opened = await openGrant({ ...state, aad: grantAad }, est);
  if (JSON.stringify(opened.grant) !== JSON.stringify(grant)) throw new Error(`${t.name}: grant does not round-trip`);
  if (hex(state.info) !== hex(info) || hex(state.enc) !== hex(enc)) throw new Error(`${t.name}: client and generator disagree on info/enc`);

  const bindings: BindingVector[] = [];
  for (const b of t.bindings) bindings.push(await bindingVector(b, challenge.channel_type, channelKey, channelId, b.nonces ?? { c: nonceC, s: nonceS }));

  return {
    name: t.name,
    deterministic,
    inputs: {
      identity: t.identity,
      server_key: "server-ed25519",
      source: SOURCE,
      server_features: t.server_features,
      channel_types: t.channel_types,
      kem: t.kem,
      hello_features: t.hello_features,
      nonce_c: hex(nonceC),
      kem_ikm: hex(kemIkm),
      nonce_s: hex(nonceS),
      ekm: hex(ekm),
      grant,
    },
    frames: { hello: helloText, challenge: challengeText, proof: proofText, established: establishedText },
    intermediate: {
      kem_public: hex(fromB64u(hello.kem.data, "kem.data")),
      enc: hex(enc),
      t_info: hex(tInfo),
      info: hex(info),
      t_chal: hex(tChal),
      server_sign_input: hex(await signInput(LABEL_SERVER_SIG, tChal)),
      server_signature: hex(sigS),
      client_sign_input: hex(clientSignInput),
      client_signature: hex(sigC),
      grant_aad: hex(grantAad),
      grant_plaintext: JSON.stringify(grant),
      channel_key: hex(channelKey),
    },
    bindings,
  };
}

async function bindingVector(b: ChannelScript, type: ChannelType, channelKey: Uint8Array, channel: string, n: { c: Uint8Array; s: Uint8Array }): Promise<BindingVector> {
  const raw = await deriveTrafficKeys(channelKey, channel, n.c, n.s);
  // WebCrypto has no ChaCha20-Poly1305: its frames are sealed on node:crypto (the conformance test checks every engine).
  const key = (k: Uint8Array) => (type === ChannelType.chacha20poly1305 ? nodeTrafficKey(k, type) : trafficKey(k, type));
  const c2s = await key(raw.c2s);
  const s2c = await key(raw.s2c);
  const frames: ChannelFrameVector[] = [];
  /** Seals `plaintext`, the inner payload's exact JSON text. */
  const add = async (kind: ChannelFrameVector["kind"], seq: number, plaintext: string) => {
    const k = kind === "request" ? FrameKind.request : kind === "response" ? FrameKind.response : FrameKind.push;
    const ct = await sealFrame(kind === "request" ? c2s : s2c, k, seq, channel, plaintext);
    const outer =
      kind === "request"
        ? { type: "request", channel, seq, request: ct }
        : kind === "response"
          ? { type: "response", source: SOURCE, channel, seq, response: ct }
          : { type: "push", source: SOURCE, channel, seq, push: ct };
    const ctBytes = fromB64u(ct, "ciphertext");
    const binary = concat(encodeBinaryHeader(k, fromB64u(channel, "channel"), seq), ctBytes);
    frames.push({ kind, seq, nonce: hex(frameNonce(k, seq)), plaintext, ciphertext: hex(ctBytes), frame: JSON.stringify(outer), binary: hex(binary) });
  };
  for (const s of b.steps) {
    if ("request" in s) {
      await add("request", s.request, JSON.stringify(s.data === undefined ? { op: s.op } : { op: s.op, data: s.data }));
      await add("response", s.request, JSON.stringify(s.response));
    } else if ("message" in s) {
      // the broker's own wrapping (server/connection.ts), not a re-creation of it
      await add("push", s.push, applicationPushText(JSON.stringify(s.message), s.id));
    } else await add("push", s.push, JSON.stringify(s.payload));
  }
  return {
    name: b.name,
    via: b.via,
    channel_type: type,
    channel,
    nonce_c: hex(n.c),
    nonce_s: hex(n.s),
    ...(b.via === "resume"
      ? {
          resume: JSON.stringify({ type: "resume", channel, nonce: b64u(n.c) }),
          resumed: JSON.stringify({ type: "resumed", source: SOURCE, channel, nonce: b64u(n.s) }),
        }
      : {}),
    salt: hex(lp(n.c, n.s)),
    c2s_info: hex(lp(LABEL_C2S, channel)),
    s2c_info: hex(lp(LABEL_S2C, channel)),
    c2s: hex(raw.c2s),
    s2c: hex(raw.s2c),
    frames,
  };
}

async function signatureVectors(resign?: Map<string, Hex>): Promise<SignatureVector[]> {
  const msg = utf8(MESSAGE);
  const ed = await signingKey("identity-ed25519");
  const edSig = await sign(ed, msg);
  const p256 = await signingKey("identity-p256");
  const rsa = await signingKey("identity-rsa2048");
  if (resign) {
    resign.set("message:identity-p256", hex(await sign(p256, msg)));
    resign.set("message:identity-rsa2048", hex(await sign(rsa, msg)));
    const pss64 = await crypto.subtle.sign({ name: "RSA-PSS", saltLength: 64 }, rsa.privateKey, msg as BufferSource);
    resign.set("message-salt64:identity-rsa2048", hex(new Uint8Array(pss64)));
    return [];
  }
  const p256Sig = randomizedSignature("message:identity-p256");
  const rsaSig = randomizedSignature("message:identity-rsa2048");
  return [
    { description: "Ed25519 (deterministic, RFC 8032)", key: "identity-ed25519", message: hex(msg), signature: hex(edSig), valid: true },
    { description: "Ed25519, one bit of the signature flipped", key: "identity-ed25519", message: hex(msg), signature: hex(flip(edSig, 63)), valid: false },
    { description: "Ed25519, one bit of the message flipped", key: "identity-ed25519", message: hex(flip(msg, 0)), signature: hex(edSig), valid: false },
    { description: "ECDSA P-256 SHA-256, IEEE P1363 r || s (64 bytes)", key: "identity-p256", message: hex(msg), signature: hex(p256Sig), valid: true },
    { description: "ECDSA P-256, the same signature DER-encoded: not the wire format", key: "identity-p256", message: hex(msg), signature: hex(p1363ToDer(p256Sig)), valid: false },
    { description: "ECDSA P-256, one bit of s flipped", key: "identity-p256", message: hex(msg), signature: hex(flip(p256Sig, 63)), valid: false },
    { description: "RSA-PSS SHA-256 MGF1-SHA-256 saltLength 32", key: "identity-rsa2048", message: hex(msg), signature: hex(rsaSig), valid: true },
    {
      description: "RSA-PSS with a 64-byte salt: valid PSS, but not psimbols' saltLength 32",
      key: "identity-rsa2048",
      message: hex(msg),
      signature: hex(randomizedSignature("message-salt64:identity-rsa2048")),
      valid: false,
    },
    { description: "RSA-PSS, one bit flipped", key: "identity-rsa2048", message: hex(msg), signature: hex(flip(rsaSig, 100)), valid: false },
  ];
}

/**
 * `established` frames for the handshake of `t` whose grant is sealed correctly (the client opens
 * it) but breaks a constraint of PROTOCOL.md §5.4. Each is sealed by a fresh server context, as the
 * client's context opens only the first seal.
 */
async function badGrants(t: TranscriptVector): Promise<{ description: string; established: string }[]> {
  const server = await signingKey(t.inputs.server_key);
  const sigC = unhex(t.intermediate.client_signature);
  const good = t.inputs.grant;
  const bad: [string, unknown][] = [
    ["grant key of 16 bytes", { ...good, key: { ...good.key, data: b64u(run(0xa0, 16)) } }],
    ["grant key type AES (the alias is for offers only)", { ...good, key: { ...good.key, type: "AES" } }],
    ["grant ttl 0", { ...good, ttl: 0 }],
    ["grant ttl 1.5", { ...good, ttl: 1.5 }],
    ["grant without ttl", { channel: good.channel, key: good.key, valid_until: good.valid_until }],
    ["grant channel of 21 characters", { ...good, channel: good.channel.slice(0, 21) }],
    ["grant valid_until that is not a time", { ...good, valid_until: "tomorrow" }],
  ];
  const out: { description: string; established: string }[] = [];
  for (const [description, grant] of bad) {
    const hello = decodeClientFrame(t.frames.hello) as Hello;
    const offer = { key: server, source: t.inputs.source, features: t.inputs.server_features };
    const { pending } = await acceptHello(utf8(t.frames.hello), hello, offer, { nonceS: unhex(t.inputs.nonce_s), ekm: unhex(t.inputs.ekm) });
    out.push({ description, established: JSON.stringify(await sealGrant(pending, sigC, grant as Grant, t.inputs.source)) });
  }
  return out;
}

/** Frames a receiver must accept (PROTOCOL.md §2.1, §4): other spellings of vector frames, and what they mean. */
/** A busy node's refusal (PROTOCOL.md §11.4). */
const BUSY = '{"type":"error","error":{"code":"too_many","message":"this node is busy; try again in 1500 ms"},"retry_after_ms":1500}';

function acceptedFrames(ts: TranscriptVector[]): AcceptedFrameVector[] {
  const t1 = ts.find((t) => t.name === "ed25519-x25519")!;
  const hb = t1.bindings.find((b) => b.via === "handshake")!;
  const req1 = hb.frames.find((f) => f.kind === "request" && f.seq === 1)!.frame;
  const resp1 = hb.frames.find((f) => f.kind === "response" && f.seq === 1)!.frame;
  const push1 = hb.frames.find((f) => f.kind === "push" && f.seq === 1)!.frame;
  const hello = t1.frames.hello;
  const variant = (canonical: string, from: string, to: string): string => {
    if (!canonical.includes(from)) throw new Error(`accepted frame: ${from} not in ${canonical.slice(0, 40)}`);
    return canonical.replace(from, to);
  };
  const parsed = (text: string) => JSON.parse(text) as Record<string, unknown>;
  return [
    { description: "hello version written 1.0: an integer is taken by its value", side: "client", text: variant(hello, '"version":1,', '"version":1.0,'), decoded: parsed(hello) },
    { description: "hello version written 1e0", side: "client", text: variant(hello, '"version":1,', '"version":1e0,'), decoded: parsed(hello) },
    { description: "request seq written 10E-1", side: "client", text: variant(req1, '"seq":1,', '"seq":10E-1,'), decoded: parsed(req1) },
    { description: "response seq written 1.000", side: "server", text: variant(resp1, '"seq":1,', '"seq":1.000,'), decoded: parsed(resp1) },
    { description: "hello without features: absent means []", side: "client", text: variant(hello, ',"features":[]', ""), decoded: parsed(hello) },
    {
      description: "hello offering one channel type twice: allowed, the server picks the first it accepts",
      side: "client",
      text: variant(hello, '"channel_types":["AES-256-GCM"]', '"channel_types":["AES-256-GCM","AES-256-GCM"]'),
      decoded: { ...parsed(hello), channel_types: ["AES-256-GCM", "AES-256-GCM"] },
    },
    {
      description: "hello with whitespace and an unknown member: both ignored (the bytes are still what is signed)",
      side: "client",
      text: variant(hello, '{"type":"hello",', '{ "type" : "hello",\n  "x-unknown": {"a": [1, 2]},\n  '),
      decoded: parsed(hello),
    },
    { description: "push with an unknown member", side: "server", text: variant(push1, '{"type":"push",', '{"type":"push","x-unknown":true,'), decoded: parsed(push1) },
    {
      description: "request seq written 1.0000000000000001: not an integer, but 1 in binary64, so taken as 1 (PROTOCOL.md §2.1)",
      side: "client",
      text: variant(req1, '"seq":1,', '"seq":1.0000000000000001,'),
      decoded: parsed(req1),
    },
    {
      description: "error from a busy node with retry_after_ms: wait at least that long (PROTOCOL.md §4.10, §11.4)",
      side: "server",
      text: BUSY,
      decoded: parsed(BUSY),
    },
  ];
}

async function negativeVectors(keys: Record<string, KeyVector>, ts: TranscriptVector[]): Promise<NegativeVectors> {
  const t1 = ts.find((t) => t.name === "ed25519-x25519")!;
  const t2 = ts.find((t) => t.name === "ed25519-p256kem")!;
  const tc = ts.find((t) => t.name === "ed25519-x25519-chacha20poly1305")!;
  const cb = tc.bindings.find((b) => b.via === "handshake")!;
  const creq1 = cb.frames.find((f) => f.kind === "request" && f.seq === 1)!;
  const cct = unhex(creq1.ciphertext);
  const CC = ChannelType.chacha20poly1305;
  const hb = t1.bindings.find((b) => b.via === "handshake")!;
  const rb = t1.bindings.find((b) => b.via === "resume")!;
  const req1 = hb.frames.find((f) => f.kind === "request" && f.seq === 1)!;
  const resp1 = hb.frames.find((f) => f.kind === "response" && f.seq === 1)!;
  const push1 = hb.frames.find((f) => f.kind === "push" && f.seq === 1)!;
  const resume = JSON.parse(rb.resume!) as Record<string, unknown>;
  const resumed = JSON.parse(rb.resumed!) as Record<string, unknown>;
  const ch = hb.channel;
  const ct = unhex(req1.ciphertext);
  const hello = JSON.parse(t1.frames.hello) as Record<string, unknown>;
  const withHello = (patch: Record<string, unknown>) => JSON.stringify({ ...hello, ...patch });
  const chal = JSON.parse(t1.frames.challenge) as Record<string, unknown>;
  const withChal = (patch: Record<string, unknown>) => JSON.stringify({ ...chal, ...patch });
  const req = (patch: Record<string, unknown>) => JSON.stringify({ type: "request", channel: ch, seq: 1, request: b64u(ct), ...patch });
  const est = JSON.parse(t1.frames.established) as { source: string; response: string };
  const estCt = fromB64u(est.response, "response");
  const edSpki = keys["identity-ed25519"]!.spki;
  const nonce16 = b64u(run(0, 16));
  const tx = ts.find((t) => t.name === "ed25519-xwing")!;
  const xwPk = unhex(tx.intermediate.kem_public);
  const xwEnc = unhex(tx.intermediate.enc);
  const xwOffModulus = xwPk.slice();
  xwOffModulus[0] = 0xff;
  xwOffModulus[1] = xwOffModulus[1]! | 0x0f;
  const withXwChal = (patch: Record<string, unknown>) => JSON.stringify({ ...(JSON.parse(tx.frames.challenge) as Record<string, unknown>), ...patch });

  return {
    frames: [
      { description: "not JSON", side: "client", text: '{"type":"hello"', error: "bad_request" },
      { description: "a JSON array, not an object", side: "client", text: "[]", error: "bad_request" },
      { description: "no type", side: "client", text: "{}", error: "bad_request" },
      { description: "unknown frame type", side: "client", text: '{"type":"grant"}', error: "bad_request" },
      { description: "a server frame sent by a client", side: "client", text: t1.frames.challenge, error: "bad_request" },
      { description: "hello version as a string", side: "client", text: withHello({ version: "1" }), error: "bad_request" },
      { description: "hello nonce of 15 bytes", side: "client", text: withHello({ nonce: b64u(run(0, 15)) }), error: "bad_request" },
      { description: "hello nonce of 65 bytes", side: "client", text: withHello({ nonce: b64u(run(0, 65)) }), error: "bad_request" },
      { description: "hello nonce with base64 padding", side: "client", text: withHello({ nonce: b64u(run(0, 16)) + "==" }), error: "bad_request" },
      { description: "hello nonce in standard base64 (+ and /)", side: "client", text: withHello({ nonce: "+/" + nonce16.slice(2) }), error: "bad_request" },
      {
        description: "hello nonce with non-zero trailing bits (non-canonical base64url)",
        side: "client",
        text: withHello({ nonce: nonce16.slice(0, -1) + "B" }),
        error: "bad_request",
      },
      {
        description: "hello with 17 channel types",
        side: "client",
        text: withHello({ channel_types: ["AES-256-GCM", ...Array.from({ length: 16 }, (_, i) => `x-type-${i}`)] }),
        error: "bad_request",
      },
      { description: "hello with an empty channel type", side: "client", text: withHello({ channel_types: [""] }), error: "bad_request" },
      { description: "hello public_key without data", side: "client", text: withHello({ public_key: { type: "Ed25519" } }), error: "bad_request" },
      {
        description: "hello feature containing ',' (features are joined with ',' in T_info, PROTOCOL.md §5.2)",
        side: "client",
        text: withHello({ features: ["a,b"] }),
        error: "bad_request",
      },
      { description: "hello naming a feature twice (PROTOCOL.md §4: a list names each feature once)", side: "client", text: withHello({ features: ["binary", "binary"] }), error: "bad_request" },
      { description: "request seq 0", side: "client", text: req({ seq: 0 }), error: "bad_request" },
      { description: "request seq 2^32 (past the wire's MAX_WIRE_SEQ; a binding's own cap is checked by the receiver, §6.4)", side: "client", text: req({ seq: MAX_WIRE_SEQ + 1 }), error: "bad_request" },
      { description: "request seq 1.5", side: "client", text: req({ seq: 1.5 }), error: "bad_request" },
      { description: "request seq as a string", side: "client", text: req({ seq: "1" }), error: "bad_request" },
      { description: "request channel of 21 characters", side: "client", text: req({ channel: ch.slice(0, 21) }), error: "bad_request" },
      { description: "request channel with non-zero trailing bits", side: "client", text: req({ channel: "A".repeat(21) + "B" }), error: "bad_request" },
      { description: "request ciphertext shorter than the 16-byte tag", side: "client", text: req({ request: b64u(ct.slice(0, 15)) }), error: "bad_request" },
      { description: "proof with an empty signature", side: "client", text: '{"type":"proof","signature":""}', error: "bad_request" },
      { description: "resume nonce of 8 bytes", side: "client", text: JSON.stringify({ type: "resume", channel: ch, nonce: b64u(run(0, 8)) }), error: "bad_request" },
      { description: "resume naming a feature twice", side: "client", text: JSON.stringify({ ...resume, features: ["binary", "binary"] }), error: "bad_request" },
      { description: "a client frame sent by a server", side: "server", text: t1.frames.hello, error: "protocol" },
      ...[-1, 60001, 1.5, "1500", null].map((v) => ({
        description: `error with retry_after_ms ${JSON.stringify(v)}: an integer 0..60000 only (§4.10)`,
        side: "server" as const,
        text: BUSY.replace('"retry_after_ms":1500', `"retry_after_ms":${JSON.stringify(v)}`),
        error: "protocol" as const,
      })),
      { description: "challenge naming the alias AES instead of AES-256-GCM", side: "server", text: withChal({ channel_type: "AES" }), error: "protocol" },
      { description: "challenge choosing DES", side: "server", text: withChal({ channel_type: "DES" }), error: "protocol" },
      { description: "challenge naming chacha20-poly1305 in lower case (names are exact)", side: "server", text: withChal({ channel_type: "chacha20-poly1305" }), error: "protocol" },
      { description: "challenge choosing XChaCha20-Poly1305 (not a channel type)", side: "server", text: withChal({ channel_type: "XChaCha20-Poly1305" }), error: "protocol" },
      { description: "challenge without signature", side: "server", text: withChal({ signature: undefined }), error: "protocol" },
      { description: "challenge without source", side: "server", text: withChal({ source: undefined }), error: "protocol" },
      { description: "challenge nonce of 16 bytes (server nonces are exactly 32)", side: "server", text: withChal({ nonce: b64u(run(0x40, 16)) }), error: "protocol" },
      { description: "challenge nonce of 33 bytes", side: "server", text: withChal({ nonce: b64u(run(0x40, 33)) }), error: "protocol" },
      { description: "challenge naming a feature twice", side: "server", text: withChal({ features: ["binary", "binary"] }), error: "protocol" },
      { description: "challenge enc of 1121 bytes (X-Wing's 1120 is the longest)", side: "server", text: withXwChal({ enc: b64u(concat(xwEnc, new Uint8Array(1))) }), error: "protocol" },
      { description: "response seq 0", side: "server", text: JSON.stringify({ ...JSON.parse(resp1.frame), seq: 0 }), error: "protocol" },
      { description: "response without source", side: "server", text: JSON.stringify({ ...JSON.parse(resp1.frame), source: undefined }), error: "protocol" },
      { description: "push without push field", side: "server", text: JSON.stringify({ type: "push", source: SOURCE, channel: ch, seq: 1 }), error: "protocol" },
      { description: "push without source", side: "server", text: JSON.stringify({ ...JSON.parse(push1.frame), source: undefined }), error: "protocol" },
      { description: "resumed without source", side: "server", text: JSON.stringify({ ...resumed, source: undefined }), error: "protocol" },
      { description: "resumed nonce of 16 bytes (server nonces are exactly 32)", side: "server", text: JSON.stringify({ ...resumed, nonce: b64u(run(0xe0, 16)) }), error: "protocol" },
      { description: "resumed naming a feature twice", side: "server", text: JSON.stringify({ ...resumed, features: ["binary", "binary"] }), error: "protocol" },
      { description: "error frame without error object", side: "server", text: '{"type":"error","code":"unauthorised"}', error: "protocol" },
    ],
    binary_frames: (() => {
      const good = unhex(req1.binary);
      const patched = (i: number, v: number) => hex(good.map((x, j) => (j === i ? v : x)));
      const withSeq = (seq: number) => {
        const b = good.slice();
        new DataView(b.buffer).setUint32(17, seq, false);
        return hex(b);
      };
      return [
        { description: "shorter than the 21-byte header and a 16-byte tag", side: "client", hex: hex(good.slice(0, 36)), error: "bad_request" },
        { description: "kind 0", side: "client", hex: patched(0, 0), error: "bad_request" },
        { description: "kind 4", side: "client", hex: patched(0, 4), error: "bad_request" },
        { description: "a response (kind 2) sent by a client", side: "client", hex: patched(0, 2), error: "bad_request" },
        { description: "a request (kind 1) sent by a server", side: "server", hex: req1.binary, error: "protocol" },
        { description: "a response shorter than the 21-byte header and a 16-byte tag", side: "server", hex: resp1.binary.slice(0, 72), error: "protocol" },
        { description: "seq 0", side: "client", hex: withSeq(0), error: "bad_request" },
      ];
    })(),
    hellos: [
      { description: "version 2", text: withHello({ version: 2 }), error: "unsupported" },
      { description: "only weak channel types offered", text: withHello({ channel_types: ["DES", "3DES", "AES-256-CBC", "AES-128-ECB"] }), error: "unsupported" },
      { description: "ChaCha20-Poly1305 in lower case only (names are case-sensitive)", text: withHello({ channel_types: ["chacha20-poly1305"] }), error: "unsupported" },
      { description: "XChaCha20-Poly1305 and ChaCha20 without Poly1305 only", text: withHello({ channel_types: ["XChaCha20-Poly1305", "ChaCha20"] }), error: "unsupported" },
      {
        description: "channel type naming an Object.prototype member",
        text: withHello({ channel_types: ["toString"] }),
        error: "unsupported",
      },
      { description: "unknown kem type", text: withHello({ kem: { type: "X448", data: b64u(run(0, 56)) } }), error: "unsupported" },
      { description: "X25519 kem key of 31 bytes", text: withHello({ kem: { type: "X25519", data: b64u(run(1, 31)) } }), error: "bad_request" },
      {
        description: "X25519 kem key of low order (all zero): RFC 9180 §7.1.4 rejects the all-zero shared secret",
        text: withHello({ kem: { type: "X25519", data: b64u(new Uint8Array(32)) } }),
        error: "bad_request",
      },
      { description: "P-256 kem key not on the curve", text: withHello({ kem: { type: "P-256", data: b64u(concat(new Uint8Array([4]), run(1, 64))) } }), error: "bad_request" },
      // X-Wing (PROTOCOL.md §5.3.1): its public key is ML-KEM-768's 1184 bytes and an X25519 share of 32
      { description: "kem type is case-sensitive: x-wing", text: withHello({ kem: { type: "x-wing", data: b64u(xwPk) } }), error: "unsupported" },
      { description: "X-Wing kem key of 1215 bytes", text: withHello({ kem: { type: "X-Wing", data: b64u(xwPk.slice(0, 1215)) } }), error: "bad_request" },
      { description: "X-Wing kem key of 1217 bytes", text: withHello({ kem: { type: "X-Wing", data: b64u(concat(xwPk, new Uint8Array(1))) } }), error: "bad_request" },
      { description: "X-Wing kem key of 32 bytes (an X25519 key labelled X-Wing)", text: withHello({ kem: { type: "X-Wing", data: hello.kem && (hello.kem as { data: string }).data } }), error: "bad_request" },
      {
        description: "X-Wing kem key whose ML-KEM part fails FIPS 203's modulus check (a coefficient 4095 ≥ q)",
        text: withHello({ kem: { type: "X-Wing", data: b64u(xwOffModulus) } }),
        error: "bad_request",
      },
      {
        description: "X-Wing kem key whose X25519 share is of low order (all zero)",
        text: withHello({ kem: { type: "X-Wing", data: b64u(concat(xwPk.slice(0, 1184), new Uint8Array(32))) } }),
        error: "bad_request",
      },
      { description: "identity key of an unknown type", text: withHello({ public_key: { type: "DSA", data: edSpki } }), error: "unsupported" },
      { description: "identity key RSA-1024", text: withHello({ public_key: { type: "RSA", data: keys["rsa1024-too-small"]!.spki } }), error: "bad_request" },
    ],
    public_keys: [
      { description: "unknown type", key: { type: "DSA", data: edSpki }, error: "unsupported" },
      { description: "type is case-sensitive", key: { type: "ed25519", data: edSpki }, error: "unsupported" },
      { description: "RSA-1024: below the 2048-bit minimum", key: { type: "RSA", data: keys["rsa1024-too-small"]!.spki }, error: "bad_request" },
      { description: "an Ed25519 SPKI labelled ECDSA-P256", key: { type: "ECDSA-P256", data: edSpki }, error: "bad_request" },
      { description: "an ECDSA-P256 SPKI labelled Ed25519", key: { type: "Ed25519", data: keys["identity-p256"]!.spki }, error: "bad_request" },
      { description: "raw 32-byte Ed25519 key instead of SPKI", key: { type: "Ed25519", data: edSpki.slice(-43) }, error: "bad_request" },
      { description: "SPKI with base64 padding", key: { type: "Ed25519", data: edSpki + "=" }, error: "bad_request" },
      {
        description: "Ed25519 SPKI in non-canonical DER (long-form length): the same key under another fingerprint",
        key: { type: "Ed25519", data: b64u(concat(new Uint8Array([0x30, 0x81, 0x2a]), fromB64u(edSpki, "spki").slice(2))) },
        error: "bad_request",
      },
    ],
    channel: [
      { description: "request with one ciphertext bit flipped", key: hb.c2s, kind: "request", seq: 1, channel: ch, ciphertext: b64u(flip(ct, 0)), error: "unauthorised" },
      { description: "request with one tag bit flipped", key: hb.c2s, kind: "request", seq: 1, channel: ch, ciphertext: b64u(flip(ct, ct.length - 1)), error: "unauthorised" },
      { description: "request with the last tag byte cut off", key: hb.c2s, kind: "request", seq: 1, channel: ch, ciphertext: b64u(ct.slice(0, -1)), error: "unauthorised" },
      { description: "request seq 1 presented as seq 2", key: hb.c2s, kind: "request", seq: 2, channel: ch, ciphertext: b64u(ct), error: "unauthorised" },
      { description: "request presented under another channel id (AAD)", key: hb.c2s, kind: "request", seq: 1, channel: t2.inputs.grant.channel, ciphertext: b64u(ct), error: "unauthorised" },
      { description: "request opened with the response kind", key: hb.c2s, kind: "response", seq: 1, channel: ch, ciphertext: b64u(ct), error: "unauthorised" },
      { description: "request reflected back as a response (s2c key)", key: hb.s2c, kind: "response", seq: 1, channel: ch, ciphertext: b64u(ct), error: "unauthorised" },
      { description: "request of the handshake binding replayed on the resumed binding", key: rb.c2s, kind: "request", seq: 1, channel: ch, ciphertext: b64u(ct), error: "unauthorised" },
      {
        description: "response seq 1 presented as the response to seq 2",
        key: hb.s2c,
        kind: "response",
        seq: 2,
        channel: ch,
        ciphertext: b64u(unhex(resp1.ciphertext)),
        error: "unauthorised",
      },
      { description: "ChaCha20-Poly1305 request with one ciphertext bit flipped", channel_type: CC, key: cb.c2s, kind: "request", seq: 1, channel: cb.channel, ciphertext: b64u(flip(cct, 0)), error: "unauthorised" },
      { description: "ChaCha20-Poly1305 request with one tag bit flipped", channel_type: CC, key: cb.c2s, kind: "request", seq: 1, channel: cb.channel, ciphertext: b64u(flip(cct, cct.length - 1)), error: "unauthorised" },
      { description: "ChaCha20-Poly1305 request opened as a response (kind in the nonce)", channel_type: CC, key: cb.c2s, kind: "response", seq: 1, channel: cb.channel, ciphertext: b64u(cct), error: "unauthorised" },
      {
        description: "ChaCha20-Poly1305 request opened under AES-256-GCM with the same key (the type is not interchangeable)",
        key: cb.c2s,
        kind: "request",
        seq: 1,
        channel: cb.channel,
        ciphertext: b64u(cct),
        error: "unauthorised",
      },
      {
        description: "response presented as a push",
        key: hb.s2c,
        kind: "push",
        seq: 1,
        channel: ch,
        ciphertext: b64u(unhex(resp1.ciphertext)),
        error: "unauthorised",
      },
    ],
    challenges: [
      { description: "server nonce replaced", transcript: t1.name, challenge: withChal({ nonce: b64u(run(0x99, 32)) }), error: "protocol", error_pinned: "protocol" },
      { description: "enc replaced", transcript: t1.name, challenge: withChal({ enc: b64u(run(0x99, 32)) }), error: "protocol", error_pinned: "protocol" },
      {
        description: "a channel type chosen that the hello did not offer (ChaCha20-Poly1305 for an AES-256-GCM-only hello)",
        transcript: t1.name,
        challenge: withChal({ channel_type: CC }),
        error: "protocol",
        error_pinned: "protocol",
      },
      {
        description: "channel type downgraded in transit (AES-256-GCM for ChaCha20-Poly1305): the signature covers the choice",
        transcript: tc.name,
        challenge: JSON.stringify({ ...(JSON.parse(tc.frames.challenge) as object), channel_type: ChannelType.aes256gcm }),
        error: "protocol",
        error_pinned: "protocol",
      },
      { description: "source replaced", transcript: t1.name, challenge: withChal({ source: "wss://evil.example/" }), error: "protocol", error_pinned: "protocol" },
      {
        // Without a pin the client checks the signature against the key the challenge names; with one, the pin fails first (§5.2 step 1).
        description: "server_key replaced by another valid key",
        transcript: t1.name,
        challenge: withChal({ server_key: { type: "Ed25519", data: edSpki } }),
        error: "protocol",
        error_pinned: "server_key_mismatch",
      },
      { description: "signature bit flipped", transcript: t1.name, challenge: withChal({ signature: b64u(flip(unhex(t1.intermediate.server_signature), 0)) }), error: "protocol", error_pinned: "protocol" },
      {
        description: "chosen features stripped (downgrade)",
        transcript: t2.name,
        challenge: JSON.stringify({ ...(JSON.parse(t2.frames.challenge) as object), features: [] }),
        error: "protocol",
        error_pinned: "protocol",
      },
      {
        description: "a feature chosen that the hello did not offer",
        transcript: t2.name,
        challenge: JSON.stringify({ ...(JSON.parse(t2.frames.challenge) as object), features: ["x-vector-a", "x-vector-c"] }),
        error: "protocol",
        error_pinned: "protocol",
      },
      {
        description: "challenge of another handshake (same server and choices)",
        transcript: t1.name,
        challenge: ts.find((t) => t.name === "p256-identity")!.frames.challenge,
        error: "protocol",
        error_pinned: "protocol",
      },
    ],
    proofs: [
      {
        description: "hello bytes re-serialised with one added space: the transcript is the exact bytes",
        transcript: t1.name,
        hello: t1.frames.hello.replace('"hello",', '"hello", '),
        signature: t1.intermediate.client_signature,
        error: "unauthorised",
      },
      {
        description: "channel_types changed in transit (downgrade): the proof covers the hello as sent",
        transcript: t2.name,
        hello: t2.frames.hello.replace('["DES","AES"]', '["AES"]'),
        signature: t2.intermediate.client_signature,
        error: "unauthorised",
      },
      { description: "proof of another handshake by the same identity", transcript: t2.name, hello: t2.frames.hello, signature: t1.intermediate.client_signature, error: "unauthorised" },
    ],
    established: [
      {
        description: "response with one bit flipped",
        transcript: t1.name,
        established: JSON.stringify({ ...est, response: b64u(flip(estCt, 5)) }),
        error: "protocol",
      },
      { description: "established of another handshake", transcript: t1.name, established: ts.find((t) => t.name === "p256-identity")!.frames.established, error: "protocol" },
      ...(await badGrants(t1)).map((g) => ({ ...g, transcript: t1.name, error: "protocol" as const })),
    ],
  };
}

/** Builds the whole vector file from the fixed inputs. */
export async function generate(): Promise<VectorFile> {
  const keys = await keyVectors();
  const transcripts: TranscriptVector[] = [];
  for (const t of TRANSCRIPTS) transcripts.push(await transcriptVector(t));
  const kemIds = (k: KemType) => {
    const s = hpkeSuite(k);
    return { kem_id: s.kem.id, kdf_id: s.kdf.id, aead_id: s.aead.id };
  };
  const kemIdsLoaded = async (k: KemType) => {
    await loadHpkeSuite(k);
    return kemIds(k);
  };
  const b64Valid = [new Uint8Array(0), run(0xf8, 1), run(0xfb, 2), run(0xfa, 3), run(0xf9, 4), run(0x3e, 6)];
  return {
    protocol: "psimbols",
    version: 1,
    note: "Generated by test/vectors/generate.ts; checked by test/vectors/conformance.test.ts. See docs/PROTOCOL.md §14. The private keys are public test keys.",
    labels: { hpke_info: LABEL_INFO, server_signature: LABEL_SERVER_SIG, client_signature: LABEL_CLIENT_SIG, grant_aad: LABEL_GRANT_AAD, c2s: LABEL_C2S, s2c: LABEL_S2C },
    hpke_suites: { X25519: kemIds("X25519"), "P-256": kemIds("P-256"), "X-Wing": await kemIdsLoaded("X-Wing") },
    max_seq: MAX_SEQ,
    max_seq_by_type: MAX_SEQ_BY_TYPE,
    keys,
    base64url: {
      valid: b64Valid.map((b) => ({ hex: hex(b), text: b64u(b) })),
      invalid: [
        { text: "-w==", why: "padding" },
        { text: "+w", why: "standard alphabet" },
        { text: "_/", why: "standard alphabet" },
        { text: "-x", why: "non-zero trailing bits" },
        { text: "AAB", why: "non-zero trailing bits" },
        { text: "AAAAA", why: "length 1 mod 4" },
        { text: "AA AA", why: "whitespace" },
        { text: "AA\nAA", why: "line break" },
      ],
    },
    lp: [
      { parts: [], hex: "" },
      { parts: [{ hex: "" }], hex: "00000000" },
      { parts: [{ utf8: "psimbols/1 c2s" }], hex: hex(lp("psimbols/1 c2s")) },
      { parts: [{ utf8: "é" }, { hex: "00ff" }], hex: hex(lp("é", new Uint8Array([0, 0xff]))) },
      { parts: [{ hex: hex(run(0, 300)) }], hex: hex(lp(run(0, 300))) },
    ],
    signatures: await signatureVectors(),
    transcripts,
    accepted_frames: acceptedFrames(transcripts),
    negative: await negativeVectors(keys, transcripts),
  };
}

/** The file's text: two-space JSON and a final newline. */
export function serialise(v: VectorFile): string {
  return JSON.stringify(v, null, 2) + "\n";
}

const OUT = fileURLToPath(new URL("../../../test/vectors/v1.json", import.meta.url));

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--resign")) {
    const resign = new Map<string, Hex>();
    for (const t of TRANSCRIPTS) await transcriptVector(t, resign);
    await signatureVectors(resign);
    console.log("const RANDOMIZED_SIGNATURES: Record<string, Hex> = {");
    for (const [k, v] of [...resign].sort()) console.log(`  ${JSON.stringify(k)}: ${JSON.stringify(v)},`);
    console.log("};");
    return 0;
  }
  const text = serialise(await generate());
  if (argv.includes("--check")) {
    let old: string;
    try {
      old = await readFile(OUT, "utf8");
    } catch {
      console.error(`error: cannot read ${OUT}\nhint: run "npm run vectors" to create it`);
      return 1;
    }
    if (old === text) {
      console.log(`ok: ${OUT} matches the generator`);
      return 0;
    }
    const a = old.split("\n");
    const b = text.split("\n");
    const i = a.findIndex((l, j) => l !== b[j]);
    const line = i < 0 ? Math.min(a.length, b.length) : i;
    console.error(`error: ${OUT} differs from the generator at line ${line + 1}`);
    console.error(`  committed: ${(a[line] ?? "<end of file>").slice(0, 160)}`);
    console.error(`  generated: ${(b[line] ?? "<end of file>").slice(0, 160)}`);
    console.error(`hint: if the protocol changed on purpose, run "npm run vectors" and review the diff`);
    return 1;
  }
  await writeFile(OUT, text);
  console.log(`wrote ${OUT}`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
