/**
 * psimbols client for Node ("psimbols/node"): everything of the browser-safe
 * core, plus PKCS#8 key files, a known-servers file (as SSH's known_hosts),
 * and `connect` defaulting to the `ws` package's WebSocket.
 */
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { type ClientOptions, WebSocket } from "ws";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import type { SigningKey } from "../shared/crypto.js";
import { type Client, type ConnectOptions, type KnownServers, type WebSocketCtor, connect as coreConnect } from "./connection.js";
import { loadKey } from "../node/key-files.js";
import { useNodeCrypto } from "../node/engines.js";

export * from "./index.js";
export { type GenerateKeyFileOptions, generateKeyFile, keyTypeOf, loadKey, loadPublicKey, publicKeyPath } from "../node/key-files.js";
export { useNodeCrypto } from "../node/engines.js";

// ------------------------------------------------------------------ known servers

/** `$PSIMBOLS_HOME/known_servers`, or `~/.psimbols/known_servers`. */
export function defaultKnownServersPath(): string {
  const home = process.env.PSIMBOLS_HOME;
  return home ? join(home, "known_servers") : join(homedir(), ".psimbols", "known_servers");
}

/** What {@link FileKnownServers} reports when it learns a server's key on first use. */
export interface ServerKeyLearnt {
  /** The broker URL. */
  url: string;
  /** The fingerprint now recorded for it. */
  fingerprint: string;
  /** The known-servers file it was written to. */
  path: string;
}

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

/**
 * {@link KnownServers} over a text file, one server a line:
 * `<url> <fingerprint>`, or `<url> <fingerprint> next=<fingerprint>` once the
 * server's key announced its successor (PROTOCOL.md §5.6).
 * Blank lines and lines starting with `#` are ignored. The file is read on
 * every lookup (so edits apply at once) and created with mode 0600 in a
 * directory of mode 0700.
 */
export class FileKnownServers implements KnownServers {
  /** The file. */
  readonly path: string;
  readonly #onLearn: ((learnt: ServerKeyLearnt) => void) | undefined;

  /**
   * @param path - default {@link defaultKnownServersPath}.
   * @param options.onLearn - called once when a server's key is recorded for
   *   the first time (trust on first use), after the line is written; not
   *   called for a server already known. The CLI prints it, as SSH does.
   */
  constructor(path: string = defaultKnownServersPath(), options: { onLearn?: (learnt: ServerKeyLearnt) => void } = {}) {
    this.path = path;
    this.#onLearn = options.onLearn;
  }

  /**
   * The fingerprint recorded for `url`.
   * @throws PsimbolsError `bad_request` naming the line of a malformed entry.
   */
  async get(url: string): Promise<string | undefined> {
    return (await this.#read()).get(url)?.current;
  }

  /** The next key recorded for `url` (§5.6). @throws as {@link get}. */
  async getNext(url: string): Promise<string | undefined> {
    return (await this.#read()).get(url)?.next;
  }

  /** Records (or replaces) the fingerprint of `url`, forgetting its next key. */
  async set(url: string, fingerprint: string): Promise<void> {
    checkEntry(url, fingerprint);
    const known = (await this.#read()).get(url);
    if (known?.current === fingerprint && known.next === undefined) return;
    if (known === undefined) {
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      // O_APPEND: concurrent writers of short lines do not interleave
      await writeFile(this.path, `${url} ${fingerprint}\n`, { flag: "a", mode: 0o600 });
      this.#onLearn?.({ url, fingerprint, path: this.path });
      return;
    }
    await this.#rewrite(url, `${url} ${fingerprint}`);
  }

  /** Records the next key of `url` beside its current one (§5.6); a no-op when `url` is not known. */
  async setNext(url: string, fingerprint: string): Promise<void> {
    checkEntry(url, fingerprint);
    const known = (await this.#read()).get(url);
    if (known === undefined || known.next === fingerprint || known.current === fingerprint) return;
    await this.#rewrite(url, `${url} ${known.current} next=${fingerprint}`);
  }

  /** Every recorded server, in file order. @throws as {@link get}. */
  async entries(): Promise<{ url: string; fingerprint: string; next?: string }[]> {
    return [...(await this.#read())].map(([url, k]) => (k.next === undefined ? { url, fingerprint: k.current } : { url, fingerprint: k.current, next: k.next }));
  }

  /**
   * Forgets `url` (its line goes, comments and other lines stay), so the next
   * connection learns its key again on first use. Resolves whether it was known.
   */
  async delete(url: string): Promise<boolean> {
    if (!(await this.#read()).has(url)) return false;
    await this.#rewrite(url, undefined);
    return true;
  }

  /** Replaces (or, with `undefined`, removes) the line of `url` atomically (write a temporary file, rename). */
  async #rewrite(url: string, line: string | undefined): Promise<void> {
    const text = await readFile(this.path, "utf8");
    const lines = text.split("\n").flatMap((l) => (l.trim().split(/\s+/)[0] === url && !l.trim().startsWith("#") ? (line === undefined ? [] : [line]) : [l]));
    const tmp = `${this.path}.${process.pid}.tmp`;
    await writeFile(tmp, lines.join("\n"), { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, this.path);
  }

  async #read(): Promise<Map<string, { current: string; next?: string }>> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") return new Map();
      throw new PsimbolsError(ErrorCode.unavailable, `cannot read the known-servers file ${this.path}`, { cause });
    }
    const out = new Map<string, { current: string; next?: string }>();
    text.split("\n").forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const parts = line.split(/\s+/);
      const [url, fp, nextPart] = parts;
      const next = nextPart?.startsWith(NEXT_PREFIX) ? nextPart.slice(NEXT_PREFIX.length) : undefined;
      const ok = url !== undefined && fp !== undefined && FINGERPRINT.test(fp) && (parts.length === 2 || (parts.length === 3 && next !== undefined && FINGERPRINT.test(next)));
      if (!ok) throw new PsimbolsError(ErrorCode.badRequest, `${this.path}:${i + 1}: expected "<url> SHA256:<fingerprint>" with an optional "next=SHA256:<fingerprint>"`);
      out.set(url, next === undefined ? { current: fp } : { current: fp, next });
    });
    return out;
  }
}

const NEXT_PREFIX = "next=";

function checkEntry(url: string, fingerprint: string): void {
  if (typeof url !== "string" || url.length === 0 || /\s/.test(url)) {
    throw new PsimbolsError(ErrorCode.badRequest, `"url" expected a non-empty string without whitespace`);
  }
  if (!FINGERPRINT.test(fingerprint)) throw new PsimbolsError(ErrorCode.badRequest, `"fingerprint" expected "SHA256:" + 43 base64 characters`);
}

// ------------------------------------------------------------------ connect

/**
 * The `ws` WebSocket class the Node `connect` opens sockets with, with
 * `options` for ws and its socket (e.g. `localAddress`). Unless `options`
 * say otherwise: permessage-deflate is off (channel frames are ciphertext,
 * which does not compress, and the broker never agrees to it, so offering it
 * only cost each reconnect a compressor set up and torn down), and
 * TCP_NODELAY is set as the socket connects (`noDelay`), where ws would set
 * it after the upgrade, once the server's answer is queued on the socket:
 * that system call cost a resume about 15 µs of its client's CPU
 * (docs/PERFORMANCE.md, `bench/resume.ts`).
 */
export function nodeWebSocket(options: ClientOptions = {}): WebSocketCtor {
  const o: ClientOptions = { perMessageDeflate: false, noDelay: true, ...options } as ClientOptions;
  return class extends WebSocket {
    constructor(url: string) {
      super(url, o);
    }
  };
}

const DefaultWebSocket = nodeWebSocket();

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
  /**
   * With the known-servers file (neither `serverKey` nor `knownServers`
   * given): called once when the server's key is learnt and recorded on
   * first use. See {@link FileKnownServers}.
   */
  onServerKeyLearnt?: (learnt: ServerKeyLearnt) => void;
}

/**
 * {@link ConnectOptions}-compatible `connect` for Node: the socket defaults
 * to the `ws` package's WebSocket ({@link nodeWebSocket}), and trust on first use to the
 * known-servers file, and the handshake and channel cryptography to the
 * node:crypto engines ({@link useNodeCrypto}: the same bytes as WebCrypto,
 * several times cheaper). See the core `connect` for behaviour and errors.
 */
export async function connect(url: string, options: NodeConnectOptions): Promise<Client> {
  await useNodeCrypto();
  const { knownServersFile, key, onServerKeyLearnt, ...rest } = options;
  const opts: ConnectOptions = {
    ...rest,
    key: typeof key === "string" ? await loadKey(key) : key,
    WebSocket: options.WebSocket ?? DefaultWebSocket,
  };
  if (opts.knownServers === undefined && opts.serverKey === undefined && knownServersFile !== false) {
    opts.knownServers = new FileKnownServers(knownServersFile ?? defaultKnownServersPath(), onServerKeyLearnt ? { onLearn: onServerKeyLearnt } : {});
  }
  return coreConnect(url, opts);
}
