/**
 * Command-line options of the long runs (`npm run storm`, `load:cluster`,
 * `node dist/bench/resume.js`): one parser, so that each says what it
 * expects the same way. `--help` prints the usage and exits.
 */

/** What an option does: a flag takes no value (`() => …`); any other takes the next argument. */
export type OptionHandlers = Record<string, (() => void) | ((value: string) => void)>;

/**
 * Runs each option's handler in order.
 * @throws Error `NAME expects …` (from a handler's RangeError) or `unknown option NAME`, with the usage.
 */
export function parseOptions(argv: readonly string[], usage: string, handlers: OptionHandlers): void {
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i]!;
    if (name === "--help" || name === "-h") {
      console.log(usage);
      process.exit(0);
    }
    const handler = Object.hasOwn(handlers, name) ? handlers[name]! : undefined;
    if (!handler) throw new Error(`unknown option ${name}\n${usage}`);
    if (handler.length === 0) {
      (handler as () => void)();
      continue;
    }
    const value = argv[++i];
    try {
      if (value === undefined) throw new RangeError("expects a value");
      handler(value);
    } catch (e) {
      throw new Error(`${name} ${e instanceof Error ? e.message : String(e)}\n${usage}`);
    }
  }
}

/** `text` as an integer from `min` to `max`. @throws RangeError saying so. */
export function integer(text: string, min: number, max: number): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isInteger(n) || n < min || n > max) throw new RangeError(`expects an integer from ${min} to ${max}`);
  return n;
}

/** `text` as a number from `min` to `max`. @throws RangeError saying so. */
export function number(text: string, min: number, max: number): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n) || n < min || n > max) throw new RangeError(`expects a number from ${min} to ${max}`);
  return n;
}
