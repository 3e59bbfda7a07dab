/**
 * What the command groups of the CLI share: option parsers.
 */
import { InvalidArgumentError } from "commander";
import { parseChannelTypes } from "../server/config.js";

/** A commander parser for an integer option, naming the option in its error. */
export function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${name} expects an integer`);
    return n;
  };
}

/** A commander parser for `--channel-types`: comma-separated exact type names (server/config.ts parseChannelTypes). */
export function channelTypeList(name: string) {
  return (v: string) => {
    try {
      return parseChannelTypes(v);
    } catch (e) {
      throw new InvalidArgumentError(`${name}: ${e instanceof Error ? e.message.replace(/^setting channel-types: /, "") : String(e)}`);
    }
  };
}
