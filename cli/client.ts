/**
 * Client commands: `keygen`, `fingerprint`, `call`.
 */
import { type Command, Option } from "commander";
import { type KeyType, KeyType as KT, wirePublicKey } from "../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { connect } from "../client/node.js";
import { generateKeyFile, loadKey, loadPublicKey } from "../node/key-files.js";
import { int } from "./options.js";
import { KemType, kemTypes } from "../shared/frames.js";

const KEY_TYPES: Record<string, KeyType> = { ed25519: KT.ed25519, p256: KT.p256, rsa: KT.rsa };

/** Adds the client commands to `p`. */
export function clientCommands(p: Command): void {
  p.command("keygen")
    .description("generate an identity key (PKCS#8 PEM, mode 0600) and print its public key and fingerprint")
    .addOption(new Option("--type <type>", "key type").choices(Object.keys(KEY_TYPES)).default("ed25519"))
    .requiredOption("-o, --out <file>", "where to write the private key")
    .option("--force", "overwrite an existing file")
    .action(async (o: { type: string; out: string; force?: boolean }) => {
      const key = await generateKeyFile(KEY_TYPES[o.type]!, o.out, { force: o.force === true });
      console.log(JSON.stringify({ public_key: wirePublicKey(key.public), fingerprint: key.public.fingerprint }));
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
    .requiredOption("--key <file>", "identity key (PKCS#8 PEM)")
    .option("--server-key <fingerprint>", "pin the server key (otherwise trust on first use, kept in the known-servers file)")
    .option("--known-servers <file>", "known-servers file")
    .option("--timeout <ms>", "request timeout", int("--timeout"), 10_000)
    .addOption(new Option("--kem <type>", "ephemeral KEM of the handshake (X-Wing: post-quantum hybrid, issue 15)").choices(kemTypes).default(KemType.x25519))
    .action(async (url: string, op: string, json: string, o: { key: string; serverKey?: string; knownServers?: string; timeout: number; kem: KemType }) => {
      let data: unknown;
      try {
        data = JSON.parse(json);
      } catch {
        throw new PsimbolsError(ErrorCode.badRequest, "request data is not valid JSON");
      }
      const key = await loadKey(o.key);
      const client = await connect(url, {
        key,
        ...(o.serverKey ? { serverKey: o.serverKey } : {}),
        ...(o.knownServers ? { knownServersFile: o.knownServers } : {}),
        requestTimeoutMs: o.timeout,
        kem: o.kem,
        reconnect: false,
        renew: false,
      });
      try {
        console.log(JSON.stringify(await client.request(op, data, { timeoutMs: o.timeout })));
      } finally {
        await client.close().catch(() => {});
      }
    });

}
