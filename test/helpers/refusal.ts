/** Asserting how a call is refused: the exact PsimbolsError code, and the message where it matters. */
import * as assert from "uvu/assert";
import { PsimbolsError } from "../../shared/errors.js";

/**
 * Awaits `p` and asserts that it rejects with a PsimbolsError of `code`
 * (and, when given, a message matching `message`).
 *
 * @returns the error, for further checks.
 */
export async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<PsimbolsError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, PsimbolsError);
    assert.is((e as PsimbolsError).code, code);
    if (message) assert.match((e as PsimbolsError).message, message);
    return e as PsimbolsError;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error("unreachable");
}

/** How a call ends: "none" when it succeeds, else its error's `code` (or the error's text when it has none). */
export async function outcome(f: () => unknown): Promise<string> {
  try {
    await f();
    return "none";
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}
