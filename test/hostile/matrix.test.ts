/**
 * The hostile-frame matrix, protocol rows: malformed and reflected frames,
 * bad keys and signatures, tampered and replayed requests, forged resumes,
 * closed, revoked and replaced channels, floods — each against a real broker
 * process, each followed by the "nothing changed" check (test/hostile/env.ts).
 */
import { runMatrix } from "./env.js";
import { rows } from "./matrix.js";

runMatrix("hostile matrix", ["main"], rows);
