/**
 * Client commands: `keygen`, `fingerprint`, `call`, `known-servers`.
 */
import { type Command, Option } from "commander";
import { type KeyType, KeyType as KT, wirePublicKey } from "../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { FileKnownServers, connect, defaultKnownServersPath } from "../client/node.js";
import { generateKeyFile, loadKey, loadPublicKey, publicKeyPath } from "../node/key-files.js";
import { required, withHint } from "./errors.js";
import { int } from "./options.js";
import { KemType, isAdminOp, kemTypes } from "../shared/frames.js";
import { ADMIN_OPS, UNKNOWN_ADMIN_OP } from "../server/operator.js";

const KEY_TYPES: Record<string, KeyType> = { ed25519: KT.ed25519, p256: KT.p256, rsa: KT.rsa };

/** Adds the client commands to `p`. */
export function clientCommands(p: Command): void {
  p.command("keygen")
    .description("generate an identity key (PKCS#8 PEM, mode 0600) and print its public key and fingerprint")
    .addOption(new Option("--type <type>", "key type").choices(Object.keys(KEY_TYPES)).default("ed25519"))
    .option("-o, --out <file>", "where to write the private key (required); the public key goes beside it, k.pem → k.pub.pem")
    .option("--no-public", "do not write the public key file")
    .option("--force", "overwrite existing files")
    .action(async (o: { type: string; out?: string; public: boolean; force?: boolean }) => {
      const out = required(o.out, "-o, --out <file>");
      let key;
      try {
        key = await generateKeyFile(KEY_TYPES[o.type]!, out, { force: o.force === true, publicFile: o.public });
      } catch (e) {
        throw e instanceof PsimbolsError && / exists; /.test(e.message) ? withHint(e, "pass --force to overwrite it, or choose another file with -o") : e;
      }
      const publicFile = o.public ? publicKeyPath(out) : undefined;
      // stdout: one JSON line for scripts; stderr: where the files went, for people.
      console.log(JSON.stringify({ public_key: wirePublicKey(key.public), fingerprint: key.public.fingerprint, ...(publicFile ? { public_file: publicFile } : {}) }));
      console.error(`private key: ${out} (mode 0600, keep it secret)${publicFile ? `\npublic key:  ${publicFile} (give this one to \`psimbols keys add\`)` : ""}`);
    });

  p.command("fingerprint")
    .description("print the fingerprint of a key file (private or public PEM)")
    .argument("<file>")
    .action(async (file: string) => console.log((await loadPublicKey(file)).fingerprint));

  p.command("call")
    .description("make one request and print the response data as JSON")
    .argument("<url>", "broker URL, e.g. ws://127.0.0.1:9393/")
    .argument("<op>", "operation, e.g. echo")
    .argument("[json]", "request data as JSON", "null")
    .option("--key <file>", "identity key (PKCS#8 PEM; required)")
    .option("--server-key <fingerprint>", "pin the server key (otherwise trust on first use, kept in the known-servers file)")
    .option("--known-servers <file>", "known-servers file")
    .option("--timeout <ms>", "request timeout", int("--timeout"), 10_000)
    .addOption(new Option("--kem <type>", "ephemeral KEM of the handshake (X-Wing: post-quantum hybrid, PROTOCOL.md §5.3.1)").choices(kemTypes).default(KemType.x25519))
    .action(async (url: string, op: string, json: string, o: { key?: string; serverKey?: string; knownServers?: string; timeout: number; kem: KemType }) => {
      const keyFile = required(o.key, "--key <file>");
      let data: unknown;
      try {
        data = JSON.parse(json);
      } catch {
        throw new PsimbolsError(ErrorCode.badRequest, "request data is not valid JSON");
      }
      const key = await loadIdentityKey(keyFile, "--key");
      const knownServersFile = o.knownServers ?? defaultKnownServersPath();
      let client;
      try {
        const options = {
          key,
          ...(o.serverKey ? { serverKey: o.serverKey } : {}),
          knownServersFile,
          // As SSH does: say once that a key was learnt, and where it went (stderr, so stdout stays the response).
          onServerKeyLearnt: (l: { url: string; fingerprint: string; path: string }) =>
            console.error(`psimbols: learnt the key of ${l.url}: ${l.fingerprint}\npsimbols: recorded in ${l.path}; a different key from this server will be refused`),
          requestTimeoutMs: o.timeout,
          kem: o.kem,
          reconnect: false as const,
          renew: false,
        };
        // A busy node's refusal carries how long to wait (PROTOCOL.md §11.4): wait it and try again, while
        // the wait fits in --timeout. A refusal without the hint (a fixed cap, PROTOCOL.md §11.1) is final.
        for (const deadline = Date.now() + o.timeout; ; ) {
          try {
            client = await connect(url, options);
            break;
          } catch (e) {
            const wait = e instanceof PsimbolsError && e.code === ErrorCode.tooMany ? e.retryAfterMs : undefined;
            if (wait === undefined || Date.now() + wait > deadline) throw e;
            console.error(`psimbols: ${(e as PsimbolsError).message}; trying again in ${wait} ms`);
            await new Promise((r) => setTimeout(r, wait));
          }
        }
      } catch (e) {
        // The known-servers file is local: its failure is not the broker's store being down (cli/main.ts's generic hint).
        if (e instanceof PsimbolsError && e.code === ErrorCode.unavailable && e.message.startsWith("the known-servers store could not be read")) {
          throw withHint(e, `fix or remove ${knownServersFile} (one \`<url> SHA256:<fingerprint>\` a line); this is a local file, not the broker`);
        }
        if (e instanceof PsimbolsError && e.code === ErrorCode.serverKeyMismatch) {
          throw withHint(
            e,
            o.serverKey
              ? "the server's key is not the one --server-key pins: check the fingerprint the broker printed (also at GET /.well-known/psimbols)"
              : `the server's key is not the one recorded in ${knownServersFile}. If you know why it changed (a broker you restarted with a new key), run \`psimbols known-servers forget ${url}\` and try again; otherwise do not`,
          );
        }
        throw e;
      }
      try {
        console.log(JSON.stringify(await client.request(op, data, { timeoutMs: o.timeout })));
      } catch (e) {
        // The admin. namespace (in any case) is the broker's and never forwarded (PROTOCOL.md §6.6): its refusal is the broker's own.
        if (e instanceof PsimbolsError && isAdminOp(op) && e.code === ErrorCode.forbidden) {
          throw withHint(
            e,
            `the broker itself refused ${JSON.stringify(op)}: admin.* ops (in any case) are for keys registered with the operator role, and this key is not one (its handshake completed); the service's operator registers one with \`psimbols keys add KEY.pub.pem --role operator\` in the keys file (or --redis) the broker reads`,
          );
        }
        // Only for an op the broker does not implement: another not_found (no such key, no such channel) is the op's own answer.
        if (e instanceof PsimbolsError && isAdminOp(op) && e.code === ErrorCode.notFound && e.message === UNKNOWN_ADMIN_OP) {
          throw withHint(e, `the broker implements ${ADMIN_OPS.join(", ")} (exact names); no admin.* op is ever forwarded to an application`);
        }
        // The key passed its handshake: a forbidden now is the op's handler (the application) refusing, not the service refusing the key.
        if (e instanceof PsimbolsError && e.code === ErrorCode.forbidden) {
          throw withHint(e, `the service's handler for ${JSON.stringify(op)} refused this request (its own answer); this is not a refusal of your key, which completed the handshake`);
        }
        if (e instanceof PsimbolsError && e.code === ErrorCode.unavailable) {
          throw withHint(e, `the service, or the application that answers ${JSON.stringify(op)}, could not answer this request: try again shortly`);
        }
        throw e;
      } finally {
        await client.close().catch(() => {});
      }
    });

  const known = p.command("known-servers").description("list or forget the server keys learnt on first use (the known-servers file, as SSH's known_hosts)");
  const file = (o: { knownServers?: string }) => new FileKnownServers(o.knownServers ?? defaultKnownServersPath());
  known
    .command("list")
    .description("print each known server: URL, fingerprint, and the next key it announced")
    .option("--known-servers <file>", "known-servers file")
    .action(async (o: { knownServers?: string }) => {
      for (const e of await file(o).entries()) console.log(`${e.url} ${e.fingerprint}${e.next ? ` next=${e.next}` : ""}`);
    });
  known
    .command("forget")
    .description("forget a server's key: the next connection learns it again on first use")
    .argument("<url>", "the broker URL as recorded, e.g. ws://127.0.0.1:9393/")
    .option("--known-servers <file>", "known-servers file")
    .action(async (url: string, o: { knownServers?: string }) => {
      const store = file(o);
      const fingerprint = await store.get(url);
      if (fingerprint === undefined || !(await store.delete(url))) {
        throw withHint(new PsimbolsError(ErrorCode.notFound, `${url} is not in ${store.path}`), "`psimbols known-servers list` shows the URLs as recorded");
      }
      console.error(`forgot ${url} (${fingerprint}) from ${store.path}`);
    });

}

/**
 * Loads an identity key for a command; a file that is not a psimbols key
 * gets a hint about the file (the refusal is local, not the server's).
 */
export async function loadIdentityKey(file: string, flag: string): Promise<Awaited<ReturnType<typeof loadKey>>> {
  try {
    return await loadKey(file);
  } catch (e) {
    if (e instanceof PsimbolsError && (e.code === ErrorCode.unsupported || e.code === ErrorCode.badRequest)) {
      throw withHint(e, `${flag} takes a PKCS#8 PEM private key of type Ed25519, ECDSA P-256 or RSA; make one with \`psimbols keygen -o FILE\``);
    }
    throw e;
  }
}
