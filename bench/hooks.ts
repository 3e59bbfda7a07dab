/**
 * `node --import ./dist/bench/hooks.js`: module hooks of the bench server.
 * With `PSIMBOLS_BENCH_AEAD=node`, imports of shared/channel.js resolve to the
 * node:crypto prototype in bench/ (see resolve-hooks.ts), so the unmodified
 * broker runs on it. Nothing is swapped without the variable.
 * (`PSIMBOLS_BENCH_CRYPTO` swaps nothing any more: the handshake runs on
 * node:crypto in the project's own code, client/node/handshake-crypto.ts.)
 */
import { register } from "node:module";

if (process.env.PSIMBOLS_BENCH_AEAD === "node") {
  register("./resolve-hooks.js", import.meta.url);
}
