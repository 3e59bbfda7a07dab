/**
 * psimbols for browsers ("psimbols/browser"): everything of the browser-safe
 * core, plus
 *   - identity keys kept in IndexedDB as non-extractable CryptoKeys: page
 *     script can sign with them but never read them (structured clone keeps
 *     `extractable: false`);
 *   - import of a PKCS#8 private key (PEM or DER) that a user brings;
 *   - trust on first use in the origin's localStorage, with the same loud
 *     refusal on a mismatch as the Node client;
 *   - a `connect` that picks the algorithms this browser has: Ed25519 (else
 *     ECDSA-P256) identity keys, X25519 (else P-256) for the handshake's
 *     ephemeral key.
 *
 *   import { connect, loadOrCreateKey } from "psimbols/browser";
 *   const client = await connect("wss://broker.example/", { key: await loadOrCreateKey() });
 *   console.log(await client.request("echo", { hello: "world" }));
 *
 * WebCrypto exists only in secure contexts: serve the page over https (or
 * from localhost).
 */
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { b64 } from "../shared/encoding.js";
import { KeyType, type SigningKey, generateSigningKey, importPkcs8, importSpki, isKeyType, subtle } from "../shared/crypto.js";
import { KemType } from "../shared/frames.js";
import { type Client, type ConnectOptions, type KnownServers, connect as coreConnect } from "./connection.js";

export * from "./index.js";

// ------------------------------------------------------------------ algorithms

/** What this browser's WebCrypto offers, as psimbols names it. */
export interface BrowserAlgorithms {
  /** Identity key type for new keys: `Ed25519` where supported, else `ECDSA-P256`. */
  readonly keyType: KeyType;
  /** Ephemeral KEM of the handshake: `X25519` where supported, else `P-256`. */
  readonly kem: KemType;
}

let detected: Promise<BrowserAlgorithms> | undefined;

async function supports(algorithm: Algorithm, usages: KeyUsage[]): Promise<boolean> {
  try {
    await subtle().generateKey(algorithm, false, usages);
    return true;
  } catch {
    return false;
  }
}

/**
 * Probes WebCrypto once (cached): Ed25519 and X25519 shipped in browsers
 * later than ECDSA and ECDH on P-256, which every WebCrypto has.
 * @throws PsimbolsError `unsupported` when the page has no WebCrypto (not a secure context).
 */
export function detectAlgorithms(): Promise<BrowserAlgorithms> {
  subtle(); // fails here, loudly, outside a secure context
  detected ??= (async () => ({
    keyType: (await supports({ name: "Ed25519" }, ["sign", "verify"])) ? KeyType.ed25519 : KeyType.p256,
    kem: (await supports({ name: "X25519" }, ["deriveBits"])) ? KemType.x25519 : KemType.p256,
  }))();
  return detected;
}

// ------------------------------------------------------------------ PKCS#8

/** DER content bytes of the OIDs that name the accepted key types (RFC 8410, RFC 5480, RFC 8017). */
const OID = {
  ed25519: [0x2b, 0x65, 0x70], // 1.3.101.112
  ecPublicKey: [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01], // 1.2.840.10045.2.1
  prime256v1: [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], // 1.2.840.10045.3.1.7
  rsaEncryption: [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01], // 1.2.840.113549.1.1.1
  rsassaPss: [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a], // 1.2.840.113549.1.1.10
  mgf1: [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08], // 1.2.840.113549.1.1.8
  sha256: [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01], // 2.16.840.1.101.3.4.2.1
} as const;

/** Largest PKCS#8 accepted (an RSA-4096 key is about 2.4 KB). */
const MAX_PKCS8_BYTES = 8192;

interface Tlv {
  readonly tag: number;
  /** Start of the whole element (tag byte). */
  readonly at: number;
  /** Content. */
  readonly start: number;
  readonly end: number;
}

const malformed = () => new PsimbolsError(ErrorCode.badRequest, "not a PKCS#8 private key (malformed DER)");

/** Reads one DER element at `at` within [at, limit); definite lengths only (X.690 §10.1). */
function tlv(der: Uint8Array, at: number, limit: number): Tlv {
  const tag = der[at];
  let len = der[at + 1];
  if (tag === undefined || len === undefined) throw malformed();
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n < 1 || n > 3) throw malformed();
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | (der[start + i] ?? 0);
    start += n;
  }
  if (start + len > limit) throw malformed();
  return { tag, at, start, end: start + len };
}

/** The elements of a constructed element's content. */
function children(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end; at = out[out.length - 1]!.end) out.push(tlv(der, at, parent.end));
  return out;
}

function isOid(der: Uint8Array, t: Tlv | undefined, oid: readonly number[]): boolean {
  if (!t || t.tag !== 0x06 || t.end - t.start !== oid.length) return false;
  return oid.every((b, i) => der[t.start + i] === b);
}

/** DER length octets. */
function derLength(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v >>>= 8) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

/**
 * Accepts an id-RSASSA-PSS key only when its parameters (RFC 4055 §3.1)
 * allow what psimbols signs with: SHA-256, MGF1 with SHA-256, a salt of at
 * most 32 bytes. No parameters means unrestricted.
 */
function pssParamsOk(der: Uint8Array, params: Tlv | undefined): boolean {
  if (!params || params.tag === 0x05) return true;
  if (params.tag !== 0x30) return false;
  let hashOk = false; // absent [0] means SHA-1
  let mgfOk = false; // absent [1] means MGF1 with SHA-1
  for (const f of children(der, params)) {
    const inner = children(der, f)[0];
    if (f.tag === 0xa0 && inner) hashOk = isOid(der, children(der, inner)[0], OID.sha256);
    else if (f.tag === 0xa1 && inner) {
      const [oid, hashAlg] = children(der, inner);
      mgfOk = isOid(der, oid, OID.mgf1) && hashAlg?.tag === 0x30 && isOid(der, children(der, hashAlg)[0], OID.sha256);
    } else if (f.tag === 0xa2 && inner?.tag === 0x02) {
      let salt = 0;
      for (let i = inner.start; i < inner.end; i++) salt = salt * 256 + der[i]!;
      if (salt > 32) return false;
    }
  }
  return hashOk && mgfOk;
}

/**
 * The psimbols key type of a PKCS#8 PrivateKeyInfo (RFC 5208 §5), and the
 * DER WebCrypto imports: an id-RSASSA-PSS key is re-wrapped under
 * rsaEncryption (WebCrypto imports RSA keys under that OID only; the
 * RSAPrivateKey inside is the same).
 * @throws PsimbolsError `bad_request` for malformed DER; `unsupported` for other key types.
 */
export function pkcs8KeyType(der: Uint8Array): { type: KeyType; der: Uint8Array } {
  const top = tlv(der, 0, der.length);
  if (top.tag !== 0x30 || top.end !== der.length) throw malformed();
  const [version, algId, privateKey] = children(der, top);
  if (version?.tag !== 0x02 || algId?.tag !== 0x30 || privateKey?.tag !== 0x04) throw malformed();
  const [oid, params] = children(der, algId);
  const unsupported = (what: string) =>
    new PsimbolsError(ErrorCode.unsupported, `the key is ${what}; accepted: Ed25519, ECDSA-P256, RSA (2048..4096 bits)`);
  if (isOid(der, oid, OID.ed25519)) return { type: KeyType.ed25519, der };
  if (isOid(der, oid, OID.ecPublicKey)) {
    if (isOid(der, params, OID.prime256v1)) return { type: KeyType.p256, der };
    throw unsupported("an EC key on another curve than P-256");
  }
  if (isOid(der, oid, OID.rsaEncryption)) return { type: KeyType.rsa, der };
  if (isOid(der, oid, OID.rsassaPss)) {
    if (!pssParamsOk(der, params)) {
      throw unsupported("an RSA-PSS key restricted to parameters other than SHA-256 with a salt of at most 32 bytes");
    }
    const inner = der.subarray(privateKey.at, privateKey.end);
    const alg = [0x30, 0x0d, 0x06, 0x09, ...OID.rsaEncryption, 0x05, 0x00];
    const body = [0x02, 0x01, 0x00, ...alg];
    const len = body.length + inner.length;
    const out = new Uint8Array([0x30, ...derLength(len), ...body, ...inner]);
    return { type: KeyType.rsa, der: out };
  }
  throw unsupported("of another type");
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/**
 * The DER of the one `PRIVATE KEY` block of a PEM text.
 * @throws PsimbolsError `bad_request` naming what is wrong, with the openssl
 *   command that converts an encrypted or traditional key.
 */
export function pemToDer(pem: string): Uint8Array {
  if (typeof pem !== "string") throw new PsimbolsError(ErrorCode.badRequest, `"pem" expected string`);
  const blocks = [...pem.matchAll(PEM_BLOCK)];
  const labels = blocks.map((m) => m[1]);
  const convert = "convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pkcs8.pem`";
  if (labels.includes("ENCRYPTED PRIVATE KEY")) {
    throw new PsimbolsError(ErrorCode.badRequest, `the key is encrypted; psimbols imports unencrypted PKCS#8 only: ${convert}`);
  }
  if (labels.some((l) => l === "RSA PRIVATE KEY" || l === "EC PRIVATE KEY" || l === "OPENSSH PRIVATE KEY")) {
    throw new PsimbolsError(ErrorCode.badRequest, `the key is in a traditional format, not PKCS#8: ${convert}`);
  }
  const keys = blocks.filter((m) => m[1] === "PRIVATE KEY");
  if (keys.length !== 1) {
    throw new PsimbolsError(ErrorCode.badRequest, `expected one "-----BEGIN PRIVATE KEY-----" block, found ${keys.length}`);
  }
  const body = keys[0]![2]!.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0 || body.length === 0) {
    throw new PsimbolsError(ErrorCode.badRequest, "the PEM body is not base64");
  }
  const bin = atob(body);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Imports a PKCS#8 private key — PEM text (`-----BEGIN PRIVATE KEY-----`) or
 * DER bytes — as a non-extractable signing key; the type (Ed25519,
 * ECDSA-P256, RSA) is read from the key. The DER copy made here is wiped
 * afterwards (a PEM string cannot be: drop your references to it).
 *
 * @param pkcs8 - PEM text, or DER as bytes.
 * @throws PsimbolsError `bad_request` (malformed, encrypted or traditional
 *   format), `unsupported` (other key type, curve or RSA-PSS restriction).
 */
export async function importKey(pkcs8: string | Uint8Array | ArrayBuffer): Promise<SigningKey> {
  let der: Uint8Array;
  if (typeof pkcs8 === "string") der = pemToDer(pkcs8);
  else if (pkcs8 instanceof Uint8Array) der = pkcs8.slice();
  else if (pkcs8 instanceof ArrayBuffer) der = new Uint8Array(pkcs8.slice(0));
  else throw new PsimbolsError(ErrorCode.badRequest, `"pkcs8" expected PEM text or DER bytes`);
  if (der.length > MAX_PKCS8_BYTES) {
    der.fill(0);
    throw new PsimbolsError(ErrorCode.badRequest, `"pkcs8" expected at most ${MAX_PKCS8_BYTES} bytes`);
  }
  let rewrapped: Uint8Array | undefined;
  try {
    const { type, der: importable } = pkcs8KeyType(der);
    if (importable !== der) rewrapped = importable;
    return await importPkcs8(type, importable, false);
  } finally {
    der.fill(0);
    rewrapped?.fill(0);
  }
}

/** The public half as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), for `psimbols keys add`. */
export function publicKeyPem(key: SigningKey | { public: SigningKey["public"] }): string {
  const body = b64(key.public.spki) + "=".repeat((3 - (key.public.spki.length % 3)) % 3);
  return `-----BEGIN PUBLIC KEY-----\n${body.replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END PUBLIC KEY-----\n`;
}

// ------------------------------------------------------------------ IndexedDB key store

/** IndexedDB database and object store of stored keys (version 1 record format below). */
export const KEY_DB = "psimbols";
const KEY_STORE = "keys";
const DB_VERSION = 1;
/** Name of the key used when none is given. */
export const DEFAULT_KEY_NAME = "default";

/** A record in IndexedDB. `privateKey` is a non-extractable CryptoKey. */
interface KeyRecord {
  v: 1;
  type: KeyType;
  spki: Uint8Array;
  privateKey: CryptoKey;
  created: string;
  origin: "generated" | "imported";
}

/** A signing key kept in this origin's IndexedDB. */
export interface StoredKey extends SigningKey {
  readonly name: string;
  /** When it was stored (RFC 3339). */
  readonly created: string;
  /** Generated in this browser, or imported from PKCS#8. */
  readonly origin: "generated" | "imported";
}

function idbError(what: string, cause: unknown): PsimbolsError {
  return new PsimbolsError(ErrorCode.unavailable, `IndexedDB ${what} failed`, { cause });
}

function openDb(): Promise<IDBDatabase> {
  const idb = (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  if (!idb) return Promise.reject(new PsimbolsError(ErrorCode.unsupported, "this runtime has no IndexedDB"));
  return new Promise((resolve, reject) => {
    const req = idb.open(KEY_DB, DB_VERSION);
    req.onupgradeneeded = () => {
      if (!req.result.objectStoreNames.contains(KEY_STORE)) req.result.createObjectStore(KEY_STORE);
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(idbError("open", req.error));
    req.onblocked = () => reject(idbError("open (blocked by another tab holding an older version)", undefined));
  });
}

/** Runs `body` in one transaction on the keys store and resolves with its result once the transaction commits. */
async function withStore<T>(mode: IDBTransactionMode, body: (store: IDBObjectStore, done: (value: T) => void) => void): Promise<T> {
  const db = await openDb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(KEY_STORE, mode);
      let result: T;
      tx.oncomplete = () => resolve(result);
      tx.onerror = () => reject(idbError(mode === "readonly" ? "read" : "write", tx.error));
      tx.onabort = () => reject(idbError("transaction", tx.error));
      body(tx.objectStore(KEY_STORE), (v) => (result = v));
    });
  } finally {
    db.close();
  }
}

function checkName(name: unknown): string {
  if (typeof name !== "string" || name.length === 0 || name.length > 128) {
    throw new PsimbolsError(ErrorCode.badRequest, `"name" expected a string of 1..128 characters`);
  }
  return name;
}

async function fromRecord(name: string, r: unknown): Promise<StoredKey> {
  const rec = r as Partial<KeyRecord> | null;
  if (!rec || rec.v !== 1 || !isKeyType(rec.type) || !(rec.spki instanceof Uint8Array) || !(rec.privateKey instanceof CryptoKey)) {
    throw new PsimbolsError(ErrorCode.badRequest, `the key "${name}" in IndexedDB is not a psimbols key record (version 1)`);
  }
  const pub = await importSpki(rec.type, rec.spki);
  return { name, public: pub, privateKey: rec.privateKey, created: String(rec.created), origin: rec.origin === "imported" ? "imported" : "generated" };
}

/**
 * Stores a signing key under `name`. The private key must be non-extractable:
 * storing an extractable one would let page script read it later.
 * @param replace - overwrite a key already stored under `name`. Default false.
 * @returns the stored key; when `replace` is false and a key exists, that existing key.
 * @throws PsimbolsError `bad_request` for an extractable key; `unavailable` when IndexedDB fails.
 */
async function putKey(name: string, key: SigningKey, origin: KeyRecord["origin"], replace: boolean): Promise<StoredKey> {
  if (key.privateKey.extractable) {
    throw new PsimbolsError(ErrorCode.badRequest, "refusing to store an extractable private key: import or generate it non-extractable");
  }
  const rec: KeyRecord = { v: 1, type: key.public.type, spki: key.public.spki, privateKey: key.privateKey, created: new Date().toISOString(), origin };
  // get-then-put in one transaction: two tabs creating a key at once end up with the same one
  const stored = await withStore<unknown>("readwrite", (store, done) => {
    const get = store.get(name);
    get.onsuccess = () => {
      if (get.result !== undefined && !replace) return done(get.result);
      store.put(rec, name);
      done(rec);
    };
  });
  return fromRecord(name, stored);
}

/**
 * The key stored under `name`, or undefined.
 * @throws PsimbolsError `unavailable` when IndexedDB fails; `bad_request` for a foreign record.
 */
export async function loadStoredKey(name: string = DEFAULT_KEY_NAME): Promise<StoredKey | undefined> {
  checkName(name);
  const r = await withStore<unknown>("readonly", (store, done) => {
    const get = store.get(name);
    get.onsuccess = () => done(get.result);
  });
  return r === undefined ? undefined : fromRecord(name, r);
}

/** Options of {@link loadOrCreateKey}. */
export interface StoredKeyOptions {
  /** Name in the key store. Default {@link DEFAULT_KEY_NAME}. */
  name?: string;
  /** Type of a new key. Default: {@link detectAlgorithms}'s `keyType` (Ed25519, else ECDSA-P256). */
  type?: KeyType;
}

/**
 * The key stored under `name`; when there is none, generates a
 * non-extractable one and stores it. Safe against two tabs racing.
 * @throws PsimbolsError `unavailable` (IndexedDB), `unsupported` (no WebCrypto or key type).
 */
export async function loadOrCreateKey(options: StoredKeyOptions = {}): Promise<StoredKey> {
  const name = checkName(options.name ?? DEFAULT_KEY_NAME);
  const existing = await loadStoredKey(name);
  if (existing) return existing;
  const type = options.type ?? (await detectAlgorithms()).keyType;
  return putKey(name, await generateSigningKey(type, false), "generated", false);
}

/**
 * Generates a new non-extractable key and stores it under `name`, replacing
 * any key stored there (the old one is gone for good).
 */
export async function generateStoredKey(options: StoredKeyOptions = {}): Promise<StoredKey> {
  const name = checkName(options.name ?? DEFAULT_KEY_NAME);
  const type = options.type ?? (await detectAlgorithms()).keyType;
  return putKey(name, await generateSigningKey(type, false), "generated", true);
}

/**
 * Imports a PKCS#8 key (see {@link importKey}) and stores it under `name`,
 * replacing any key stored there.
 */
export async function importStoredKey(pkcs8: string | Uint8Array | ArrayBuffer, options: { name?: string } = {}): Promise<StoredKey> {
  const name = checkName(options.name ?? DEFAULT_KEY_NAME);
  return putKey(name, await importKey(pkcs8), "imported", true);
}

/** Deletes the key stored under `name`. @returns whether there was one. */
export async function deleteStoredKey(name: string = DEFAULT_KEY_NAME): Promise<boolean> {
  checkName(name);
  return withStore<boolean>("readwrite", (store, done) => {
    const count = store.count(name);
    count.onsuccess = () => {
      done(count.result > 0);
      store.delete(name);
    };
  });
}

// ------------------------------------------------------------------ known servers

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;
/** localStorage key prefix of {@link LocalStorageKnownServers}; the URL follows. */
export const KNOWN_SERVERS_PREFIX = "psimbols.known_server ";

/**
 * {@link KnownServers} in the origin's localStorage (so per origin, as the
 * browser scopes storage), one entry per server URL: key
 * `psimbols.known_server <url>`, value the fingerprint. One entry per URL
 * keeps two tabs from overwriting each other's entries.
 */
export class LocalStorageKnownServers implements KnownServers {
  readonly #storage: Storage;
  readonly #prefix: string;

  /**
   * @param storage - default `globalThis.localStorage`.
   * @param prefix - default {@link KNOWN_SERVERS_PREFIX}.
   * @throws PsimbolsError `unsupported` when there is no localStorage.
   */
  constructor(storage?: Storage, prefix: string = KNOWN_SERVERS_PREFIX) {
    const s = storage ?? (globalThis as { localStorage?: Storage }).localStorage;
    if (!s) throw new PsimbolsError(ErrorCode.unsupported, "this runtime has no localStorage: pass a KnownServers store");
    this.#storage = s;
    this.#prefix = prefix;
  }

  /**
   * The fingerprint recorded for `url`.
   * @throws PsimbolsError `bad_request` when the entry is not a fingerprint
   *   (a tampered or foreign entry is never taken as "unknown").
   */
  get(url: string): string | undefined {
    const v = this.#storage.getItem(this.#prefix + url);
    if (v === null) return undefined;
    if (!FINGERPRINT.test(v)) throw new PsimbolsError(ErrorCode.badRequest, `localStorage "${this.#prefix}${url}": expected "SHA256:" + 43 base64 characters`);
    return v;
  }

  /** Records (or replaces) the fingerprint of `url`. */
  set(url: string, fingerprint: string): void {
    if (typeof url !== "string" || url.length === 0) throw new PsimbolsError(ErrorCode.badRequest, `"url" expected a non-empty string`);
    if (!FINGERPRINT.test(fingerprint)) throw new PsimbolsError(ErrorCode.badRequest, `"fingerprint" expected "SHA256:" + 43 base64 characters`);
    this.#storage.setItem(this.#prefix + url, fingerprint);
  }

  /** Forgets `url` (after a legitimate server key rotation). @returns whether it was known. */
  delete(url: string): boolean {
    const had = this.#storage.getItem(this.#prefix + url) !== null;
    this.#storage.removeItem(this.#prefix + url);
    return had;
  }

  /** Every recorded server: `[url, fingerprint]`. */
  entries(): [url: string, fingerprint: string][] {
    const out: [string, string][] = [];
    for (let i = 0; i < this.#storage.length; i++) {
      const k = this.#storage.key(i);
      if (k !== null && k.startsWith(this.#prefix)) out.push([k.slice(this.#prefix.length), this.#storage.getItem(k) ?? ""]);
    }
    return out;
  }
}

// ------------------------------------------------------------------ connect

/**
 * The broker URL of the page's own origin: `wss://host/` under https,
 * `ws://host/` under http.
 * @param path - default "/".
 */
export function sameOriginUrl(path = "/"): string {
  const loc = (globalThis as { location?: Location }).location;
  if (!loc) throw new PsimbolsError(ErrorCode.unsupported, "no location: pass the broker URL");
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}${path.startsWith("/") ? path : "/" + path}`;
}

/**
 * Options of the browser {@link connect}: those of the core `connect`; when
 * neither `serverKey` nor `knownServers` is given, trust on first use goes
 * to {@link LocalStorageKnownServers}; `kem` defaults to what
 * {@link detectAlgorithms} found. `kem: "X-Wing"` (post-quantum hybrid) is
 * opt-in: the first such handshake imports `xwing.js` beside the bundle.
 */
export type BrowserConnectOptions = ConnectOptions;

function reportMismatch(e: unknown): void {
  if (e instanceof PsimbolsError && e.code === ErrorCode.serverKeyMismatch) {
    // loud, as the Node CLI is: an application that swallows the error still leaves this in the console
    (globalThis as { console?: { error(...a: unknown[]): void } }).console?.error(`psimbols: ${e.message}`);
  }
}

/**
 * The core `connect` with browser defaults (see {@link BrowserConnectOptions}).
 * A server key that differs from the pinned or known one fails with
 * `server_key_mismatch`, is written to the console with `console.error`, and
 * the client does not retry.
 * @throws PsimbolsError as the core `connect`.
 */
export async function connect(url: string, options: BrowserConnectOptions): Promise<Client> {
  const opts: ConnectOptions = { ...options };
  if (opts.serverKey === undefined && opts.knownServers === undefined) opts.knownServers = new LocalStorageKnownServers();
  if (opts.kem === undefined) opts.kem = (await detectAlgorithms()).kem;
  let client: Client;
  try {
    client = await coreConnect(url, opts);
  } catch (e) {
    reportMismatch(e);
    throw e;
  }
  client.on("close", (ev) => reportMismatch(ev.error));
  return client;
}
