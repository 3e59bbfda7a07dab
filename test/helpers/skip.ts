/**
 * A test that cannot run here is reported as skipped, never as passed: uvu
 * counts it on its "Skipped:" line (which bin/test_psimbols.sh adds up into
 * "N skipped"), and the line "SKIPPED (reason): what" says why.
 */
import type { Test } from "uvu";

/**
 * Registers `what` on `t` as skipped for `reason` (one skip per call: a group
 * of tests that share a reason may be one call, named for the group).
 */
export function skip(t: Test<any>, what: string, reason: string): void {
  t.skip(`SKIPPED (${reason}): ${what}`);
  console.log(`SKIPPED (${reason}): ${what}`);
}
