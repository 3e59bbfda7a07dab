/**
 * The hostile-frame matrix, application rows (issue 12): hostile upstream and
 * authorize answers against a broker forwarding to a hostile application,
 * each followed by the "nothing changed" check (test/hostile/env.ts).
 */
import { runMatrix } from "./env.js";
import { appRows } from "./app-rows.js";
import { hostileApp } from "./hostile-app.js";

runMatrix("hostile app", ["app"], appRows);
// The hostile application lives in this process: close it once the suite is done.
process.on("beforeExit", () => void hostileApp().then((a) => a.close()));
