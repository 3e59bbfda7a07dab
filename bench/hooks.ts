/**
 * `node --import ./dist/bench/hooks.js`: module hooks of the bench server.
 * With `PSIMBOLS_BENCH_AEAD=node` and/or `PSIMBOLS_BENCH_CRYPTO=node`, imports
 * of shared/ modules resolve to the node:crypto prototypes in bench/ (see
 * resolve-hooks.ts), so the unmodified broker runs on them. Nothing is
 * swapped without the variables.
 */
import { register } from "node:module";

if (process.env.PSIMBOLS_BENCH_AEAD === "node" || process.env.PSIMBOLS_BENCH_CRYPTO === "node") {
  register("./resolve-hooks.js", import.meta.url);
}
