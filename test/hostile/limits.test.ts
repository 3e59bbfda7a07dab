/**
 * The hostile-frame matrix, limit rows: connections and hellos per address,
 * handshake timeouts (slowloris), requests in flight, expiry — on brokers with
 * tight limits or a 2-second channel ttl, each row from its own source address, each followed by the
 * "nothing changed" check (test/hostile/env.ts).
 */
import { runMatrix } from "./env.js";
import { limitRows } from "./matrix.js";

runMatrix("hostile limits", ["tight", "slow", "short"], limitRows);
