/**
 * Conformance of shared/ with the protocol v1 test vectors (docs/PROTOCOL.md §14).
 *
 * Every vector in test/vectors/v1.json runs through the public functions of
 * shared/: recomputing from the fixed inputs gives exactly the stored frames,
 * the intermediate values are recomputed from the spec's formulas (not from
 * shared/'s private helpers), stored frames open and decode, and the negative
 * vectors fail with the documented code. The last tests run this whole file
 * again in child processes: with @peculiar/webcrypto as the WebCrypto provider
 * (a second implementation of every primitive), and with the node:crypto
 * handshake engine installed (node/handshake-crypto.ts, as on every
 * Node server and client).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { Crypto as PeculiarCrypto } from "@peculiar/webcrypto";
import { fileURLToPath } from "node:url";
import { b64u, concat, fromB64u, fromUtf8, lp, utf8 } from "../../shared/encoding.js";
import { ErrorCode, PsimbolsError, asProtocol } from "../../shared/errors.js";
import {
  fingerprint,
  handshakeCrypto,
  importPkcs8,
  importPublicKey,
  importSpki,
  sha256,
  subtle,
  useHandshakeCrypto,
  verify,
  type SigningKey,
} from "../../shared/crypto.js";
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
  type ClientHello,
  type ClientProof,
  type PendingHandshake,
} from "../../shared/handshake.js";
import { FrameKind, LABEL_C2S, LABEL_S2C, type TrafficKey, deriveTrafficKeys, frameNonce, openFrame, sealBinaryFrame, sealFrame, trafficKey } from "../../shared/channel.js";
import { nodeTrafficKey } from "../../node/aead.js";
import { SodiumTrafficKey, loadSodium } from "../../node/chacha.js";
import {
  ChannelType,
  MAX_SEQ,
  MAX_SEQ_BY_TYPE,
  applicationPushText,
  decodeClientBinary,
  decodeClientFrame,
  decodeGrant,
  decodeInnerPush,
  decodeInnerRequest,
  decodeInnerResponse,
  decodeServerBinary,
  decodeServerFrame,
  type Challenge,
  type Established,
  type Hello,
  type KemType,
} from "../../shared/frames.js";
import { hpkeSuite, loadHpkeSuite } from "../../shared/hpke.js";
import { generate, serialise, type ChannelFrameVector, type Side, type TranscriptVector, type VectorFile } from "./generate.js";
import { nodeHandshakeCrypto } from "../../node/handshake-crypto.js";

/**
 * `PSIMBOLS_WEBCRYPTO=peculiar` runs this whole file with @peculiar/webcrypto as
 * globalThis.crypto. The parent run starts it in a child process (last test),
 * so the provider is in place before shared/ or @hpke/core first touch
 * WebCrypto, and no other test file ever sees it.
 */
const PROVIDER = process.env.PSIMBOLS_WEBCRYPTO;
if (PROVIDER === "peculiar") {
  Object.defineProperty(globalThis, "crypto", { value: new PeculiarCrypto(), configurable: true, writable: true, enumerable: true });
} else if (PROVIDER !== undefined) {
  throw new Error(`PSIMBOLS_WEBCRYPTO: unknown provider ${JSON.stringify(PROVIDER)}; expected "peculiar"`);
}

/**
 * `PSIMBOLS_HANDSHAKE_CRYPTO=node` runs this whole file with the node:crypto
 * handshake engine installed (the parent run starts it in a child process).
 */
const ENGINE = process.env.PSIMBOLS_HANDSHAKE_CRYPTO;
if (ENGINE === "node") {
  if (PROVIDER !== undefined) throw new Error("PSIMBOLS_HANDSHAKE_CRYPTO=node runs on Node's own WebCrypto only");
  useHandshakeCrypto(nodeHandshakeCrypto);
} else if (ENGINE !== undefined) {
  throw new Error(`PSIMBOLS_HANDSHAKE_CRYPTO: unknown engine ${JSON.stringify(ENGINE)}; expected "node"`);
}

/**
 * Negative vectors that fail only on a given provider, because shared/ leaves a
 * check to the provider that this provider does not make. Keyed by description.
 */
const PROVIDER_ISSUES: Record<string, Record<string, string>> = {
  // (none left: importSpki checks the canonical SPKI prefix itself, and every KEM failure is bad_request)
  peculiar: {},
};
function providerIssue(description: string): string | undefined {
  return PROVIDER === undefined ? undefined : PROVIDER_ISSUES[PROVIDER]?.[description];
}

const V = JSON.parse(readFileSync(new URL("../../../test/vectors/v1.json", import.meta.url), "utf8")) as VectorFile;

// ------------------------------------------------------------------ helpers

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
function unhex(s: string): Uint8Array {
  return Uint8Array.from(s.match(/../g) ?? [], (x) => parseInt(x, 16));
}
function flip(b: Uint8Array, i: number): Uint8Array {
  const c = b.slice();
  c[i] = c[i]! ^ 0x01;
  return c;
}
const signInput = async (label: string, t: Uint8Array) => concat(lp(label), await sha256(t));

/** Awaits `fn` and asserts it throws a PsimbolsError with `code`. */
async function throwsCode(fn: () => unknown, code: ErrorCode, what: string): Promise<void> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PsimbolsError, `${what}: expected a PsimbolsError, got ${err === undefined ? "no error" : String(err)}`);
  assert.is((err as PsimbolsError).code, code, `${what}: error code`);
}

const signingKeys = new Map<string, SigningKey>();
async function key(name: string): Promise<SigningKey> {
  let k = signingKeys.get(name);
  if (!k) {
    const v = V.keys[name];
    if (!v?.pkcs8) throw new Error(`no private key ${name} in the vectors`);
    k = await importPkcs8(v.type, fromB64u(v.pkcs8, name, 8192), true);
    signingKeys.set(name, k);
  }
  return k;
}

function transcript(name: string): TranscriptVector {
  const t = V.transcripts.find((x) => x.name === name);
  if (!t) throw new Error(`no transcript ${name}`);
  return t;
}

/** Replays the client side up to the hello, from the fixed inputs. */
async function clientHello(t: TranscriptVector): Promise<ClientHello> {
  return createHello(await key(t.inputs.identity), {
    channelTypes: t.inputs.channel_types,
    kem: t.inputs.kem,
    features: t.inputs.hello_features,
    fixed: { nonceC: unhex(t.inputs.nonce_c), kemIkm: unhex(t.inputs.kem_ikm) },
  });
}

/** Replays the server side on the exact hello bytes `helloText` (the transcript's own by default). */
async function serverChallenge(t: TranscriptVector, helloText = t.frames.hello): Promise<{ challenge: Challenge; pending: PendingHandshake }> {
  const bytes = utf8(helloText);
  const hello = decodeClientFrame(helloText) as Hello;
  const offer = { key: await key(t.inputs.server_key), source: t.inputs.source, features: t.inputs.server_features };
  return acceptHello(bytes, hello, offer, { nonceS: unhex(t.inputs.nonce_s), ekm: unhex(t.inputs.ekm) });
}

/** The client's state after its proof, with the grant AAD of the stored proof (randomized for ECDSA/RSA). */
async function clientProof(t: TranscriptVector): Promise<ClientProof> {
  const h = await clientHello(t);
  const { state } = await answerChallenge(h, decodeServerFrame(t.frames.challenge) as Challenge, () => {});
  return { ...state, aad: unhex(t.intermediate.grant_aad) };
}

const pinned = (t: TranscriptVector) => (k: { spki: Uint8Array }) => {
  if (b64u(k.spki) !== V.keys[t.inputs.server_key]!.spki) throw new PsimbolsError(ErrorCode.serverKeyMismatch, "server key is not the pinned one");
};

const frameKind = (k: ChannelFrameVector["kind"]) => FrameKind[k];

/**
 * Keys of `type` from `raw` on every engine of this process that runs it: the
 * installed one for AES-256-GCM (WebCrypto, or node:crypto); libsodium (where
 * sodium-native loads) and node:crypto for ChaCha20-Poly1305, which WebCrypto lacks.
 */
async function engineKeys(raw: Uint8Array, type: ChannelType = ChannelType.aes256gcm): Promise<{ engine: string; key: TrafficKey }[]> {
  if (type === ChannelType.aes256gcm) return [{ engine: "installed", key: await trafficKey(raw, type) }];
  const out = [{ engine: "node:crypto", key: nodeTrafficKey(raw, type) }];
  if (await loadSodium()) out.push({ engine: "libsodium", key: new SodiumTrafficKey(raw) });
  return out;
}

// ------------------------------------------------------------- constants

test("the vector file is exactly what generate.ts produces (generate.js --check)", async () => {
  const text = readFileSync(new URL("../../../test/vectors/v1.json", import.meta.url), "utf8");
  assert.ok(serialise(await generate()) === text, "test/vectors/v1.json is stale: run node dist/test/vectors/generate.js --check");
});

test("spec labels, HPKE suite ids and MAX_SEQ match the vectors", async () => {
  assert.equal(V.labels, {
    hpke_info: LABEL_INFO,
    server_signature: LABEL_SERVER_SIG,
    client_signature: LABEL_CLIENT_SIG,
    grant_aad: LABEL_GRANT_AAD,
    c2s: LABEL_C2S,
    s2c: LABEL_S2C,
  });
  for (const kem of ["X25519", "P-256", "X-Wing"] as KemType[]) {
    const s = await loadHpkeSuite(kem);
    assert.equal({ kem_id: s.kem.id, kdf_id: s.kdf.id, aead_id: s.aead.id }, V.hpke_suites[kem], kem);
  }
  // RFC 9180 §7: DHKEM(X25519, HKDF-SHA256) 0x0020, DHKEM(P-256, HKDF-SHA256) 0x0010, HKDF-SHA256 0x0001, AES-256-GCM 0x0002;
  // X-Wing 0x647a (IANA HPKE KEM registry; PROTOCOL.md §5.3.1)
  assert.equal(V.hpke_suites, {
    X25519: { kem_id: 0x20, kdf_id: 1, aead_id: 2 },
    "P-256": { kem_id: 0x10, kdf_id: 1, aead_id: 2 },
    "X-Wing": { kem_id: 0x647a, kdf_id: 1, aead_id: 2 },
  });
  assert.is(V.max_seq, MAX_SEQ);
  assert.equal(V.max_seq_by_type, MAX_SEQ_BY_TYPE);
  assert.is(MAX_SEQ_BY_TYPE["ChaCha20-Poly1305"], 2 ** 32 - 1);
  assert.is(MAX_SEQ, 2 ** 24);
});

// ------------------------------------------------------------- encodings

test("base64url vectors encode and decode canonically", () => {
  for (const v of V.base64url.valid) {
    assert.is(b64u(unhex(v.hex)), v.text);
    assert.is(hex(fromB64u(v.text, "x")), v.hex);
  }
});

test("base64url refuses padding, the standard alphabet, whitespace and non-canonical encodings", async () => {
  for (const v of V.base64url.invalid) await throwsCode(() => fromB64u(v.text, "x"), ErrorCode.badRequest, `${JSON.stringify(v.text)} (${v.why})`);
});

test("LP vectors", () => {
  for (const v of V.lp) {
    const parts = v.parts.map((p) => ("utf8" in p ? p.utf8 : unhex(p.hex)));
    assert.is(hex(lp(...parts)), v.hex);
  }
});

// ------------------------------------------------------------------ keys

test("PKCS#8 keys import to the stored SPKI, and fingerprints are SHA256: + base64 of the SPKI digest", async () => {
  for (const [name, v] of Object.entries(V.keys)) {
    const spki = fromB64u(v.spki, name, 8192);
    if (v.pkcs8) assert.is(b64u((await key(name)).public.spki), v.spki, name);
    assert.is(await fingerprint(spki), v.fingerprint, name);
    // independently of shared/: node:crypto and standard base64 without '='
    assert.is("SHA256:" + createHash("sha256").update(spki).digest("base64").replace(/=+$/, ""), v.fingerprint, name);
    if (name !== "rsa1024-too-small") assert.is((await importSpki(v.type, spki)).fingerprint, v.fingerprint, name);
  }
});

test("verify-only signature vectors (Ed25519, ECDSA P1363, RSA-PSS saltLength 32)", async () => {
  for (const s of V.signatures) {
    const k = V.keys[s.key]!;
    const pub = await importSpki(k.type, fromB64u(k.spki, "spki", 8192));
    assert.is(await verify(pub, unhex(s.signature), unhex(s.message)), s.valid, s.description);
  }
});

for (const v of V.negative.public_keys) {
  const issue = v.known_issue ?? providerIssue(v.description);
  (issue ? test.skip : test)(`refuses the public key with ${v.error}: ${v.description}${issue ? ` (KNOWN ISSUE: ${issue})` : ""}`, () =>
    throwsCode(() => importPublicKey(v.key), v.error as ErrorCode, v.description),
  );
}

// ------------------------------------------------------------ transcripts

for (const t of V.transcripts) {
  test(`${t.name}: the client builds the exact hello from the fixed inputs`, async () => {
    const h = await clientHello(t);
    assert.is(fromUtf8(h.bytes), t.frames.hello);
    assert.is(hex(fromB64u(h.hello.kem.data, "kem.data")), t.intermediate.kem_public);
  });

  test(`${t.name}: the server answers the exact hello bytes with the exact challenge`, async () => {
    const { challenge } = await serverChallenge(t);
    assert.is(JSON.stringify(challenge), t.frames.challenge);
  });

  test(`${t.name}: transcript values follow the formulas of PROTOCOL.md §5.2`, async () => {
    const c = decodeServerFrame(t.frames.challenge) as Challenge;
    const serverSpki = fromB64u(V.keys[t.inputs.server_key]!.spki, "spki", 8192);
    const tInfo = lp(utf8(t.frames.hello), c.source, serverSpki, c.channel_type, fromB64u(c.nonce, "nonce"), c.features.join(","));
    assert.is(hex(tInfo), t.intermediate.t_info);
    assert.is(hex(await sha256(concat(lp(V.labels.hpke_info), tInfo))), t.intermediate.info);
    const enc = fromB64u(c.enc, "enc");
    assert.is(hex(enc), t.intermediate.enc);
    const tChal = concat(tInfo, lp(enc));
    assert.is(hex(tChal), t.intermediate.t_chal);
    const sigS = fromB64u(c.signature, "signature");
    assert.is(hex(sigS), t.intermediate.server_signature);
    assert.is(hex(await signInput(V.labels.server_signature, tChal)), t.intermediate.server_sign_input);
    const sigC = fromB64u((JSON.parse(t.frames.proof) as { signature: string }).signature, "signature");
    assert.is(hex(sigC), t.intermediate.client_signature);
    assert.is(hex(await signInput(V.labels.client_signature, concat(tChal, lp(sigS)))), t.intermediate.client_sign_input);
    assert.is(hex(concat(lp(V.labels.grant_aad), await sha256(concat(tChal, lp(sigS), lp(sigC))))), t.intermediate.grant_aad);
    // both signatures verify over their inputs
    const server = await importSpki(V.keys[t.inputs.server_key]!.type, serverSpki);
    assert.ok(await verify(server, sigS, unhex(t.intermediate.server_sign_input)), "server signature");
    const id = V.keys[t.inputs.identity]!;
    const identity = await importSpki(id.type, fromB64u(id.spki, "spki", 8192));
    assert.ok(await verify(identity, sigC, unhex(t.intermediate.client_sign_input)), "client signature");
  });

  test(`${t.name}: the client accepts the challenge against its pinned key${t.deterministic ? " and signs the exact proof" : ""}`, async () => {
    const h = await clientHello(t);
    const { proof, state } = await answerChallenge(h, decodeServerFrame(t.frames.challenge) as Challenge, pinned(t));
    assert.is(hex(state.info), t.intermediate.info);
    assert.is(hex(state.enc), t.intermediate.enc);
    if (t.deterministic) {
      assert.is(JSON.stringify(proof), t.frames.proof);
      assert.is(hex(state.aad), t.intermediate.grant_aad);
    } else {
      // ECDSA / RSA-PSS are randomized: the fresh proof differs but verifies on the server
      const { pending } = await serverChallenge(t);
      assert.ok(await verifyProof(pending, fromB64u(proof.signature, "signature")));
    }
  });

  test(`${t.name}: a client whose pinned key differs stops before the proof (server_key_mismatch)`, async () => {
    const h = await clientHello(t);
    await throwsCode(
      () =>
        answerChallenge(h, decodeServerFrame(t.frames.challenge) as Challenge, () => {
          throw new PsimbolsError(ErrorCode.serverKeyMismatch, "not the pinned key");
        }),
      ErrorCode.serverKeyMismatch,
      "pin",
    );
  });

  test(`${t.name}: the stored proof verifies and the server seals the exact established`, async () => {
    const { pending } = await serverChallenge(t);
    const sig = unhex(t.intermediate.client_signature);
    assert.ok(await verifyProof(pending, sig));
    const est = await sealGrant(pending, sig, t.inputs.grant, t.inputs.source);
    assert.is(JSON.stringify(est), t.frames.established);
  });

  test(`${t.name}: the client opens the stored established to the grant and channel key`, async () => {
    const { grant, channelKey } = await openGrant(await clientProof(t), decodeServerFrame(t.frames.established) as Established);
    assert.equal(grant, t.inputs.grant);
    assert.is(JSON.stringify(grant), t.intermediate.grant_plaintext);
    assert.is(hex(channelKey), t.intermediate.channel_key);
  });

  for (const b of t.bindings) {
    test(`${t.name}, ${b.name}: traffic keys are HKDF of the channel key and both nonces (PROTOCOL.md §6.1)`, async () => {
      const nc = unhex(b.nonce_c);
      const ns = unhex(b.nonce_s);
      if (b.via === "handshake") {
        assert.is(b.nonce_c, t.inputs.nonce_c, "nonce_c is the hello nonce");
        assert.is(b.nonce_s, t.inputs.nonce_s, "nonce_s is the challenge nonce");
      } else {
        const r = decodeClientFrame(b.resume!);
        const rd = decodeServerFrame(b.resumed!);
        assert.ok(r.type === "resume" && rd.type === "resumed");
        assert.is(hex(fromB64u(r.nonce, "nonce")), b.nonce_c, "nonce_c is the resume nonce");
        assert.is(hex(fromB64u(rd.nonce, "nonce")), b.nonce_s, "nonce_s is the resumed nonce");
        assert.is(r.channel, b.channel);
      }
      assert.is(hex(lp(nc, ns)), b.salt);
      assert.is(hex(lp(V.labels.c2s, b.channel)), b.c2s_info);
      assert.is(hex(lp(V.labels.s2c, b.channel)), b.s2c_info);
      const k = await deriveTrafficKeys(unhex(t.intermediate.channel_key), b.channel, nc, ns);
      assert.is(hex(k.c2s), b.c2s);
      assert.is(hex(k.s2c), b.s2c);
    });

    test(`${t.name}, ${b.name}: frames seal to the exact ciphertext, open, and decode (${b.channel_type}, every engine)`, async () => {
      assert.is(b.channel_type, t.inputs.grant.key.type, "the binding's type is the grant's");
      const c2sAll = await engineKeys(unhex(b.c2s), b.channel_type);
      const s2cAll = await engineKeys(unhex(b.s2c), b.channel_type);
      for (let e = 0; e < c2sAll.length; e++)
      for (const f of b.frames) {
        const c2s = c2sAll[e]!.key;
        const s2c = s2cAll[e]!.key;
        const what = `${c2sAll[e]!.engine}: ${f.kind} ${f.seq}`;
        const k = f.kind === "request" ? c2s : s2c;
        assert.is(hex(frameNonce(frameKind(f.kind), f.seq)), f.nonce, what);
        const ct = await sealFrame(k, frameKind(f.kind), f.seq, b.channel, f.plaintext);
        assert.is(hex(fromB64u(ct, "ct")), f.ciphertext, what);
        const outer = f.kind === "request" ? decodeClientFrame(f.frame) : decodeServerFrame(f.frame);
        assert.ok(outer.type === f.kind, what);
        const wire = outer.type === "request" ? outer.request : outer.type === "response" ? outer.response : outer.type === "push" ? outer.push : "";
        assert.is(wire, ct, what);
        assert.is((outer as { seq: number }).seq, f.seq, what);
        assert.is((outer as { channel: string }).channel, b.channel, what);
        const pt = await openFrame(k, frameKind(f.kind), f.seq, b.channel, wire);
        assert.is(pt, f.plaintext, what);
        // inner payloads decode and re-encode to the same bytes
        const inner = f.kind === "request" ? decodeInnerRequest(pt) : f.kind === "response" ? decodeInnerResponse(pt) : decodeInnerPush(pt);
        assert.is(JSON.stringify(inner), pt, what);
      }
    });

    test(`${t.name}, ${b.name}: the binary form of each frame (§4.11) seals to the exact bytes, decodes and opens`, async () => {
      const c2sAll = await engineKeys(unhex(b.c2s), b.channel_type);
      const s2cAll = await engineKeys(unhex(b.s2c), b.channel_type);
      for (let e = 0; e < c2sAll.length; e++)
      for (const f of b.frames) {
        const keys = { channel: b.channel, type: b.channel_type, maxSeq: MAX_SEQ_BY_TYPE[b.channel_type], c2s: c2sAll[e]!.key, s2c: s2cAll[e]!.key };
        const what = `${c2sAll[e]!.engine}: ${f.kind} ${f.seq}`;
        const sealed = await sealBinaryFrame(keys, frameKind(f.kind), f.seq, f.plaintext);
        assert.is(hex(sealed), f.binary, what);
        const outer = f.kind === "request" ? decodeClientBinary(unhex(f.binary)) : decodeServerBinary(unhex(f.binary));
        assert.is(outer.type, f.kind, what);
        assert.is(outer.seq, f.seq, what);
        assert.is(outer.channel, b.channel, what);
        const wire = (outer.type === "request" ? outer.request : outer.type === "response" ? outer.response : outer.push) as Uint8Array;
        assert.is(hex(wire), f.ciphertext, what);
        const pt = await openFrame(f.kind === "request" ? keys.c2s : keys.s2c, frameKind(f.kind), f.seq, b.channel, wire);
        assert.is(pt, f.plaintext, what);
      }
    });
  }
}

test("the handshake binding's traffic keys differ from every resumed binding's", () => {
  const all = V.transcripts.flatMap((t) => t.bindings.flatMap((b) => [b.c2s, b.s2c]));
  assert.is(new Set(all).size, all.length);
});

// ------------------------------------------------------- negative vectors

/**
 * Runs `fn`, the receiving side of a frame sent by `side`, and reports a refusal as the reference
 * receivers do (PROTOCOL.md §4, §9): a server answers with the decoder's code (`bad_request`); a
 * client reports what a server sent as `protocol`, through asProtocol, the mapping
 * client/connection.ts applies to every server frame it cannot use.
 */
async function received<T>(side: Side, fn: () => T | Promise<T>): Promise<T> {
  if (side === "client") return fn();
  try {
    return await fn();
  } catch (e) {
    throw asProtocol(e, "the server sent a frame the client refuses");
  }
}

test("§14: a refused client frame is bad_request, a refused server frame protocol, in every negative frame vector", () => {
  for (const v of [...V.negative.frames, ...V.negative.binary_frames]) {
    assert.is(v.error, v.side === "client" ? ErrorCode.badRequest : ErrorCode.protocol, v.description);
  }
});

for (const v of V.negative.frames) {
  (v.known_issue ? test.skip : test)(`refuses a ${v.side} frame with ${v.error}: ${v.description}${v.known_issue ? ` (KNOWN ISSUE: ${v.known_issue})` : ""}`, () =>
    throwsCode(() => received(v.side, () => (v.side === "client" ? decodeClientFrame(v.text) : decodeServerFrame(v.text))), v.error as ErrorCode, v.description),
  );
}

for (const v of V.negative.binary_frames) {
  test(`refuses a binary ${v.side} frame with ${v.error}: ${v.description}`, () =>
    throwsCode(() => received(v.side, () => (v.side === "client" ? decodeClientBinary(unhex(v.hex)) : decodeServerBinary(unhex(v.hex)))), v.error as ErrorCode, v.description),
  );
}

for (const v of V.accepted_frames) {
  test(`accepts a ${v.side} frame: ${v.description}`, () => {
    const got = v.side === "client" ? decodeClientFrame(v.text) : decodeServerFrame(v.text);
    assert.equal(got, v.decoded);
  });
}

for (const v of V.negative.hellos) {
  const issue = v.known_issue ?? providerIssue(v.description);
  (issue ? test.skip : test)(`the server refuses a hello with ${v.error}: ${v.description}${issue ? ` (KNOWN ISSUE: ${issue})` : ""}`, async () => {
    const t = transcript("ed25519-x25519");
    const hello = decodeClientFrame(v.text) as Hello;
    const offer = { key: await key(t.inputs.server_key), source: t.inputs.source };
    await throwsCode(() => acceptHello(utf8(v.text), hello, offer), v.error as ErrorCode, v.description);
  });
}

test("channel frames that must not open fail with unauthorised and the one message", async () => {
  for (const v of V.negative.channel) {
    for (const { engine, key: k } of await engineKeys(unhex(v.key), v.channel_type)) {
      let err: unknown;
      try {
        await openFrame(k, FrameKind[v.kind], v.seq, v.channel, v.ciphertext);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof PsimbolsError && err.code === ErrorCode.unauthorised, `${engine}: ${v.description}`);
      assert.is((err as Error).message, "unknown channel or bad ciphertext", v.description);
    }
  }
});

test("a client without a pinned key refuses tampered and foreign challenges with `error`", async () => {
  for (const v of V.negative.challenges) {
    const t = transcript(v.transcript);
    const h = await clientHello(t);
    await throwsCode(() => received("server", () => answerChallenge(h, decodeServerFrame(v.challenge) as Challenge, () => {})), v.error as ErrorCode, v.description);
  }
});

test("a client that pinned the transcript's server key refuses the same challenges with `error_pinned` (the pin is checked first)", async () => {
  for (const v of V.negative.challenges) {
    const t = transcript(v.transcript);
    const h = await clientHello(t);
    await throwsCode(() => received("server", () => answerChallenge(h, decodeServerFrame(v.challenge) as Challenge, pinned(t))), v.error_pinned as ErrorCode, v.description);
  }
  assert.ok(V.negative.challenges.some((v) => v.error_pinned === ErrorCode.serverKeyMismatch), "a vector shows the pin failing first");
});

test("proofs over another transcript do not verify (the server answers unauthorised)", async () => {
  for (const v of V.negative.proofs) {
    assert.is(v.error, ErrorCode.unauthorised, v.description);
    const { pending } = await serverChallenge(transcript(v.transcript), v.hello);
    assert.not.ok(await verifyProof(pending, unhex(v.signature)), v.description);
  }
});

test("the client refuses tampered and foreign established frames, and grants that break §5.4, with protocol", async () => {
  for (const v of V.negative.established) {
    const p = await clientProof(transcript(v.transcript));
    await throwsCode(() => received("server", () => openGrant(p, decodeServerFrame(v.established) as Established)), v.error as ErrorCode, v.description);
  }
});

// ---------------------------------------------------- malleability, tamper

/** Every frame text in the vector file, with the side that sends it. */
function allFrames(): { side: "client" | "server"; text: string }[] {
  const out: { side: "client" | "server"; text: string }[] = [];
  for (const t of V.transcripts) {
    out.push({ side: "client", text: t.frames.hello }, { side: "server", text: t.frames.challenge });
    out.push({ side: "client", text: t.frames.proof }, { side: "server", text: t.frames.established });
    for (const b of t.bindings) {
      if (b.resume) out.push({ side: "client", text: b.resume });
      if (b.resumed) out.push({ side: "server", text: b.resumed });
      for (const f of b.frames) out.push({ side: f.kind === "request" ? "client" : "server", text: f.frame });
    }
  }
  return out;
}

test("decoding then re-encoding every vector frame is stable and loses nothing", () => {
  for (const { side, text } of allFrames()) {
    const dec = side === "client" ? decodeClientFrame : decodeServerFrame;
    const once = dec(text);
    assert.equal(once, JSON.parse(text), text.slice(0, 40));
    const again = JSON.stringify(dec(JSON.stringify(once)));
    assert.is(again, JSON.stringify(once), text.slice(0, 40));
  }
  for (const t of V.transcripts) assert.is(JSON.stringify(decodeGrant(t.intermediate.grant_plaintext)), t.intermediate.grant_plaintext);
});

// ------------------------------------------------- canonical serialisation (§2.4), payload shapes

/** Member order of each frame and payload, transcribed from PROTOCOL.md §2.4 (not from shared/). */
const FRAME_MEMBERS: Record<string, readonly string[]> = {
  hello: ["type", "version", "public_key", "channel_types", "kem", "nonce", "features"],
  challenge: ["type", "source", "server_key", "channel_type", "nonce", "features", "enc", "signature"],
  proof: ["type", "signature"],
  established: ["type", "source", "response"],
  request: ["type", "channel", "seq", "request"],
  response: ["type", "source", "channel", "seq", "response"],
  push: ["type", "source", "channel", "seq", "push"],
  resume: ["type", "channel", "nonce", "last_push", "features"],
  resumed: ["type", "source", "channel", "nonce", "features"],
  error: ["type", "error", "seq", "channel"],
};
/** Members written even when empty (§2.4): `features` of hello and challenge. */
const ALWAYS: Record<string, readonly string[]> = { hello: ["features"], challenge: ["features"] };
const NESTED_MEMBERS: Record<string, readonly string[]> = {
  public_key: ["type", "data"],
  server_key: ["type", "data"],
  kem: ["type", "data"],
  key: ["type", "data"],
  error: ["code", "message"],
};
const GRANT_MEMBERS = ["channel", "key", "valid_until", "ttl"];
const REQUEST_MEMBERS = ["op", "data"];
const RESPONSE_MEMBERS = ["data", "error"];
const NOTICE_MEMBERS = ["notice", "valid_until", "reason"];
const MESSAGE_MEMBERS = ["message", "id"];

/**
 * `o` rebuilt with its members in `order` (nested keys and error objects too), then serialised as
 * §2.4 says: no whitespace, ECMAScript JSON.stringify escaping, integers as plain digits.
 * Application values (`data`, `message`) are kept as they are. Throws on a member not in `order`.
 */
function canonical(o: Record<string, unknown>, order: readonly string[], what: string): string {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(o)) if (!order.includes(k)) throw new Error(`${what}: member ${k} is not in the canonical order`);
  for (const k of order) {
    if (!(k in o)) continue;
    const v = o[k];
    const nested = NESTED_MEMBERS[k];
    out[k] = nested && typeof v === "object" && v !== null ? JSON.parse(canonical(v as Record<string, unknown>, nested, `${what}.${k}`)) : v;
  }
  return JSON.stringify(out);
}

test("every frame of the vectors is in the canonical serialisation of §2.4 (member order, features always in hello and challenge)", () => {
  for (const { text } of allFrames()) {
    const o = JSON.parse(text) as Record<string, unknown>;
    const type = String(o.type);
    assert.ok(FRAME_MEMBERS[type], `unknown frame type ${type}`);
    assert.is(canonical(o, FRAME_MEMBERS[type]!, type), text, `${type}: ${text.slice(0, 60)}`);
    for (const k of ALWAYS[type] ?? []) assert.ok(k in o, `${type} without ${k}`);
  }
});

test("every sealed payload of the vectors (grant, requests, responses, pushes) is in the canonical serialisation of §2.4", () => {
  for (const t of V.transcripts) {
    const g = t.intermediate.grant_plaintext;
    assert.is(canonical(JSON.parse(g) as Record<string, unknown>, GRANT_MEMBERS, "grant"), g, t.name);
    for (const b of t.bindings) {
      for (const f of b.frames) {
        const o = JSON.parse(f.plaintext) as Record<string, unknown>;
        const order = f.kind === "request" ? REQUEST_MEMBERS : f.kind === "response" ? RESPONSE_MEMBERS : "notice" in o ? NOTICE_MEMBERS : MESSAGE_MEMBERS;
        assert.is(canonical(o, order, `${f.kind} ${f.seq}`), f.plaintext, `${t.name}, ${b.name}, ${f.kind} ${f.seq}`);
      }
    }
  }
});

test("every application push of the vectors is what the broker seals: {\"message\":M,\"id\":N}, which the client's decoder accepts (§7.2)", () => {
  let n = 0;
  for (const t of V.transcripts) {
    for (const b of t.bindings) {
      for (const f of b.frames.filter((x) => x.kind === "push" && !("notice" in (JSON.parse(x.plaintext) as object)))) {
        const p = decodeInnerPush(f.plaintext);
        assert.ok("message" in p && typeof p.id === "number", `${t.name} push ${f.seq}: an application push carries a top-level id`);
        if (!("message" in p)) continue;
        assert.is(applicationPushText(JSON.stringify(p.message), p.id), f.plaintext, `${t.name} push ${f.seq}`);
        n++;
      }
    }
  }
  assert.ok(n > 0, "the vectors hold an application push");
});

test("the client's push decoder refuses an application push without a top-level id (the shape of an older draft of PROTOCOL.md §7.2)", async () => {
  await throwsCode(() => decodeInnerPush('{"message":{"text":"application push","id":7}}'), ErrorCode.badRequest, "id inside the message");
  await throwsCode(() => decodeInnerPush('{"message":1}'), ErrorCode.badRequest, "no id");
  await throwsCode(() => decodeInnerPush('{"message":1,"id":0}'), ErrorCode.badRequest, "id 0");
});

test("the binary values in PROTOCOL.md's JSON examples are those of the vectors (no stale example)", () => {
  const spec = readFileSync(new URL("../../../docs/PROTOCOL.md", import.meta.url), "utf8");
  const vectors = readFileSync(new URL("../../../test/vectors/v1.json", import.meta.url), "utf8");
  const blocks = [...spec.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 10, `found ${blocks.length} JSON examples`);
  const fields = new Set(["nonce", "enc", "signature", "request", "response", "push", "data", "channel"]);
  let checked = 0;
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) return x.forEach(walk);
    if (typeof x !== "object" || x === null) return;
    for (const [k, v] of Object.entries(x)) {
      if (typeof v === "string" && fields.has(k) && v.length >= 22 && !v.endsWith("…")) {
        assert.ok(vectors.includes(`"${v}"`) || vectors.includes(`\\"${v}\\"`), `PROTOCOL.md example ${k} ${v.slice(0, 24)}… is not in the vectors`);
        checked++;
      } else walk(v);
    }
  };
  for (const b of blocks) walk(JSON.parse(b));
  assert.ok(checked >= 15, `checked ${checked} values`);
});

test("every base64url field of every vector frame is canonical", () => {
  const fields = ["nonce", "enc", "signature", "response", "request", "push", "data", "channel"];
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) return x.forEach(walk);
    if (typeof x !== "object" || x === null) return;
    for (const [k, v] of Object.entries(x)) {
      if (typeof v === "string" && fields.includes(k)) assert.is(b64u(fromB64u(v, k)), v, k);
      else walk(v);
    }
  };
  for (const { text } of allFrames()) walk(JSON.parse(text));
});

test("flipping any byte of the hello bytes makes the proof fail (the exact bytes are signed)", async () => {
  const t = transcript("ed25519-x25519");
  const bytes = utf8(t.frames.hello);
  const hello = decodeClientFrame(t.frames.hello) as Hello;
  const offer = { key: await key(t.inputs.server_key), source: t.inputs.source };
  const sig = unhex(t.intermediate.client_signature);
  for (let i = 0; i < bytes.length; i++) {
    const { pending } = await acceptHello(flip(bytes, i), hello, offer, { nonceS: unhex(t.inputs.nonce_s), ekm: unhex(t.inputs.ekm) });
    assert.not.ok(await verifyProof(pending, sig), `byte ${i}`);
  }
});

test("flipping any byte of the challenge's nonce, enc or signature makes the client refuse it", async () => {
  const t = transcript("ed25519-x25519");
  const h = await clientHello(t);
  const c = decodeServerFrame(t.frames.challenge) as Challenge;
  for (const field of ["nonce", "enc", "signature"] as const) {
    const b = fromB64u(c[field], field);
    for (let i = 0; i < b.length; i++) {
      await throwsCode(() => answerChallenge(h, { ...c, [field]: b64u(flip(b, i)) }, () => {}), ErrorCode.protocol, `${field} byte ${i}`);
    }
  }
});

test("flipping any byte of the proof signature makes it fail", async () => {
  for (const name of ["ed25519-x25519", "p256-identity"]) {
    const t = transcript(name);
    const { pending } = await serverChallenge(t);
    const sig = unhex(t.intermediate.client_signature);
    for (let i = 0; i < sig.length; i++) assert.not.ok(await verifyProof(pending, flip(sig, i)), `${name} byte ${i}`);
  }
});

test("flipping any byte of established.response or of the grant AAD makes the grant fail to open", async () => {
  const t = transcript("ed25519-x25519");
  const p = await clientProof(t);
  const e = decodeServerFrame(t.frames.established) as Established;
  const ct = fromB64u(e.response, "response");
  for (let i = 0; i < ct.length; i++) {
    await throwsCode(() => openGrant(p, { ...e, response: b64u(flip(ct, i)) }), ErrorCode.protocol, `ciphertext byte ${i}`);
  }
  for (let i = 0; i < p.aad.length; i++) {
    await throwsCode(() => openGrant({ ...p, aad: flip(p.aad, i) }, e), ErrorCode.protocol, `aad byte ${i}`);
  }
});

test("flipping any byte of a request or push ciphertext makes it fail with unauthorised (both channel types, every engine)", async () => {
  for (const name of ["ed25519-x25519", "ed25519-x25519-chacha20poly1305"]) {
    const b = transcript(name).bindings[0]!;
    for (const f of b.frames.filter((x) => x.kind !== "response")) {
      for (const { engine, key: k } of await engineKeys(unhex(f.kind === "request" ? b.c2s : b.s2c), b.channel_type)) {
        const ct = unhex(f.ciphertext);
        for (let i = 0; i < ct.length; i++) {
          await throwsCode(() => openFrame(k, frameKind(f.kind), f.seq, b.channel, b64u(flip(ct, i))), ErrorCode.unauthorised, `${name} ${engine} ${f.kind} ${f.seq} byte ${i}`);
        }
      }
    }
  }
});

// ------------------------------------------- differential: @peculiar/webcrypto, node:crypto engine

/** Runs this file again in a child process with `env`; asserts every test there passed (and, with `noSkips`, that none was skipped). */
async function rerun(env: Record<string, string>, what: string, noSkips = false): Promise<void> {
  const { execFile } = await import("node:child_process");
  const self = fileURLToPath(import.meta.url);
  const r = await new Promise<{ code: number; out: string }>((resolve) => {
    execFile(process.execPath, [self], { env: { ...process.env, ...env, FORCE_COLOR: "0" }, maxBuffer: 1 << 24 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    );
  });
  assert.is(r.code, 0, `conformance ${what} failed:\n${r.out}`);
  assert.match(r.out, /Passed:\s+\d+/);
  if (noSkips) assert.match(r.out, /Skipped:\s+0\b/, `conformance ${what}: a test was skipped`);
}

if (PROVIDER === "peculiar") {
  test("runs on @peculiar/webcrypto: shared/ reaches this provider's SubtleCrypto", async () => {
    assert.ok(globalThis.crypto instanceof PeculiarCrypto);
    assert.is(subtle(), globalThis.crypto.subtle);
    // keys made through shared/ and through @hpke/core come from this provider, not Node's WebCrypto
    const NodeCryptoKey = globalThis.CryptoKey; // Node's class; the swap above replaced only globalThis.crypto
    assert.not.ok((await key("identity-ed25519")).privateKey instanceof NodeCryptoKey, "signing key");
    assert.not.ok((await hpkeSuite("X25519").kem.generateKeyPair()).privateKey instanceof NodeCryptoKey, "X25519 key");
    assert.not.ok((await hpkeSuite("P-256").kem.generateKeyPair()).privateKey instanceof NodeCryptoKey, "P-256 key");
  });
} else if (ENGINE === "node") {
  test("runs on the node:crypto handshake engine", () => {
    assert.is(handshakeCrypto(), nodeHandshakeCrypto);
  });
} else {
  test("runs on the default (WebCrypto) handshake engine", () => {
    assert.is(handshakeCrypto().name, "webcrypto");
  });
  test("the same vectors pass with @peculiar/webcrypto as globalThis.crypto (all of Ed25519, X25519, P-256, ECDSA, RSA-PSS, HKDF, AES-GCM; child process)", () =>
    rerun({ PSIMBOLS_WEBCRYPTO: "peculiar" }, "on @peculiar/webcrypto", true),
  );
  test("the same vectors pass with the node:crypto handshake engine installed (child process)", () =>
    rerun({ PSIMBOLS_HANDSHAKE_CRYPTO: "node" }, "on the node:crypto handshake engine", true),
  );
}

test.run();
