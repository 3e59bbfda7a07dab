/**
 * `node --import <this file>` (or NODE_OPTIONS="--import=<url>") runs a
 * process as if `sodium-native` were not installed: its import fails, so
 * node/chacha.ts falls back to node:crypto (docs/CLIENT.md, Install: the suite passes with
 * and without the optional dependency). Importing this module hides it in
 * the importing process: tests pass HIDE_SODIUM (hide-sodium-url.ts) to children.
 */
import { register } from "node:module";

register("./hide-sodium-hooks.js", import.meta.url);
