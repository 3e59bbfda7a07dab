/**
 * X-Wing (draft-connolly-cfrg-xwing-kem; PROTOCOL.md §5.3) as the third KEM:
 * the draft's known-answer vector through the package psimbols runs
 * (`@hpke/hybridkem-x-wing`), and the handshake with it on both handshake
 * engines (node:crypto's hands X-Wing to `@hpke/core`).
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { XWing } from "@hpke/hybridkem-x-wing";
import { generateSigningKey, randomBytes, useHandshakeCrypto, webCryptoHandshake } from "../../shared/crypto.js";
import { b64u, fromB64u, fromUtf8, utf8 } from "../../shared/encoding.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { type Challenge, type Established, type Grant, type Hello, KemType, MAX_ENC_BYTES, decodeClientFrame, decodeServerFrame } from "../../shared/frames.js";
import { acceptHello, answerChallenge, createHello, openGrant, sealGrant, verifyProof } from "../../shared/handshake.js";
import { KEM_PUBLIC_BYTES, hpkeSuite } from "../../shared/hpke.js";
import { useNodeCrypto } from "../../node/engines.js";

const t = suite("X-Wing");
const V = JSON.parse(readFileSync(new URL("../../../test/vectors/xwing.json", import.meta.url), "utf8")) as {
  kem_id: number;
  vectors: { seed: string; pk: string; eseed: string; ct: string; ss: string }[];
};
const hex = (h: string) => new Uint8Array(Buffer.from(h, "hex"));
type AB = Uint8Array<ArrayBuffer>;

t.after(() => useHandshakeCrypto(webCryptoHandshake));

t("the draft's known-answer vector: key pair from the seed, ciphertext and shared secret from eseed", async () => {
  for (const v of V.vectors) {
    const kem = new XWing();
    const kp = await kem.generateKeyPairDerand(hex(v.seed));
    assert.is(Buffer.from(await kem.serializePublicKey(kp.publicKey)).toString("hex"), v.pk);
    const res = await kem.encap({ recipientPublicKey: kp.publicKey, ekm: hex(v.eseed) as AB });
    assert.is(Buffer.from(res.enc).toString("hex"), v.ct);
    assert.is(Buffer.from(res.sharedSecret).toString("hex"), v.ss);
    assert.is(Buffer.from(await kem.decap({ enc: hex(v.ct) as AB, recipientKey: kp.privateKey })).toString("hex"), v.ss);
    // a flipped ciphertext byte gives another secret (ML-KEM's implicit rejection), never this one
    const bad = hex(v.ct);
    bad[0]! ^= 1;
    assert.is.not(Buffer.from(await kem.decap({ enc: bad as AB, recipientKey: kp.privateKey })).toString("hex"), v.ss);
  }
});

t("the suite is X-Wing (KEM 0x647a), HKDF-SHA256, AES-256-GCM; sizes as the draft's", () => {
  const s = hpkeSuite(KemType.xwing);
  assert.equal({ kem: s.kem.id, kdf: s.kdf.id, aead: s.aead.id }, { kem: V.kem_id, kdf: 1, aead: 2 });
  assert.is(KEM_PUBLIC_BYTES[KemType.xwing], 1216);
  assert.is(MAX_ENC_BYTES, 1120);
});

for (const [engine, install] of [
  ["WebCrypto/@hpke/core", () => useHandshakeCrypto(webCryptoHandshake)],
  ["node:crypto (X-Wing handed to @hpke/core)", () => useNodeCrypto()],
] as const) {
  t(`a handshake with an X-Wing ephemeral key completes (${engine}) and both sides hold the same channel key`, async () => {
    install();
    const server = await generateSigningKey();
    const h = await createHello(await generateSigningKey(), { kem: KemType.xwing });
    assert.is(fromB64u(h.hello.kem.data, "kem.data").length, 1216);
    const { challenge, pending } = await acceptHello(h.bytes, decodeClientFrame(fromUtf8(h.bytes)) as Hello, { key: server, source: "wss://x/" });
    const c = decodeServerFrame(JSON.stringify(challenge)) as Challenge;
    assert.is(fromB64u(c.enc, "enc").length, 1120);
    const { proof, state } = await answerChallenge(h, c, () => {});
    assert.ok(await verifyProof(pending, fromB64u(proof.signature, "signature")));
    const key = randomBytes(32);
    const grant: Grant = { channel: b64u(randomBytes(16)), key: { type: "AES-256-GCM", data: b64u(key) }, valid_until: new Date().toISOString(), ttl: 60 };
    const est = await sealGrant(pending, fromB64u(proof.signature, "signature"), grant, "wss://x/");
    const got = await openGrant(state, decodeServerFrame(JSON.stringify(est)) as Established);
    assert.equal(got.channelKey, key);
  });
}

t("an X-Wing key of the wrong length is refused: bad_request", async () => {
  useHandshakeCrypto(webCryptoHandshake);
  const h = await createHello(await generateSigningKey(), { kem: KemType.xwing });
  for (const n of [32, 1215, 1217]) {
    const hello = { ...h.hello, kem: { type: KemType.xwing, data: b64u(randomBytes(n)) } };
    const bytes = utf8(JSON.stringify(hello));
    try {
      await acceptHello(bytes, decodeClientFrame(fromUtf8(bytes)) as Hello, { key: await generateSigningKey(), source: "wss://x/" });
      assert.unreachable(String(n));
    } catch (e) {
      assert.instance(e, PsimbolsError);
      assert.is((e as PsimbolsError).code, ErrorCode.badRequest, String(n));
    }
  }
});

t("a challenge's enc may be 1120 bytes, not more", async () => {
  const c = { type: "challenge", source: "s", server_key: { type: "Ed25519", data: "AA" }, channel_type: "AES-256-GCM", nonce: b64u(randomBytes(32)), features: [], signature: "AA" };
  assert.is((decodeServerFrame(JSON.stringify({ ...c, enc: b64u(randomBytes(1120)) })) as Challenge).type, "challenge");
  try {
    decodeServerFrame(JSON.stringify({ ...c, enc: b64u(randomBytes(1121)) }));
    assert.unreachable();
  } catch (e) {
    assert.is((e as PsimbolsError).code, ErrorCode.badRequest);
  }
});

t.run();
