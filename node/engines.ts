/**
 * Selects the Node engines for the cryptography both sides run: node:crypto
 * for the handshake's primitives (node/handshake-crypto.ts) and for channel
 * traffic keys (node/aead.ts). Same bytes as the WebCrypto default of
 * shared/, several times cheaper (bench/, issue 7). Called explicitly by the
 * Node entry points that need it (the Node client's `connect`, `Broker.start`);
 * importing a module installs nothing.
 */
import { useHandshakeCrypto } from "../shared/crypto.js";
import { useTrafficKeys } from "../shared/channel.js";
import { nodeTrafficKey } from "./aead.js";
import { nodeHandshakeCrypto } from "./handshake-crypto.js";

/** Installs the node:crypto handshake and traffic-key engines for this process. Idempotent. */
export function useNodeCrypto(): void {
  useTrafficKeys(nodeTrafficKey);
  useHandshakeCrypto(nodeHandshakeCrypto);
}
