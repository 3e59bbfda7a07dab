/**
 * Key files on Node, for every side (client, broker, CLI): PKCS#8 PEM private
 * keys in, SPKI PEM public keys beside them, key types detected from the file.
 * Node only.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { mkdir, open, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { KeyType, type PublicKey, type SigningKey, generateSigningKey, importPkcs8, importSpki, isKeyType, keyTypes, subtle } from "../shared/crypto.js";

const PEM_LABEL = "PRIVATE KEY";

/**
 * Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, unencrypted)
 * and imports it as a non-extractable signing key. The type is detected:
 * Ed25519, ECDSA P-256, or RSA (rsaEncryption or RSASSA-PSS with SHA-256).
 *
 * @param path - the key file.
 * @throws PsimbolsError `bad_request` when the file cannot be read or is not
 *   an unencrypted PEM private key; `unsupported` for any other key type or curve (the message
 *   names the accepted ones).
 */
export async function loadKey(path: string): Promise<SigningKey> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `cannot read the key file ${path}`, { cause });
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `${path} is not an unencrypted PEM private key`, { cause });
  } finally {
    pem.fill(0);
  }
  const type = keyTypeOf(key, path);
  let der = key.export({ type: "pkcs8", format: "der" });
  if (key.asymmetricKeyType === "rsa-pss") {
    // WebCrypto imports RSA keys under the rsaEncryption OID only: re-wrap the same RSAPrivateKey.
    const pkcs1 = pkcs8Inner(der);
    const rsa = createPrivateKey({ key: pkcs1, format: "der", type: "pkcs1" });
    der.fill(0);
    pkcs1.fill(0);
    der = rsa.export({ type: "pkcs8", format: "der" });
  }
  try {
    return await importPkcs8(type, new Uint8Array(der.buffer, der.byteOffset, der.byteLength));
  } finally {
    der.fill(0);
  }
}

/**
 * The psimbols key type of a node:crypto key (private or public).
 *
 * @param key - a KeyObject from `createPrivateKey` or `createPublicKey`.
 * @param source - names the key in error messages (e.g. its file). Default "the key".
 * @throws PsimbolsError `unsupported` for any type or curve other than
 *   Ed25519, EC P-256, RSA, or RSA-PSS usable with SHA-256 and a 32-byte salt.
 */
export function keyTypeOf(key: KeyObject, source = "the key"): KeyType {
  const unsupported = (what: string) =>
    new PsimbolsError(ErrorCode.unsupported, `${source} is ${what}; accepted: ${keyTypes.join(", ")} (RSA 2048..4096 bits)`);
  const d = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "ed25519":
      return KeyType.ed25519;
    case "ec":
      if (d.namedCurve === "prime256v1") return KeyType.p256;
      throw unsupported(`an EC key on curve ${d.namedCurve ?? "unknown"}`);
    case "rsa":
      return KeyType.rsa;
    case "rsa-pss":
      // A restricted RSA-PSS key must allow what psimbols signs with: SHA-256, MGF1-SHA-256, salt 32.
      if ((d.hashAlgorithm ?? "sha256") !== "sha256" || (d.mgf1HashAlgorithm ?? "sha256") !== "sha256" || (d.saltLength ?? 0) > 32) {
        throw unsupported("an RSA-PSS key restricted to parameters other than SHA-256 with a salt of at most 32 bytes");
      }
      return KeyType.rsa;
    default:
      throw unsupported(`a key of type ${key.asymmetricKeyType ?? "unknown"}`);
  }
}

/** The privateKey OCTET STRING of a PKCS#8 PrivateKeyInfo (RFC 5208 §5): SEQUENCE { INTEGER, AlgorithmIdentifier, OCTET STRING }. */
function pkcs8Inner(der: Uint8Array): Buffer {
  let at = 0;
  const header = (tag: number): { start: number; end: number } => {
    if (der[at] !== tag) throw new PsimbolsError(ErrorCode.badRequest, "malformed PKCS#8 key");
    let len = der[at + 1] ?? 0;
    let start = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n < 1 || n > 3) throw new PsimbolsError(ErrorCode.badRequest, "malformed PKCS#8 key");
      len = 0;
      for (let i = 0; i < n; i++) len = (len << 8) | (der[start + i] ?? 0);
      start += n;
    }
    if (start + len > der.length) throw new PsimbolsError(ErrorCode.badRequest, "malformed PKCS#8 key");
    return { start, end: start + len };
  };
  at = header(0x30).start; // PrivateKeyInfo
  at = header(0x02).end; // version
  at = header(0x30).end; // privateKeyAlgorithm
  const octets = header(0x04);
  return Buffer.from(der.subarray(octets.start, octets.end));
}

/** Options of {@link generateKeyFile}. */
export interface GenerateKeyFileOptions {
  /** Replace an existing file. Default false: an existing file is an error. */
  force?: boolean;
  /**
   * Also write the public key (SPKI PEM, mode 0644) to {@link publicKeyPath}
   * of `path`, as ssh-keygen writes `id_ed25519.pub`. Default false.
   */
  publicFile?: boolean;
}

/** Where {@link generateKeyFile} puts the public key of `path`: `k.pem` → `k.pub.pem`, else `path.pub.pem`. */
export function publicKeyPath(path: string): string {
  return path.endsWith(".pem") ? `${path.slice(0, -4)}.pub.pem` : `${path}.pub.pem`;
}

/**
 * Generates a signing key and writes it as unencrypted PKCS#8 PEM with mode
 * 0600 (the parent directory is created with mode 0700 when missing).
 *
 * @param type - `Ed25519`, `ECDSA-P256` or `RSA` (2048-bit, used as RSA-PSS).
 * @param path - where to write.
 * @returns the key, imported non-extractable.
 * @throws PsimbolsError `bad_request` when the file (or, with `publicFile`, the
 *   public file) exists and `force` is not set;
 *   `unsupported` for an unknown type.
 */
export async function generateKeyFile(type: KeyType, path: string, options: GenerateKeyFileOptions = {}): Promise<SigningKey> {
  if (!isKeyType(type)) throw new PsimbolsError(ErrorCode.unsupported, `key type not supported; accepted: ${keyTypes.join(", ")}`);
  const extractable = await generateSigningKey(type, true);
  const der = new Uint8Array(await subtle().exportKey("pkcs8", extractable.privateKey));
  const b64 = Buffer.from(der).toString("base64");
  const pem = Buffer.from(toPem(PEM_LABEL, b64));
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    let file;
    try {
      file = await open(path, options.force ? "w" : "wx", 0o600);
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "EEXIST") {
        throw new PsimbolsError(ErrorCode.badRequest, `${path} exists; refusing to overwrite a key`, { cause });
      }
      throw new PsimbolsError(ErrorCode.badRequest, `cannot create the key file ${path}`, { cause });
    }
    try {
      await file.chmod(0o600); // an overwritten file keeps its old mode otherwise
      await file.writeFile(pem);
    } finally {
      await file.close();
    }
    const key = await importPkcs8(type, der);
    if (options.publicFile) await writePublicKeyFile(publicKeyPath(path), key.public, options.force === true);
    return key;
  } finally {
    der.fill(0);
    pem.fill(0);
  }
}


/** PEM armour (RFC 7468): base64 in lines of 64 characters. */
function toPem(label: string, b64: string): string {
  return `-----BEGIN ${label}-----\n${b64.replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
}

/** Writes a public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), mode 0644. */
async function writePublicKeyFile(path: string, key: PublicKey, force: boolean): Promise<void> {
  const pem = toPem("PUBLIC KEY", Buffer.from(key.spki).toString("base64"));
  try {
    await writeNewFile(path, pem, force);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "EEXIST") {
      throw new PsimbolsError(ErrorCode.badRequest, `${path} exists; refusing to overwrite it`, { cause });
    }
    throw new PsimbolsError(ErrorCode.badRequest, `cannot create the public key file ${path}`, { cause });
  }
}

async function writeNewFile(path: string, text: string, force: boolean): Promise<void> {
  const file = await open(path, force ? "w" : "wx", 0o644);
  try {
    await file.chmod(0o644);
    await file.writeFile(text);
  } finally {
    await file.close();
  }
}

/**
 * Reads a public key from a PEM file holding either a private (PKCS#8) or a
 * public (SPKI) key.
 *
 * @throws PsimbolsError `bad_request` when the file cannot be read or holds no
 *   PEM key; `unsupported` for a key type psimbols does not accept.
 */
export async function loadPublicKey(path: string): Promise<PublicKey> {
  let pem: string;
  try {
    pem = await readFile(path, "utf8");
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `cannot read ${path}`, { cause });
  }
  return publicKeyFromPem(pem, path);
}

/**
 * The public key of a PEM key, private (PKCS#8) or public (SPKI), read as
 * {@link loadPublicKey} reads a file (`psimbols keys add`, `admin.keys.add`).
 *
 * @param source - names the key in error messages (a file, a field).
 * @throws PsimbolsError `bad_request` when `pem` holds no PEM key; `unsupported` for a key type psimbols does not accept.
 */
export async function publicKeyFromPem(pem: string, source: string): Promise<PublicKey> {
  let pub: KeyObject;
  try {
    pub = createPublicKey(pem);
  } catch (cause) {
    throw new PsimbolsError(ErrorCode.badRequest, `${source} is not a PEM key`, { cause });
  }
  const spki = new Uint8Array(pub.export({ type: "spki", format: "der" }));
  return importSpki(keyTypeOf(pub, source), spki);
}
