/**
 * A tiny typed event emitter for the browser-safe client core (no Node
 * `events`). Event names map to argument tuples:
 *
 *   interface Events { state: [next: string, prev: string]; close: [{ code: number }] }
 *   const e = new Emitter<Events>();
 *   const off = e.on("state", (next, prev) => {});
 */

/** A listener for an event whose arguments are `A`. */
export type Listener<A extends readonly unknown[]> = (...args: A) => void;

/** Called when a listener throws; `event` names the event being emitted. */
export type ListenerErrorHandler = (error: unknown, event: PropertyKey) => void;

/** Rethrows outside the emitter's call stack, so one faulty listener cannot break its caller. */
const rethrowLater: ListenerErrorHandler = (error) => {
  setTimeout(() => {
    throw error;
  }, 0);
};

/**
 * Typed emitter. Listeners run synchronously, in the order they were added,
 * over a snapshot of the listener set (adding or removing during an emit
 * affects the next emit only). A listener that throws does not stop the
 * others: its error goes to the handler given to the constructor.
 */
export class Emitter<E extends { [K in keyof E]: readonly unknown[] }> {
  readonly #listeners = new Map<keyof E, Set<Listener<never[]>>>();
  readonly #onListenerError: ListenerErrorHandler;

  /**
   * @param onListenerError - receives errors thrown by listeners; by default
   *   they are rethrown asynchronously (as an uncaught error of the runtime).
   */
  constructor(onListenerError: ListenerErrorHandler = rethrowLater) {
    this.#onListenerError = onListenerError;
  }

  /**
   * Adds `fn` for `event`. Adding the same function twice has no effect.
   * @returns a function that removes it again.
   */
  on<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    if (typeof fn !== "function") throw new TypeError(`"fn" expected function, got ${typeof fn}`);
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn as unknown as Listener<never[]>);
    return () => this.off(event, fn);
  }

  /**
   * Adds `fn` for the next `event` only.
   * @returns a function that removes it before it fires.
   */
  once<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    const wrapper: Listener<E[K]> = (...args) => {
      this.off(event, wrapper);
      fn(...args);
    };
    return this.on(event, wrapper);
  }

  /** Removes `fn` from `event`; unknown listeners are ignored. */
  off<K extends keyof E>(event: K, fn: Listener<E[K]>): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    set.delete(fn as unknown as Listener<never[]>);
    if (set.size === 0) this.#listeners.delete(event);
  }

  /**
   * Calls every listener of `event` with `args`.
   * @returns true when there was at least one listener.
   */
  emit<K extends keyof E>(event: K, ...args: E[K]): boolean {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) return false;
    for (const fn of [...set]) {
      try {
        (fn as unknown as Listener<E[K]>)(...args);
      } catch (error) {
        this.#onListenerError(error, event);
      }
    }
    return true;
  }

  /** Number of listeners of `event`. */
  listenerCount<K extends keyof E>(event: K): number {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /** Removes every listener of `event`, or of all events when none is named. */
  removeAllListeners<K extends keyof E>(event?: K): void {
    if (event === undefined) this.#listeners.clear();
    else this.#listeners.delete(event);
  }
}
