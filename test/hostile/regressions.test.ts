/**
 * Hostile-matrix rows for bugs this matrix found and that are now fixed (the
 * `bug` of each row says what was wrong, and where): regression tests, run
 * against real broker processes like every other row.
 */
import { runMatrix } from "./env.js";
import { regressionRows } from "./matrix.js";

runMatrix("hostile matrix, regressions", ["main", "tight", "slow", "long"], regressionRows);
