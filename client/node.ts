/**
 * psimbols client for Node ("psimbols/node"): everything of the browser-safe
 * core, plus PKCS#8 key files, a known-servers file (as SSH's known_hosts),
 * and `connect` defaulting to the `ws` package's WebSocket.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { WebSocket } from "ws";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { KeyType, type SigningKey, generateSigningKey, importPkcs8, isKeyType, keyTypes, subtle, useHandshakeCrypto } from "../shared/crypto.js";
import { type Client, type ConnectOptions, type KnownServers, connect as coreConnect } from "./connection.js";
import { useTrafficKeys } from "../shared/channel.js";
import { nodeTrafficKey } from "./node-aead.js";
import { nodeHandshakeCrypto } from "./node/handshake-crypto.js";

// On Node, channel frames use node:crypto (same bytes, much cheaper than WebCrypto per frame).
useTrafficKeys(nodeTrafficKey);
// ... and so does the handshake (hashes, HKDF, Ed25519, X25519 HPKE; ECDSA, RSA and P-256 stay on WebCrypto).
useHandshakeCrypto(nodeHandshakeCrypto);

export * from "./index.js";

// ------------------------------------------------------------------ key files

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
}

/**
 * Generates a signing key and writes it as unencrypted PKCS#8 PEM with mode
 * 0600 (the parent directory is created with mode 0700 when missing).
 *
 * @param type - `Ed25519`, `ECDSA-P256` or `RSA` (2048-bit, used as RSA-PSS).
 * @param path - where to write.
 * @returns the key, imported non-extractable.
 * @throws PsimbolsError `bad_request` when the file exists and `force` is not set;
 *   `unsupported` for an unknown type.
 */
export async function generateKeyFile(type: KeyType, path: string, options: GenerateKeyFileOptions = {}): Promise<SigningKey> {
  if (!isKeyType(type)) throw new PsimbolsError(ErrorCode.unsupported, `key type not supported; accepted: ${keyTypes.join(", ")}`);
  const extractable = await generateSigningKey(type, true);
  const der = new Uint8Array(await subtle().exportKey("pkcs8", extractable.privateKey));
  const b64 = Buffer.from(der).toString("base64");
  const pem = Buffer.from(`-----BEGIN ${PEM_LABEL}-----\n${b64.replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END ${PEM_LABEL}-----\n`);
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    let file;
    try {
      file = await open(path, options.force ? "w" : "wx", 0o600);
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "EEXIST") {
        throw new PsimbolsError(ErrorCode.badRequest, `${path} exists; refusing to overwrite a key (use force)`, { cause });
      }
      throw new PsimbolsError(ErrorCode.badRequest, `cannot create the key file ${path}`, { cause });
    }
    try {
      await file.chmod(0o600); // an overwritten file keeps its old mode otherwise
      await file.writeFile(pem);
    } finally {
      await file.close();
    }
    return await importPkcs8(type, der);
  } finally {
    der.fill(0);
    pem.fill(0);
  }
}

// ------------------------------------------------------------------ known servers

/** `$PSIMBOLS_HOME/known_servers`, or `~/.psimbols/known_servers`. */
export function defaultKnownServersPath(): string {
  const home = process.env.PSIMBOLS_HOME;
  return home ? join(home, "known_servers") : join(homedir(), ".psimbols", "known_servers");
}

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

/**
 * {@link KnownServers} over a text file, one server a line: `<url> <fingerprint>`.
 * Blank lines and lines starting with `#` are ignored. The file is read on
 * every lookup (so edits apply at once) and created with mode 0600 in a
 * directory of mode 0700.
 */
export class FileKnownServers implements KnownServers {
  /** The file. */
  readonly path: string;

  /** @param path - default {@link defaultKnownServersPath}. */
  constructor(path: string = defaultKnownServersPath()) {
    this.path = path;
  }

  /**
   * The fingerprint recorded for `url`.
   * @throws PsimbolsError `bad_request` naming the line of a malformed entry.
   */
  async get(url: string): Promise<string | undefined> {
    return (await this.#read()).get(url);
  }

  /** Records (or replaces) the fingerprint of `url`. */
  async set(url: string, fingerprint: string): Promise<void> {
    if (typeof url !== "string" || url.length === 0 || /\s/.test(url)) {
      throw new PsimbolsError(ErrorCode.badRequest, `"url" expected a non-empty string without whitespace`);
    }
    if (!FINGERPRINT.test(fingerprint)) throw new PsimbolsError(ErrorCode.badRequest, `"fingerprint" expected "SHA256:" + 43 base64 characters`);
    const entries = await this.#read();
    const known = entries.get(url);
    if (known === fingerprint) return;
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    if (known === undefined) {
      // O_APPEND: concurrent writers of short lines do not interleave
      await writeFile(this.path, `${url} ${fingerprint}\n`, { flag: "a", mode: 0o600 });
      return;
    }
    const text = await readFile(this.path, "utf8");
    const lines = text.split("\n").map((l) => (l.trim().split(/\s+/)[0] === url && !l.trim().startsWith("#") ? `${url} ${fingerprint}` : l));
    const tmp = `${this.path}.${process.pid}.tmp`;
    await writeFile(tmp, lines.join("\n"), { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, this.path);
  }

  async #read(): Promise<Map<string, string>> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") return new Map();
      throw new PsimbolsError(ErrorCode.unavailable, `cannot read the known-servers file ${this.path}`, { cause });
    }
    const out = new Map<string, string>();
    text.split("\n").forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const parts = line.split(/\s+/);
      const [url, fp] = parts;
      if (parts.length !== 2 || url === undefined || fp === undefined || !FINGERPRINT.test(fp)) {
        throw new PsimbolsError(ErrorCode.badRequest, `${this.path}:${i + 1}: expected "<url> SHA256:<fingerprint>"`);
      }
      out.set(url, fp);
    });
    return out;
  }
}

// ------------------------------------------------------------------ connect

/** Options of the Node {@link connect}. */
export interface NodeConnectOptions extends Omit<ConnectOptions, "key"> {
  /** The identity key, or the path of a PKCS#8 PEM file to {@link loadKey}. */
  key: SigningKey | string;
  /**
   * The known-servers file used when neither `serverKey` nor `knownServers`
   * is given: a path, or false for an in-memory store. Default
   * {@link defaultKnownServersPath}.
   */
  knownServersFile?: string | false;
}

/**
 * {@link ConnectOptions}-compatible `connect` for Node: the socket defaults
 * to the `ws` package's WebSocket, and trust on first use to the
 * known-servers file. See the core `connect` for behaviour and errors.
 */
export async function connect(url: string, options: NodeConnectOptions): Promise<Client> {
  const { knownServersFile, key, ...rest } = options;
  const opts: ConnectOptions = {
    ...rest,
    key: typeof key === "string" ? await loadKey(key) : key,
    WebSocket: options.WebSocket ?? WebSocket,
  };
  if (opts.knownServers === undefined && opts.serverKey === undefined && knownServersFile !== false) {
    opts.knownServers = new FileKnownServers(knownServersFile ?? defaultKnownServersPath());
  }
  return coreConnect(url, opts);
}
