/**
 * `api-token create|list|revoke`: bearer tokens of the server API
 * (`serve --api-listen`). A new token is printed once; only its SHA-256 is
 * kept, in the tokens file beside the keys file, or in Redis for a cluster
 * (server/api/tokens.ts).
 */
import type { Command } from "commander";
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { defaultDataDir } from "../server/config.js";
import { ALL_SCOPES, DEFAULT_SCOPES, FileTokenStore, RedisTokenStore, type TokenStore, isTokenId, newToken, parseScopes, scopesOf } from "../server/api/tokens.js";
import { CliError } from "./errors.js";

/** The default tokens file: beside the default keys file. */
export const defaultTokensFile = (): string => join(defaultDataDir(), "api-tokens.json");

/**
 * Which `serve` reads the tokens just written: a node reads the tokens file
 * beside its keys file, or with --redis and no --keys the cluster's Redis
 * (cli/serve.ts). Said at create, because the default file is only read by a
 * node whose keys file is the default one.
 */
function readBy(o: { file: string; redis?: string }): string {
  if (o.redis) return "read by nodes with --redis and no --keys (serve --api-listen)";
  const keys = join(dirname(o.file), "keys.json");
  return `read by a node whose keys file is ${keys} (serve --api-listen … --keys ${keys}${o.file === defaultTokensFile() ? ", or no --keys and the default --data-dir" : ""})`;
}

/** Adds `api-token` to `p`. */
export function apiTokenCommands(p: Command): void {
  const tokens = p.command("api-token").description("manage the bearer tokens of the server API (serve --api-listen)");
  const where = (c: Command) =>
    c
      .option("--file <api-tokens.json>", "tokens file; a node reads the api-tokens.json beside its keys file (serve --keys DIR/keys.json: DIR/api-tokens.json)", defaultTokensFile())
      .option("--redis <url>", "the cluster's Redis instead of a file");
  const withStore = async <T>(o: { file: string; redis?: string }, f: (s: TokenStore) => Promise<T>): Promise<T> => {
    const s = o.redis ? new RedisTokenStore(o.redis) : new FileTokenStore(o.file);
    try {
      return await f(s);
    } finally {
      await s.close();
    }
  };
  where(tokens.command("create"))
    .description("create a token and print it once (only its hash is stored)")
    .option("--comment <text>", "a note: who uses it", "")
    .option("--scope <list>", `what it may do, comma-separated: ${ALL_SCOPES.join(", ")}, or all (default ${DEFAULT_SCOPES.join(",")})`)
    .action(async (o: { file: string; redis?: string; comment: string; scope?: string }) => {
      let scopes = DEFAULT_SCOPES;
      if (o.scope !== undefined) {
        try {
          scopes = parseScopes(o.scope);
        } catch (e) {
          throw new CliError((e as Error).message, "for example --scope push,read; keys:operator is needed to register, change or remove operator keys");
        }
      }
      const { token, entry } = newToken(o.comment, scopes);
      if (!o.redis) await mkdir(dirname(o.file), { recursive: true, mode: 0o700 }); // as keygen: a new folder holds secrets' hashes
      await withStore(o, (s) => s.add(entry));
      console.error(`created token ${entry.id} (scopes ${scopes.join(",")}) in ${o.redis ? "redis" : o.file}; ${readBy(o)}; it is shown once, keep it now:`);
      console.log(token);
    });
  where(tokens.command("list"))
    .description("list tokens by id (never the tokens)")
    .option("--json", "print JSON")
    .action(async (o: { file: string; redis?: string; json?: boolean }) => {
      const list = await withStore(o, (s) => s.list());
      // A token made before scopes keeps every scope: marked, so an operator can replace it with a narrower one.
      const rows = list.map((t) => ({ id: t.id, comment: t.comment, created: t.created, scopes: [...scopesOf(t)], ...(t.scopes === undefined ? { legacy: true } : {}) }));
      if (o.json) return console.log(JSON.stringify(rows, null, 2));
      for (const t of rows) console.log(`${t.id}  ${t.created}  ${t.legacy ? "all (made before scopes)" : t.scopes.join(",")}  ${t.comment}`);
      if (rows.length === 0) console.error(`no tokens in ${o.redis ? "redis" : o.file}`);
    });
  where(tokens.command("revoke"))
    .description("revoke a token by id; it is refused at once")
    .argument("<id>", "the token's id (16 hex digits, as `list` shows)")
    .action(async (id: string, o: { file: string; redis?: string }) => {
      if (!isTokenId(id)) throw new PsimbolsError(ErrorCode.badRequest, "a token id is 16 hex digits (see `psimbols api-token list`)");
      if (!(await withStore(o, (s) => s.remove(id)))) throw new PsimbolsError(ErrorCode.notFound, `no token ${id} in ${o.redis ? "redis" : o.file}`);
      console.log(`revoked ${id}`);
    });
}
