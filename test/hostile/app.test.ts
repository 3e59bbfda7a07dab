/**
 * The hostile-frame matrix, application rows (docs/BACKEND.md): hostile upstream and
 * authorize answers against a broker forwarding to a hostile application,
 * each followed by the "nothing changed" check (test/hostile/env.ts).
 */
import { runMatrix } from "./env.js";
import { appRows } from "./app-rows.js";

runMatrix("hostile app", ["app"], appRows);
// The hostile application (test/hostile/hostile-app.ts) lives in this process, unref'd: it does not hold the exit.
