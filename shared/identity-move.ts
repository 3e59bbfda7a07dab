/**
 * Identity key rotation (docs/PROTOCOL.md §5.7): one handshake proves both the
 * old identity key (the hello's `public_key`, signing `sig_c` as ever) and the
 * new one (the hello's `move_to`, signing `sig_move`), over the same transcript.
 * The hello carries `move_to`, so both signatures cover both keys.
 *
 *   sig_move = Sign(new key, LP(LABEL_MOVE) || SHA-256(T_chal || LP(sig_s)))
 *
 * The label keeps `sig_move` apart from `sig_c`, which signs the same hash.
 */
import { concat, lp } from "./encoding.js";
import { type PublicKey, type SigningKey, sha256, sign, verify } from "./crypto.js";

/** Domain-separation label of the new key's signature. PROTOCOL.md §5.7. */
export const LABEL_MOVE = "psimbols/1 identity move";

async function moveInput(tChal: Uint8Array, serverSig: Uint8Array): Promise<Uint8Array> {
  return concat(lp(LABEL_MOVE), await sha256(concat(tChal, lp(serverSig))));
}

/** The new key's signature over this handshake (client side). */
export async function signMove(next: SigningKey, tChal: Uint8Array, serverSig: Uint8Array): Promise<Uint8Array> {
  return sign(next, await moveInput(tChal, serverSig));
}

/** True when `signature` is the new key's signature over this handshake (server side). */
export async function verifyMove(next: PublicKey, tChal: Uint8Array, serverSig: Uint8Array, signature: Uint8Array): Promise<boolean> {
  return verify(next, signature, await moveInput(tChal, serverSig));
}
