/**
 * Selects the Node engines for the cryptography both sides run: node:crypto
 * for the handshake's primitives (node/handshake-crypto.ts) and for AES-256-GCM
 * traffic keys (node/aead.ts), libsodium for ChaCha20-Poly1305 traffic keys
 * (node/chacha.ts) where `sodium-native` loads (lazily, on the first call), node:crypto's
 * `chacha20-poly1305` where it does not. Same bytes as the WebCrypto default of
 * shared/, several times cheaper (bench/, docs/PERFORMANCE.md). Called explicitly
 * by the Node entry points that need it (the Node client's `connect`,
 * `Broker.start`); importing a module installs nothing.
 */
import { useHandshakeCrypto } from "../shared/crypto.js";
import { type TrafficKey, useTrafficKeys } from "../shared/channel.js";
import { ChannelType } from "../shared/frames.js";
import { NodeTrafficKey } from "./aead.js";
import { SodiumTrafficKey, loadSodium, sodiumLoaded } from "./chacha.js";
import { nodeHandshakeCrypto } from "./handshake-crypto.js";

/** A traffic key on the cheapest Node engine for its type. */
export function nodeEngineTrafficKey(raw: Uint8Array, type: ChannelType): TrafficKey {
  return type === ChannelType.chacha20poly1305 && sodiumLoaded() ? new SodiumTrafficKey(raw) : new NodeTrafficKey(raw, type);
}

/**
 * The channel types a Node side offers, preferred first: ChaCha20-Poly1305
 * first where libsodium runs it (about 1.2 µs per 256-byte seal against 4.4 µs
 * for node:crypto's AES-256-GCM), AES-256-GCM first where it does not
 * (node:crypto's ChaCha20-Poly1305 costs 6.0 µs there). Both are always run.
 */
export function nodeChannelTypes(): readonly ChannelType[] {
  return sodiumLoaded() ? [ChannelType.chacha20poly1305, ChannelType.aes256gcm] : [ChannelType.aes256gcm, ChannelType.chacha20poly1305];
}

/** Which engine runs ChaCha20-Poly1305 in this process. */
export function chachaEngine(): "libsodium" | "node:crypto" {
  return sodiumLoaded() ? "libsodium" : "node:crypto";
}

/**
 * Installs the Node handshake and traffic-key engines for this process, after
 * trying once to load `sodium-native` ({@link loadSodium}). Idempotent.
 */
export async function useNodeCrypto(): Promise<void> {
  await loadSodium();
  useTrafficKeys(nodeEngineTrafficKey, nodeChannelTypes());
  useHandshakeCrypto(nodeHandshakeCrypto);
}
