/**
 * The `psimbols` command. Each command group lives in a file of its own:
 * client.ts (keygen, fingerprint, call), serve.ts, operate.ts (channels,
 * push), keys.ts, api-token.ts. Errors print `error: …` and, where it helps, `hint: …`,
 * and exit non-zero.
 */
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { ErrorCode, PsimbolsError } from "../shared/errors.js";
import { apiTokenCommands } from "./api-token.js";
import { clientCommands } from "./client.js";
import { hintOf } from "./errors.js";
import { keysCommands } from "./keys.js";
import { operatorCommands } from "./operate.js";
import { serveCommand } from "./serve.js";

/** The package's version, from its package.json (two levels up from dist/cli/). */
export function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/** The command tree. */
export function program(): Command {
  const p = new Command("psimbols")
    .description("Secure channel broker: a key pair and a URL are all a client needs.")
    .version(version(), "-V, --version", "print the version")
    .showHelpAfterError("(add --help for usage)");
  clientCommands(p);
  serveCommand(p);
  operatorCommands(p);
  keysCommands(p);
  apiTokenCommands(p);
  return p;
}

const HINTS: Partial<Record<ErrorCode, string>> = {
  server_key_mismatch: "the server's key differs from the pinned or known one",
  connection_lost: "is the broker running at that URL? start one with `psimbols serve`",
  forbidden: "the service refused this key: a closed service serves only registered keys (ask its operator to run `psimbols keys add` with your public key), and any service refuses keys its operator blocked",
  unsupported: "the server does not accept what this client offered",
  too_many: "rate limited: wait a little and try again",
  unavailable: "the broker answered that its store (Redis) is down: try again shortly",
};

/** Runs the CLI; never throws. */
export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv);
  } catch (e) {
    if (e instanceof PsimbolsError) {
      console.error(`error: ${e.message} (${e.code})`);
      const hint = hintOf(e) ?? HINTS[e.code];
      if (hint) console.error(`hint: ${hint}`);
    } else {
      console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
      const hint = hintOf(e);
      if (hint) console.error(`hint: ${hint}`);
    }
    process.exitCode = 1;
  }
}
