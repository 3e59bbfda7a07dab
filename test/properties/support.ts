/**
 * Shared pieces of the property tests (fast-check).
 *
 * Every property has a fixed number of runs sized for the normal test command
 * (`bin/test_psimbols.sh`, the whole property set in well under a minute on two
 * cores). A long run multiplies them:
 *
 *   npx tsc -p tsconfig.json && PSIMBOLS_FUZZ_FACTOR=100 npm run fuzz
 *
 * `PSIMBOLS_FUZZ_SEED` replays one run (fast-check prints the seed and the
 * path of a failing case); with `PSIMBOLS_FUZZ_PATH` too, it goes straight to
 * the shrunk case.
 */
import fc from "fast-check";
import { Broker, createLogger } from "../../server/index.js";
import { type SigningKey, generateSigningKey } from "../../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";

const factor = Number(process.env.PSIMBOLS_FUZZ_FACTOR ?? 1);
if (!(factor > 0)) throw new RangeError(`PSIMBOLS_FUZZ_FACTOR expected a positive number, got ${process.env.PSIMBOLS_FUZZ_FACTOR}`);
const seed = process.env.PSIMBOLS_FUZZ_SEED === undefined ? undefined : Number(process.env.PSIMBOLS_FUZZ_SEED);
if (seed !== undefined && !Number.isInteger(seed)) throw new RangeError(`PSIMBOLS_FUZZ_SEED expected an integer, got ${process.env.PSIMBOLS_FUZZ_SEED}`);
const path = process.env.PSIMBOLS_FUZZ_PATH;
if (path !== undefined && seed === undefined) throw new RangeError("PSIMBOLS_FUZZ_PATH needs PSIMBOLS_FUZZ_SEED (the path is a walk from that seed's runs)");

/** fast-check parameters: `n` runs (times PSIMBOLS_FUZZ_FACTOR), the seed (and path) if given. */
export function params<T>(n: number, extra: fc.Parameters<T> = {}): fc.Parameters<T> {
  return { numRuns: Math.max(1, Math.round(n * factor)), ...(seed === undefined ? {} : { seed }), ...(path === undefined ? {} : { path }), ...extra };
}

/** Runs `f`; returns the PsimbolsError it threw, or undefined. Any other throw fails the property. */
export async function psimbolsError(f: () => unknown): Promise<PsimbolsError | undefined> {
  try {
    await f();
    return undefined;
  } catch (e) {
    if (e instanceof PsimbolsError) return e;
    throw new Error(`expected a PsimbolsError or no error, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e });
  }
}

/** Synchronous {@link psimbolsError}. */
export function psimbolsErrorSync(f: () => unknown): PsimbolsError | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    if (e instanceof PsimbolsError) return e;
    throw new Error(`expected a PsimbolsError or no error, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e });
  }
}

export const documentedCodes: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/**
 * An in-process broker on an ephemeral port, with limits that stay out of the way of the properties.
 * Its log is silent: the tests provoke errors it logs at level error (hostile inputs, oversized results),
 * and a green run should read clean. PSIMBOLS_TEST_LOGS=1 shows them when debugging.
 */
export async function inProcessBroker(): Promise<{ broker: Broker; url: string; serverKey: SigningKey }> {
  const serverKey = await generateSigningKey();
  const logger = createLogger({ level: "error", json: true });
  logger.silent = process.env.PSIMBOLS_TEST_LOGS !== "1";
  const broker = await Broker.start({
    config: {
      port: 0,
      dataDir: "/nonexistent",
      limits: { hellosPerAddress: 1_000_000, hellosPerSecond: 1_000_000, resumesPerAddress: 1_000_000, resumesPerSecond: 1_000_000, handshakesPerIdentityPerMinute: 1_000_000 },
    },
    serverKey,
    logger,
  });
  return { broker, url: `ws://127.0.0.1:${broker.port}/`, serverKey };
}
