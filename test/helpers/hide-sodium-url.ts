/** The `--import` argument (a file URL) that hides sodium-native in a child process (test/helpers/hide-sodium.ts). */
export const HIDE_SODIUM = new URL("./hide-sodium.js", import.meta.url).href;
