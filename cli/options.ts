/**
 * What the command groups of the CLI share: option parsers.
 */
import { InvalidArgumentError } from "commander";

/** A commander parser for an integer option, naming the option in its error. */
export function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${name} expects an integer`);
    return n;
  };
}
