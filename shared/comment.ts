/**
 * The comment of a registered key (docs/OPERATIONS.md "Registered keys"): what
 * operators know a key by, shown in `psimbols keys list`, the console and
 * `admin.channels`. One line of at most {@link MAX_KEY_COMMENT} characters
 * without control characters, so a comment cannot forge rows of a listing or
 * reorder what is shown around it. Every write of the registry checks it
 * (server/registry.ts); listings escape what older entries hold
 * ({@link escapeComment}).
 */

/** Longest comment, in characters (Unicode code points). */
export const MAX_KEY_COMMENT = 200;

/**
 * Characters a comment may not hold: Unicode category Cc (C0, DEL, C1: newlines,
 * ANSI escapes), the bidi embeddings, overrides and isolates (U+202A–U+202E,
 * U+2066–U+2069) and the line and paragraph separators (U+2028, U+2029).
 */
const FORBIDDEN = /[\p{Cc}\u202A-\u202E\u2066-\u2069\u2028\u2029]/u;
const FORBIDDEN_ALL = new RegExp(FORBIDDEN.source, "gu");

/**
 * Why `comment` may not be registered, or undefined when it may.
 * @returns a sentence naming the rule broken (never echoing the comment).
 */
export function commentProblem(comment: string): string | undefined {
  const n = [...comment].length;
  if (n > MAX_KEY_COMMENT) return `a comment is at most ${MAX_KEY_COMMENT} characters, got ${n}`;
  const bad = FORBIDDEN.exec(comment);
  if (bad) return `a comment is one line without control characters (found ${escapeComment(bad[0])} at character ${[...comment.slice(0, bad.index)].length + 1})`;
  return undefined;
}

/** `s` with every character {@link commentProblem} refuses written as `\uXXXX`: safe to print in a row. */
export function escapeComment(s: string): string {
  return s.replace(FORBIDDEN_ALL, (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, "0")}`);
}
