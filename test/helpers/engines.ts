/**
 * Running the same code on both handshake engines (the WebCrypto default of
 * shared/crypto.ts and node:crypto's node/handshake-crypto.ts) and comparing
 * what each does: the differential tests' common part.
 */
import * as assert from "uvu/assert";
import { type HandshakeCrypto, useHandshakeCrypto, webCryptoHandshake } from "../../shared/crypto.js";
import { PsimbolsError } from "../../shared/errors.js";
import { nodeHandshakeCrypto } from "../../node/handshake-crypto.js";

export const web = webCryptoHandshake;
export const node = nodeHandshakeCrypto;

/** Runs `f` with `e` installed, then puts the default back. */
export async function on<T>(e: HandshakeCrypto, f: () => Promise<T> | T): Promise<T> {
  useHandshakeCrypto(e);
  try {
    return await f();
  } finally {
    useHandshakeCrypto(web);
  }
}

/** "code: message" of what `f` throws, or "none". */
export async function outcome(f: () => unknown): Promise<string> {
  try {
    await f();
    return "none";
  } catch (e) {
    return e instanceof PsimbolsError ? `${e.code}: ${e.message}` : `not a PsimbolsError: ${String(e)}`;
  }
}

/** The outcome of `f` on each engine; asserts they are the same and returns it. */
export async function same(f: () => unknown, what: string): Promise<string> {
  const a = await on(web, () => outcome(f));
  const b = await on(node, () => outcome(f));
  assert.is(b, a, `${what}: node:crypto engine vs default`);
  return a;
}
