/**
 * A 32-byte symmetric key kept as eight int32 words in its own object, for
 * the per-binding traffic keys of the Node engines (node/aead.ts,
 * node/chacha.ts). A server holds two keys per bound socket: a KeyObject
 * (handle, native key data) or a Uint8Array of its own (ArrayBuffer, backing
 * store) costs several hundred bytes, these words 64 (docs/PERFORMANCE.md, idle connections). The bytes are
 * put together in a caller's scratch buffer only for the one synchronous
 * cipher call that copies them, and the caller zeroes that buffer right after.
 */
export class KeyWords {
  #w0: number;
  #w1: number;
  #w2: number;
  #w3: number;
  #w4: number;
  #w5: number;
  #w6: number;
  #w7: number;
  #wiped = false;

  /**
   * Copies `raw` into the words, through `scratch` (a view of 8 words on a
   * scratch buffer), which it leaves zeroed. The caller may wipe `raw`.
   *
   * @throws RangeError when `raw` is not 32 bytes.
   */
  constructor(raw: Uint8Array, scratch: Int32Array) {
    if (raw.length !== 32) throw new RangeError(`"raw" expected 32 bytes, got ${raw.length}`);
    new Uint8Array(scratch.buffer, scratch.byteOffset, 32).set(raw);
    this.#w0 = scratch[0]!;
    this.#w1 = scratch[1]!;
    this.#w2 = scratch[2]!;
    this.#w3 = scratch[3]!;
    this.#w4 = scratch[4]!;
    this.#w5 = scratch[5]!;
    this.#w6 = scratch[6]!;
    this.#w7 = scratch[7]!;
    scratch.fill(0);
  }

  /** True once {@link wipe} ran: a wiped key refuses to seal or open. */
  get wiped(): boolean {
    return this.#wiped;
  }

  /** Zeroes the key. */
  wipe(): void {
    this.#wiped = true;
    this.#w0 = this.#w1 = this.#w2 = this.#w3 = this.#w4 = this.#w5 = this.#w6 = this.#w7 = 0;
  }

  /** Writes the key into `scratch` (8 words) for one cipher call; the caller zeroes it right after. */
  protected writeKey(scratch: Int32Array): void {
    scratch[0] = this.#w0;
    scratch[1] = this.#w1;
    scratch[2] = this.#w2;
    scratch[3] = this.#w3;
    scratch[4] = this.#w4;
    scratch[5] = this.#w5;
    scratch[6] = this.#w6;
    scratch[7] = this.#w7;
  }
}
