/**
 * Vectors of the key lifecycle features (docs/PROTOCOL.md §5.6 server-key-next,
 * §5.7 identity-move, §14): everything is derived from fixed inputs (Ed25519
 * keys from fixed seeds, fixed nonces and HPKE ekm), so the same code that
 * writes `key-lifecycle.json` (`node dist/test/vectors/key-lifecycle.js --write`)
 * rebuilds it in the conformance test, byte for byte.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { KeyType, type SigningKey, importPkcs8 } from "../../shared/crypto.js";
import { b64u, fromUtf8 } from "../../shared/encoding.js";
import { type Hello, decodeClientFrame } from "../../shared/frames.js";
import { acceptHello, answerChallenge, createHello, sealGrant } from "../../shared/handshake.js";
import { LABEL_MOVE } from "../../shared/identity-move.js";
import { LABEL_NEXT_KEY, nextKeyStatement, signNextKey } from "../../shared/server-key-next.js";

/**
 * One handshake of the file: inputs, frames, and the intermediate values of §5.2
 * (`t_info`, the HPKE `info`, the grant AAD), then the grant and its `established`.
 */
export interface LifecycleHandshake {
  nonce_c_hex: string;
  kem_ikm_hex: string;
  nonce_s_hex: string;
  ekm_hex: string;
  hello: string;
  challenge: string;
  proof: string;
  t_info_hex: string;
  info_hex: string;
  grant_aad_hex: string;
  grant: { channel: string; key: { type: "AES-256-GCM"; data: string }; valid_until: string; ttl: number };
  established: string;
}

/** The typed shape of key-lifecycle.json. `pkcs8` and `spki` are base64url (§2.2), as every binary value in frames. */
export interface KeyLifecycleVectors {
  note: string;
  labels: { next_server_key: string; identity_move: string };
  keys: Record<string, { seed_hex: string; pkcs8: string; spki: string; fingerprint: string }>;
  server_key_next: {
    current: string;
    next: string;
    source: string;
    not_before: string;
    statement_hex: string;
    next_key: { key: { type: string; data: string }; not_before: string; signature: string };
    handshake: LifecycleHandshake;
  };
  identity_move: {
    identity: string;
    move_to: string;
    server_key: string;
    source: string;
    handshake: LifecycleHandshake;
  };
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const bytes = (h: string) => new Uint8Array(Buffer.from(h, "hex"));
/** `n` bytes counting up from `start` (mod 256), as the v1 vectors' fixed inputs. */
const run = (start: number, n = 32) => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
/** PKCS#8 of an Ed25519 key: RFC 8410's fixed prefix, then the 32-byte seed. */
const ED25519_PKCS8_PREFIX = "302e020100300506032b657004220420";

const SEEDS: Record<string, string> = {
  "server-current": hex(run(0x10)),
  "server-next": hex(run(0x30)),
  identity: hex(run(0x50)),
  "identity-next": hex(run(0x70)),
};
const SOURCE = "wss://psimbols.example.com/";
const NOT_BEFORE = "2027-01-31T00:00:00Z";

async function key(name: string): Promise<SigningKey> {
  return importPkcs8(KeyType.ed25519, bytes(ED25519_PKCS8_PREFIX + SEEDS[name]!), true);
}

async function transcript(
  identity: SigningKey,
  server: SigningKey,
  base: number,
  hello: { features: string[]; moveTo?: SigningKey },
  offer: { next?: Awaited<ReturnType<typeof signNextKey>>; moves?: boolean },
): Promise<LifecycleHandshake> {
  const [nonceC, kemIkm, nonceS, ekm] = [run(base), run(base + 0x20), run(base + 0x40), run(base + 0x60)];
  const h = await createHello(identity, { features: hello.features, ...(hello.moveTo ? { moveTo: hello.moveTo } : {}), fixed: { nonceC, kemIkm } });
  const { challenge, pending } = await acceptHello(h.bytes, decodeClientFrame(fromUtf8(h.bytes)) as Hello, { key: server, source: SOURCE, features: [], ...offer }, { nonceS, ekm });
  const { proof, state } = await answerChallenge(h, challenge, () => {});
  // T_chal = T_info || LP(enc) (§5.2)
  const tInfo = pending.tChal.subarray(0, pending.tChal.length - 4 - state.enc.length);
  const grant = {
    channel: b64u(run(base + 0x10, 16)),
    key: { type: "AES-256-GCM" as const, data: b64u(run(base + 0x30)) },
    valid_until: "2030-01-01T01:00:00.000Z",
    ttl: 3600,
  };
  const established = await sealGrant(pending, Buffer.from(proof.signature, "base64url"), grant, SOURCE);
  return {
    nonce_c_hex: hex(nonceC),
    kem_ikm_hex: hex(kemIkm),
    nonce_s_hex: hex(nonceS),
    ekm_hex: hex(ekm),
    hello: fromUtf8(h.bytes),
    challenge: JSON.stringify(challenge),
    proof: JSON.stringify(proof),
    t_info_hex: hex(tInfo),
    info_hex: hex(state.info),
    grant_aad_hex: hex(state.aad),
    grant,
    established: JSON.stringify(established),
  };
}

/** Builds the whole vector file from the fixed inputs. */
export async function buildKeyLifecycleVectors(): Promise<KeyLifecycleVectors> {
  const keys: KeyLifecycleVectors["keys"] = {};
  for (const name of Object.keys(SEEDS)) {
    const k = await key(name);
    keys[name] = { seed_hex: SEEDS[name]!, pkcs8: b64u(bytes(ED25519_PKCS8_PREFIX + SEEDS[name]!)), spki: b64u(k.public.spki), fingerprint: k.public.fingerprint };
  }
  const [current, next, identity, identityNext] = [await key("server-current"), await key("server-next"), await key("identity"), await key("identity-next")];
  const nextKey = await signNextKey(current, next.public, SOURCE, NOT_BEFORE);
  return {
    note: "Generated by test/vectors/key-lifecycle.ts --write; checked by test/vectors/key-lifecycle.test.ts. See docs/PROTOCOL.md §5.6, §5.7, §14. The private keys are public test keys; pkcs8 and spki are base64url (§2.2).",
    labels: { next_server_key: LABEL_NEXT_KEY, identity_move: LABEL_MOVE },
    keys,
    server_key_next: {
      current: "server-current",
      next: "server-next",
      source: SOURCE,
      not_before: NOT_BEFORE,
      statement_hex: hex(nextKeyStatement(SOURCE, current.public, next.public, NOT_BEFORE)),
      next_key: nextKey,
      handshake: await transcript(identity, current, 0x00, { features: ["server-key-next"] }, { next: nextKey }),
    },
    identity_move: {
      identity: "identity",
      move_to: "identity-next",
      server_key: "server-current",
      source: SOURCE,
      handshake: await transcript(identity, current, 0x80, { features: [], moveTo: identityNext }, { moves: true }),
    },
  };
}

export const KEY_LIFECYCLE_PATH = fileURLToPath(new URL("../../../test/vectors/key-lifecycle.json", import.meta.url));

if (process.argv.includes("--write") && process.argv[1] === fileURLToPath(import.meta.url)) {
  const v = await buildKeyLifecycleVectors();
  writeFileSync(KEY_LIFECYCLE_PATH, JSON.stringify(v, null, 2) + "\n");
  console.log(`wrote ${KEY_LIFECYCLE_PATH}`);
}
