/**
 * Admission by capacity (PROTOCOL.md §11.4): a node admits a `hello` or a
 * `resume` while its event loop keeps up, not up to a fixed number per second.
 *
 * The signal is the event loop's lag: a timer due every 10 ms records how
 * late it ran. While handshakes pile up the loop runs late, and so does every
 * frame waiting behind them (in the loop and in the kernel's socket buffers):
 * the lag is the queue delay a newly admitted handshake would meet. Only the
 * node's own work counts: a tick's lateness is capped by the CPU time the
 * process used meanwhile, so a host busy with other processes (which delays
 * the node's timers without any work of its own queued) does not make an idle
 * node refuse. The lag used is the larger of a smoothed value (rises at once,
 * falls by a quarter of the difference per tick) and how late the next tick
 * already is now, so that a batch of hellos read in one turn of the loop is
 * cut once the work done for the first of them has used up the target,
 * before any timer runs.
 *
 * Work already admitted is never refused: a `proof` is always answered, so a
 * handshake that got its challenge finishes. New work is refused early and
 * cheaply (before any signature or store call) with `too_many` and a retry
 * hint. Resumes of existing channels (no signature, no HPKE) have a larger
 * target than hellos, so while hellos are shed resumes still pass: a flood of
 * hellos is refused before it can make the loop late enough to refuse them.
 */

/** Targets: the lag (ms) under which each kind of work is admitted. */
export interface AdmissionTargets {
  /** New handshakes (a `hello`, a resume of an unknown channel). */
  helloLagMs: number;
  /** Resumes of channels that exist. */
  resumeLagMs: number;
}

/** Work a node admits by capacity. */
export const Work = { hello: "hello", resume: "resume" } as const;
export type Work = (typeof Work)[keyof typeof Work];

/** The sampler's period, ms: fine enough to see a batch, cheap (100 timers a second). */
const TICK_MS = 10;
/** Bounds of the retry hint, ms. */
const MIN_RETRY_MS = 200;
const MAX_RETRY_MS = 5000;

export class Admission {
  readonly targets: AdmissionTargets;
  /** Refusals by kind, since start (`/metrics`). */
  readonly refused = { hello: 0, resume: 0 };
  #smoothed = 0;
  #last: number;
  #lastCpu: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #now: () => number;
  readonly #cpu: () => number;

  /**
   * @param now - wall clock, ms (default `performance.now`)
   * @param cpu - CPU time this process has used, ms (default `process.cpuUsage`, user and system)
   */
  constructor(targets: AdmissionTargets, now: () => number = () => performance.now(), cpu: () => number = processCpuMs) {
    this.targets = targets;
    this.#now = now;
    this.#cpu = cpu;
    this.#last = now();
    this.#lastCpu = cpu();
  }

  /** Starts sampling (an unref'd timer: it keeps no process alive). */
  start(): void {
    if (this.#timer) return;
    this.#last = this.#now();
    this.#lastCpu = this.#cpu();
    const tick = (): void => {
      this.sample();
      this.#timer = setTimeout(tick, TICK_MS);
      this.#timer.unref?.();
    };
    this.#timer = setTimeout(tick, TICK_MS);
    this.#timer.unref?.();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** One tick of the sampler (the timer's; a test may call it with its own clock). */
  sample(): void {
    const t = this.#now();
    const c = this.#cpu();
    const late = Math.max(0, Math.min(t - this.#last - TICK_MS, c - this.#lastCpu));
    this.#last = t;
    this.#lastCpu = c;
    this.#smoothed = late >= this.#smoothed ? late : this.#smoothed + (late - this.#smoothed) / 4;
  }

  /** The lag now, ms: the smoothed lag, or how late the next tick already is (by the node's own work), whichever is larger. */
  lagMs(): number {
    return Math.max(this.#smoothed, Math.min(this.#now() - this.#last - TICK_MS, this.#cpu() - this.#lastCpu));
  }

  /** Whether `work` is admitted now; counts a refusal. */
  admit(work: Work): boolean {
    const target = work === Work.hello ? this.targets.helloLagMs : this.targets.resumeLagMs;
    if (this.lagMs() < target) return true;
    this.refused[work]++;
    return false;
  }

  /**
   * How long a refused client should wait before it tries again, ms: four times the lag (the
   * queue it would have joined, with room for it to drain), within 200 ms..5 s. The client
   * adds its own jitter on top (client/backoff.ts), which spreads out those refused together.
   */
  retryAfterMs(): number {
    return Math.round(Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, this.lagMs() * 4)));
  }
}

function processCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
