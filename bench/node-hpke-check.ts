/**
 * Checks the node:crypto HPKE prototype (bench/node-hpke.ts):
 *   1. RFC 9180 Appendix A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
 *      AES-128-GCM, base mode): enc and the sequence-0 ciphertext;
 *   2. differential against @hpke/core with the suite psimbols uses
 *      (AES-256-GCM): the same ekm gives the same enc and ciphertext, and
 *      each side opens what the other sealed.
 *
 *   node dist/bench/node-hpke-check.js [TRIALS]
 */
import { randomBytes } from "node:crypto";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { createSender, createRecipient } from "./node-hpke.js";
import { createPrivateKey, createPublicKey } from "node:crypto";

const hex = (s: string) => Buffer.from(s, "hex");
const SPKI_X25519 = hex("302a300506032b656e032100");
const recipient = (raw: Uint8Array) => ({ object: createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: "der", type: "spki" }), raw: Buffer.from(raw) });

/** RFC 9180 A.1.1 (the RFC's published values). */
const A1 = {
  info: "4f6465206f6e2061204772656369616e2055726e",
  ikmE: "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
  pkEm: "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
  pkRm: "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
  pt: "4265617574792069732074727574682c20747275746820626561757479",
  aad: "436f756e742d30",
  ct: "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
};

async function main(): Promise<void> {
  const s = createSender(recipient(hex(A1.pkRm)), hex(A1.info), 0x0001, hex(A1.ikmE));
  const enc = Buffer.from(s.enc).toString("hex");
  const ct = Buffer.from(await s.seal(hex(A1.pt), hex(A1.aad))).toString("hex");
  if (enc !== A1.pkEm || ct !== A1.ct) throw new Error(`RFC 9180 A.1.1 mismatch: enc ${enc}, ct ${ct}`);
  console.log("RFC 9180 A.1.1: enc and ciphertext match");

  const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
  const trials = Number(process.argv[2] ?? 200);
  for (let i = 0; i < trials; i++) {
    const rkp = await suite.kem.generateKeyPair();
    Object.defineProperty(rkp.privateKey, "extractable", { value: true });
    const pkR = new Uint8Array(await suite.kem.serializePublicKey(rkp.publicKey));
    const ekm = randomBytes(32);
    const info = randomBytes(32);
    const pt = randomBytes(1 + (i % 300));
    const aad = randomBytes(i % 64);
    const theirs = await suite.createSenderContext({ recipientPublicKey: rkp.publicKey, info, ekm });
    const theirCt = Buffer.from(await theirs.seal(pt, aad));
    const mine = createSender(recipient(pkR), info, 0x0002, ekm);
    const myCt = Buffer.from(await mine.seal(pt, aad));
    if (!Buffer.from(mine.enc).equals(Buffer.from(theirs.enc)) || !myCt.equals(theirCt)) throw new Error(`trial ${i}: differs from @hpke/core`);
    const fresh = createSender(recipient(pkR), info);
    const sealed = await fresh.seal(pt, aad);
    const r = await suite.createRecipientContext({ recipientKey: rkp, enc: fresh.enc, info });
    if (!Buffer.from(await r.open(sealed, aad)).equals(pt)) throw new Error(`trial ${i}: @hpke/core does not open the prototype's seal`);
    // And the other way: the prototype's recipient opens what @hpke/core sealed.
    const jwk = (await crypto.subtle.exportKey("jwk", rkp.privateKey)) as JsonWebKey;
    const skR = createPrivateKey({ key: { kty: "OKP", crv: "X25519", d: jwk.d!, x: jwk.x! }, format: "jwk" });
    const s2 = await suite.createSenderContext({ recipientPublicKey: rkp.publicKey, info });
    const c2 = await s2.seal(pt, aad);
    const mineOpen = createRecipient(skR, Buffer.from(pkR), new Uint8Array(s2.enc), info);
    if (!Buffer.from(await mineOpen.open(new Uint8Array(c2), aad)).equals(pt)) throw new Error(`trial ${i}: the prototype does not open @hpke/core's seal`);
  }
  console.log(`@hpke/core differential (AES-256-GCM): ${trials} trials agree`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
