/**
 * Full-jitter exponential backoff ("Exponential Backoff And Jitter", AWS
 * Architecture Blog, 2015): `delay = random(0, min(maxMs, baseMs · 2^attempt))`.
 * A pure function: the caller passes the random value, so tests are exact.
 */

/** Backoff bounds in milliseconds. */
export interface BackoffOptions {
  /** Cap of the first attempt's delay, and the unit that doubles. Default 250 ms. */
  readonly baseMs: number;
  /** Largest delay ever returned. Default 30 s. */
  readonly maxMs: number;
}

/** The defaults: base 250 ms, cap 30 s. */
export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({ baseMs: 250, maxMs: 30_000 });

/** 2^62 · baseMs is already far beyond any sensible cap; larger exponents only risk Infinity·0. */
const MAX_EXPONENT = 62;

/**
 * The delay before retry number `attempt` (0 for the first retry).
 *
 * @param attempt - retries made so far: a non-negative integer.
 * @param random - a uniform value in [0, 1), e.g. `Math.random()`.
 * @param options - bounds; defaults to {@link DEFAULT_BACKOFF}.
 * @returns an integer number of milliseconds in `[0, min(maxMs, baseMs · 2^attempt))`
 *   (0 when the cap is 0).
 * @throws RangeError when `attempt`, `random` or a bound is out of range.
 */
export function backoffDelay(attempt: number, random: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  if (!Number.isSafeInteger(attempt) || attempt < 0) throw new RangeError(`"attempt" expected a non-negative integer, got ${attempt}`);
  if (!(random >= 0 && random < 1)) throw new RangeError(`"random" expected a number in [0, 1), got ${random}`);
  const { baseMs, maxMs } = options;
  if (!Number.isFinite(baseMs) || baseMs < 0) throw new RangeError(`"baseMs" expected a finite number >= 0, got ${baseMs}`);
  if (!Number.isFinite(maxMs) || maxMs < 0) throw new RangeError(`"maxMs" expected a finite number >= 0, got ${maxMs}`);
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, MAX_EXPONENT));
  return Math.floor(random * cap);
}

/**
 * Retries of a renewal that failed while the channel still serves (the
 * service could not authorize it now, PROTOCOL.md §8.3): at least `baseMs`
 * apart, plus a full-jitter backoff on top, so a failing authorize hook sees
 * a few tries a minute per client, not a burst. Default 1 s and 60 s.
 */
export const RENEW_RETRY_BACKOFF: BackoffOptions = Object.freeze({ baseMs: 1000, maxMs: 60_000 });

/**
 * The delay before renewal retry number `attempt` (0 for the first):
 * `baseMs + backoffDelay(attempt, random, options)`, an integer in
 * `[baseMs, baseMs + min(maxMs, baseMs · 2^attempt))`.
 * @throws RangeError as {@link backoffDelay}.
 */
export function renewRetryDelay(attempt: number, random: number, options: BackoffOptions = RENEW_RETRY_BACKOFF): number {
  return options.baseMs + backoffDelay(attempt, random, options);
}
