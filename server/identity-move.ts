/**
 * Identity key rotation on the service side (docs/PROTOCOL.md §5.7): after a
 * handshake proved both the old and the new identity key, the registration
 * (role and comment), the kept pushes and the channels of the old identity
 * move or end.
 */
import type { PublicKey } from "../shared/crypto.js";
import { ErrorCode, PsimbolsError, CloseCode } from "../shared/errors.js";
import type { BrokerConfig } from "./config.js";
import { randomBytes } from "node:crypto";
import { type KeyRegistry, MoveLostError, type RegisteredKey, Role } from "./registry.js";
import type { Store } from "./store/store.js";

/**
 * Refuses a move the service must not make, after both proofs verified:
 * a blocked old or new key, an old key a closed service does not know, a new
 * key already registered (it would take over another registration).
 * @throws PsimbolsError `forbidden` (close 4008).
 */
export function checkMove(config: BrokerConfig, old: RegisteredKey | undefined, next: RegisteredKey | undefined): void {
  const refuse = (why: string) => new PsimbolsError(ErrorCode.forbidden, why, { close: CloseCode.forbidden });
  if (old?.role === Role.blocked) throw refuse("this key is blocked by the service");
  if (next?.role === Role.blocked) throw refuse("the key to move to is blocked by the service");
  if (config.closed && !old) throw refuse("this key is not registered with the service");
  if (next) throw refuse("the key to move to is already registered with the service");
}

/** What a move did. */
export interface MoveResult {
  /** The registration as it now stands under the new key (undefined when the old key had none). */
  registered: RegisteredKey | undefined;
  /** Kept pushes copied into the new identity's window. */
  pushes: number;
  /** Channels of the old identity retired (their sockets get the terminal `revoked` notice). */
  retired: string[];
}

/** How long the old key of a move stays leased to it: concurrent moves of the key lose, and so does another move within this time. */
export const MOVE_LEASE_MS = 60_000;

/**
 * Moves the registration and the kept pushes of `from` to `to` and retires
 * `from`'s channels. Of concurrent moves of one key, on any nodes, exactly one
 * is made (DESIGN.md §11): each first takes the store's lease `move:<from>`
 * (kept {@link MOVE_LEASE_MS} after a move, given back after a refusal); then
 * the registry re-keys `registered`, `from`'s registration as checked
 * ({@link checkMove}), only if it is still exactly that, in one atomic step, so
 * a removal, block or role change that came first refuses the move too. A
 * loser is refused before it changes anything. The pushes are copied in order
 * into `to`'s window under new sequence numbers (the store wraps them for their
 * identity); those of `from` are left to age out of its window.
 * @throws MoveLostError (`forbidden`, close 4008) when the move lost; nothing moved.
 * @throws PsimbolsError `unsupported` when the registry cannot move keys.
 */
export async function moveIdentity(config: BrokerConfig, store: Store, registry: KeyRegistry | undefined, from: PublicKey, to: PublicKey, registered: RegisteredKey | undefined): Promise<MoveResult> {
  const move = registered && registry?.move?.bind(registry);
  if (registered && !move) throw new PsimbolsError(ErrorCode.unsupported, "this service's key registry cannot move keys");
  const lease = `move:${from.fingerprint}`;
  const owner = randomBytes(16).toString("base64url");
  if (!(await store.lease(lease, owner, MOVE_LEASE_MS))) throw new MoveLostError("another move of this key was made or is under way; nothing moved");
  let moved: RegisteredKey | undefined;
  try {
    if (registered && move) moved = await move(registered, to);
  } catch (e) {
    await store.unlease(lease, owner).catch(() => {}); // it expires anyway
    throw e;
  }
  let pushes = 0;
  const kept = await store.pushesSince(from.fingerprint, 0);
  if (kept !== "gap") {
    for (const k of kept) {
      await store.push(to.fingerprint, k.data, config.pushWindow);
      pushes++;
    }
  }
  const retired = await store.retireIdentity(from.fingerprint, "revoked");
  return { registered: moved, pushes, retired };
}
