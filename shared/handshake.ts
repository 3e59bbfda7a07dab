/**
 * The four-frame handshake, both sides, as pure async functions over frames
 * (docs/PROTOCOL.md §5). Transport, store and limits live in server/ and client/.
 *
 * Transcript (PROTOCOL.md §5.2), with LP the length prefix of encoding.ts:
 *   T_info = LP(hello bytes as sent) || LP(source) || LP(server SPKI) || LP(channel_type)
 *            || LP(server nonce) || LP(features joined by ",")
 *            [|| LP(next SPKI) || LP(not_before) || LP(statement sig)   with server-key-next, §5.6]
 *   info   = SHA-256(LP(LABEL_INFO) || T_info)                  HPKE info
 *   T_chal = T_info || LP(enc)
 *   server signs  LP(LABEL_SERVER_SIG) || SHA-256(T_chal)
 *   client signs  LP(LABEL_CLIENT_SIG) || SHA-256(T_chal || LP(sig_s))
 *   grant AAD     LP(LABEL_GRANT_AAD)  || SHA-256(T_chal || LP(sig_s) || LP(sig_c))
 * The hello is signed as the exact bytes on the wire, never re-serialised.
 */
import { ErrorCode, PsimbolsError } from "./errors.js";
import { b64u, concat, fromB64u, fromUtf8, lp, utf8, wipe } from "./encoding.js";
import {
  type PublicKey,
  type SigningKey,
  handshakeCrypto,
  importPublicKey,
  inPointList,
  randomBytes,
  sha256,
  sign,
  verify,
  wirePublicKey,
} from "./crypto.js";
import {
  channelTypeFor,
  channelTypes,
  type Challenge,
  type ChannelType,
  type Established,
  type Grant,
  type Hello,
  KemType,
  PROTOCOL_VERSION,
  SERVER_NONCE_BYTES,
  ChannelType as CT,
  decodeGrant,
  Feature,
  kemTypes,
  type NextKeyWire,
} from "./frames.js";
import { type NextKey, nextKeyTranscript, verifyNextKey } from "./server-key-next.js";
import { signMove, verifyMove } from "./identity-move.js";
import { engineChannelTypes } from "./channel.js";
import { type HpkeSender, type KemKeyPair, type KemPublicKey, KEM_PUBLIC_BYTES } from "./hpke.js";

/** The longest KEM public key (X-Wing's 1216 bytes). */
const MAX_KEM_PUBLIC_BYTES = Math.max(...Object.values(KEM_PUBLIC_BYTES));

export const LABEL_INFO = "psimbols/1 hpke info";
export const LABEL_SERVER_SIG = "psimbols/1 server signature";
export const LABEL_CLIENT_SIG = "psimbols/1 client signature";
export const LABEL_GRANT_AAD = "psimbols/1 grant";
/** Default client nonce length (bytes). */
export const CLIENT_NONCE_BYTES = 32;

function transcriptInfo(helloBytes: Uint8Array, c: Omit<Challenge, "enc" | "signature" | "type">, serverSpki: Uint8Array): Uint8Array {
  const t = lp(helloBytes, c.source, serverSpki, c.channel_type, fromB64u(c.nonce, "nonce"), c.features.join(","));
  // §5.6: with server-key-next chosen, the statement is part of the transcript too
  return c.next_key && c.features.includes(Feature.serverKeyNext) ? concat(t, nextKeyTranscript(c.next_key)) : t;
}
const signInput = async (label: string, t: Uint8Array) => concat(lp(label), await sha256(t));

/**
 * Encodings of the X25519 points of small order (RFC 7748 §6.1: their DH
 * output is all zeros for every private key), bit 255 ignored as X25519
 * does: libsodium's blocklist. Refused here, before any engine runs, as
 * well as by the engines' own all-zero check (RFC 9180 §7.1.4).
 */
const X25519_LOW_ORDER: readonly string[] = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/** Where X-Wing's X25519 share starts in its public key (ML-KEM-768's encapsulation key is 1184 bytes). */
const XWING_X25519_AT = 1184;

/** Imports a client's ephemeral public key on the installed engine, mapping every failure to `bad_request`. */
async function importKemPublic(kem: KemType, raw: Uint8Array): Promise<KemPublicKey> {
  if (raw.length !== KEM_PUBLIC_BYTES[kem]) {
    throw new PsimbolsError(ErrorCode.badRequest, `"kem.data" expected ${KEM_PUBLIC_BYTES[kem]} bytes for ${kem}`);
  }
  try {
    return await handshakeCrypto().hpke.importPublicKey(kem, raw);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `"kem.data" is not a valid ${kem} public key`, { cause });
  }
}

/** SetupBaseS to the client's ephemeral key on the installed engine; an unusable key is `bad_request`. */
async function hpkeSender(pk: KemPublicKey, info: Uint8Array, ekm?: Uint8Array): Promise<HpkeSender> {
  const unusable = (cause?: unknown) => new PsimbolsError(ErrorCode.badRequest, `"kem.data" is not a usable ${pk.kem} public key`, { cause });
  // A low-order or otherwise unusable ephemeral key (RFC 9180 §7.1.4: DH output all zero).
  if (pk.kem === KemType.x25519 && inPointList(pk.raw, X25519_LOW_ORDER)) throw unusable();
  // X-Wing's X25519 share (its last 32 bytes, PROTOCOL.md §5.3.1): the draft does not ask for
  // this check, ML-KEM carries the hybrid alone then; psimbols refuses such a key all the same.
  // ML-KEM's own modulus check (FIPS 203 §7.2) runs in the engine's Encap and throws.
  if (pk.kem === KemType.xwing && inPointList(pk.raw.subarray(XWING_X25519_AT), X25519_LOW_ORDER)) throw unusable();
  try {
    return await handshakeCrypto().hpke.createSender(pk, info, ekm);
  } catch (cause) {
    throw unusable(cause);
  }
}

// ------------------------------------------------------------------ server

/** What the server offers. */
export interface ServerOffer {
  /** The current server key (replaced in place when a node promotes its next key). */
  key: SigningKey;
  source: string;
  /**
   * The current key's statement naming its successor (§5.6), carried to clients
   * that offer `server-key-next`; signed for this offer's key and source.
   */
  next?: NextKeyWire | undefined;
  /** The server moves identities (§5.7): `identity-move` is chosen for a hello that asks. */
  moves?: boolean;
  /** Features the server supports; the challenge carries the intersection with the hello's. */
  features?: readonly string[];
  /** Channel types the server accepts (any order: the client's order decides, §5.1). Default: every type. */
  channelTypes?: readonly ChannelType[];
  /** KEM types accepted in a hello; default all of {@link kemTypes}, X-Wing included (PROTOCOL.md §5.3.1). */
  kems?: readonly KemType[];
}

/** A handshake between challenge and proof: lives in one connection's memory only. */
export interface PendingHandshake {
  readonly identity: PublicKey;
  readonly channelType: ChannelType;
  readonly features: string[];
  readonly nonceC: Uint8Array;
  readonly nonceS: Uint8Array;
  readonly tChal: Uint8Array;
  readonly serverSig: Uint8Array;
  readonly sender: HpkeSender;
  /** The identity key the hello asks to move to (§5.7); its signature comes with the proof. */
  readonly moveTo?: PublicKey | undefined;
}

/**
 * Picks the channel type (PROTOCOL.md §5.1): the first of the client's offered
 * names, in the client's order, that stands for a type the server accepts;
 * names it does not know are skipped. None: `unsupported`, naming what the
 * server accepts.
 */
export function chooseChannelType(offered: readonly string[], accepted: readonly ChannelType[] = channelTypes): ChannelType {
  for (const t of offered) {
    const c = channelTypeFor(t);
    if (c && accepted.includes(c)) return c;
  }
  const names = accepted.map((t) => (t === CT.aes256gcm ? `${t} (alias AES)` : t)).join(", ");
  throw new PsimbolsError(ErrorCode.unsupported, `no acceptable channel type offered; accepted: ${names}`);
}

/**
 * Answers a decoded hello with a signed challenge. Changes nothing outside the
 * returned pending state. `helloBytes` are the exact bytes received.
 * Test vectors pass `fixed` to make the output deterministic.
 * @throws PsimbolsError `unsupported` or `bad_request`.
 */
export async function acceptHello(
  helloBytes: Uint8Array,
  hello: Hello,
  offer: ServerOffer,
  fixed?: { nonceS: Uint8Array; ekm: Uint8Array },
): Promise<{ challenge: Challenge; pending: PendingHandshake }> {
  if (hello.version !== PROTOCOL_VERSION) {
    throw new PsimbolsError(ErrorCode.unsupported, `protocol version not supported; accepted: ${PROTOCOL_VERSION}`);
  }
  const channelType = chooseChannelType(hello.channel_types, offer.channelTypes);
  const kem = hello.kem.type as KemType;
  const kems = offer.kems ?? kemTypes;
  if (!kems.includes(kem)) throw new PsimbolsError(ErrorCode.unsupported, `kem.type not supported; accepted: ${kems.join(", ")}`);
  const kemPub = await importKemPublic(kem, fromB64u(hello.kem.data, "kem.data", MAX_KEM_PUBLIC_BYTES));
  const identity = await importPublicKey(hello.public_key);
  // §5.7: move_to and identity-move come together, or not at all
  const asksMove = hello.features.includes(Feature.identityMove);
  if (asksMove !== (hello.move_to !== undefined)) {
    throw new PsimbolsError(ErrorCode.badRequest, `"move_to" and the identity-move feature go together`);
  }
  const moveTo = hello.move_to ? await importPublicKey(hello.move_to, "move_to") : undefined;
  if (moveTo && moveTo.fingerprint === identity.fingerprint) throw new PsimbolsError(ErrorCode.badRequest, `"move_to" is the hello's own public_key`);
  const nonceC = fromB64u(hello.nonce, "nonce");
  const nonceS = fixed?.nonceS ?? randomBytes(SERVER_NONCE_BYTES);
  const serverFeatures = offer.features ?? [];
  // Read once: a promotion may replace the offer's key and statement between awaits.
  const key = offer.key;
  const next = offer.next;
  const features = hello.features.filter(
    (f) => serverFeatures.includes(f) || (f === Feature.serverKeyNext && next !== undefined) || (f === Feature.identityMove && offer.moves === true),
  );
  const pub = wirePublicKey(key.public);
  const core: Omit<Challenge, "enc" | "signature" | "type"> = { source: offer.source, server_key: pub, channel_type: channelType, nonce: b64u(nonceS), features };
  if (next && features.includes(Feature.serverKeyNext)) core.next_key = next;
  const tInfo = transcriptInfo(helloBytes, core, key.public.spki);
  const info = await sha256(concat(lp(LABEL_INFO), tInfo));
  const sender = await hpkeSender(kemPub, info, fixed?.ekm);
  const enc = sender.enc;
  const tChal = concat(tInfo, lp(enc));
  const serverSig = await sign(key, await signInput(LABEL_SERVER_SIG, tChal));
  const challenge: Challenge = { type: "challenge", ...core, enc: b64u(enc), signature: b64u(serverSig) };
  const movable = moveTo && features.includes(Feature.identityMove) ? moveTo : undefined;
  return { challenge, pending: { identity, channelType, features, nonceC, nonceS, tChal, serverSig, sender, moveTo: movable } };
}

/** True when `signature` is the identity key's signature over this handshake's transcript. */
export async function verifyProof(p: PendingHandshake, signature: Uint8Array): Promise<boolean> {
  return verify(p.identity, signature, await signInput(LABEL_CLIENT_SIG, concat(p.tChal, lp(p.serverSig))));
}

/** True when `signature` is the new key's signature over this handshake (§5.7); false when no move was asked. */
export async function verifyMoveProof(p: PendingHandshake, signature: Uint8Array): Promise<boolean> {
  return p.moveTo !== undefined && verifyMove(p.moveTo, p.tChal, p.serverSig, signature);
}

/** Seals the grant for a verified proof into the `established` frame. */
export async function sealGrant(p: PendingHandshake, proofSig: Uint8Array, grant: Grant, source: string): Promise<Established> {
  const aad = concat(lp(LABEL_GRANT_AAD), await sha256(concat(p.tChal, lp(p.serverSig), lp(proofSig))));
  const pt = utf8(JSON.stringify(grant));
  let ct: Uint8Array;
  try {
    ct = await p.sender.seal(pt, aad);
  } finally {
    wipe(pt); // the grant carries the channel key
  }
  return { type: "established", source, response: b64u(ct) };
}

// ------------------------------------------------------------------ client

export interface HelloOptions {
  /** Offered in this order of preference. Default: the installed engine's ({@link engineChannelTypes}). */
  channelTypes?: readonly string[];
  kem?: KemType;
  features?: readonly string[];
  /** Move the identity to this key in this handshake (§5.7): the hello names it, the proof carries its signature. */
  moveTo?: SigningKey;
  /** Test vectors only: fixed client nonce and ephemeral key material. */
  fixed?: { nonceC: Uint8Array; kemIkm: Uint8Array };
}

/** Client state after sending the hello. */
export interface ClientHello {
  readonly identity: SigningKey;
  readonly bytes: Uint8Array;
  readonly hello: Hello;
  readonly nonceC: Uint8Array;
  readonly kem: KemType;
  /** The ephemeral KEM key pair; dropped with this state once the grant is open (forward secrecy). */
  readonly kemPair: KemKeyPair;
  /** The key this handshake moves the identity to (§5.7). */
  readonly moveTo?: SigningKey | undefined;
}

/** Client state after sending the proof. */
export interface ClientProof {
  readonly hello: ClientHello;
  readonly nonceS: Uint8Array;
  readonly serverKey: PublicKey;
  readonly features: string[];
  /** The successor key the server's verified statement named (§5.6), when it sent one. */
  readonly nextKey: NextKey | undefined;
  /** The channel type the server chose (signed in the transcript). */
  readonly channelType: ChannelType;
  readonly aad: Uint8Array;
  readonly enc: Uint8Array;
  readonly info: Uint8Array;
}

/** Builds a hello with a fresh ephemeral KEM key. Returns the exact bytes to send. */
export async function createHello(identity: SigningKey, o: HelloOptions = {}): Promise<ClientHello> {
  const kem = o.kem ?? KemType.x25519;
  const hpke = handshakeCrypto().hpke;
  const features = [...(o.features ?? [])];
  if (o.moveTo && !features.includes(Feature.identityMove)) features.push(Feature.identityMove);
  // A server refuses a hello that names a feature twice (PROTOCOL.md §4): say so here, before sending it.
  if (new Set(features).size !== features.length) throw new PsimbolsError(ErrorCode.badRequest, `"features" names a feature more than once`);
  const kemPair = o.fixed ? await hpke.deriveKeyPair(kem, o.fixed.kemIkm) : await hpke.generateKeyPair(kem);
  const nonceC = o.fixed?.nonceC ?? randomBytes(CLIENT_NONCE_BYTES);
  const hello: Hello = {
    type: "hello",
    version: PROTOCOL_VERSION,
    public_key: wirePublicKey(identity.public),
    channel_types: [...(o.channelTypes ?? engineChannelTypes())],
    kem: { type: kem, data: b64u(kemPair.publicKey) },
    nonce: b64u(nonceC),
    features,
  };
  if (o.moveTo) hello.move_to = wirePublicKey(o.moveTo.public);
  return { identity, bytes: utf8(JSON.stringify(hello)), hello, nonceC, kem, kemPair, moveTo: o.moveTo };
}

/**
 * Checks a challenge and signs the proof. `checkServerKey` enforces pinning
 * (throws `server_key_mismatch`); it runs before the signature is checked.
 * @throws PsimbolsError `protocol` when the server's signature or choices are wrong.
 */
export async function answerChallenge(
  h: ClientHello,
  c: Challenge,
  checkServerKey: (key: PublicKey) => void | Promise<void>,
): Promise<{ proof: { type: "proof"; signature: string; move_signature?: string }; state: ClientProof }> {
  const serverKey = await importPublicKey(c.server_key, "server_key");
  await checkServerKey(serverKey);
  if (!h.hello.channel_types.some((t) => channelTypeFor(t) === c.channel_type)) {
    throw new PsimbolsError(ErrorCode.protocol, "server chose a channel type that was not offered");
  }
  if (!c.features.every((f) => h.hello.features.includes(f))) {
    throw new PsimbolsError(ErrorCode.protocol, "server chose a feature that was not offered");
  }
  if (h.moveTo && !c.features.includes(Feature.identityMove)) {
    throw new PsimbolsError(ErrorCode.unsupported, "the server does not move identities (it did not choose identity-move)");
  }
  const withNext = c.features.includes(Feature.serverKeyNext);
  if (withNext && !c.next_key) throw new PsimbolsError(ErrorCode.protocol, "server chose server-key-next without a next_key statement");
  const tInfo = transcriptInfo(h.bytes, c, serverKey.spki);
  const enc = fromB64u(c.enc, "enc");
  const tChal = concat(tInfo, lp(enc));
  const serverSig = fromB64u(c.signature, "signature");
  if (!(await verify(serverKey, serverSig, await signInput(LABEL_SERVER_SIG, tChal)))) {
    throw new PsimbolsError(ErrorCode.protocol, "server signature over the challenge does not verify");
  }
  // §5.6: the statement is checked only once the transcript that carries it verified
  const nextKey = withNext && c.next_key ? await verifyNextKey(serverKey, c.source, c.next_key) : undefined;
  const sigC = await sign(h.identity, await signInput(LABEL_CLIENT_SIG, concat(tChal, lp(serverSig))));
  const aad = concat(lp(LABEL_GRANT_AAD), await sha256(concat(tChal, lp(serverSig), lp(sigC))));
  const info = await sha256(concat(lp(LABEL_INFO), tInfo));
  const moveSig = h.moveTo ? await signMove(h.moveTo, tChal, serverSig) : undefined;
  return {
    proof: { type: "proof", signature: b64u(sigC), ...(moveSig ? { move_signature: b64u(moveSig) } : {}) },
    state: { hello: h, nonceS: fromB64u(c.nonce, "nonce"), serverKey, features: c.features, channelType: c.channel_type, nextKey, aad, enc, info },
  };
}

/** Opens the grant. The caller drops `p` (and its ephemeral key) afterwards: forward secrecy. */
export async function openGrant(p: ClientProof, e: Established): Promise<{ grant: Grant; channelKey: Uint8Array }> {
  let pt: Uint8Array;
  try {
    pt = await p.hello.kemPair.open(p.enc, p.info, p.aad, fromB64u(e.response, "response"));
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.protocol, "grant does not open under the handshake's HPKE context", { cause });
  }
  let grant: Grant;
  try {
    grant = decodeGrant(fromUtf8(pt));
  } finally {
    wipe(pt);
  }
  if (grant.key.type !== p.channelType) {
    throw new PsimbolsError(ErrorCode.protocol, "the grant's key type is not the channel type of the challenge");
  }
  return { grant, channelKey: fromB64u(grant.key.data, "key.data") };
}
