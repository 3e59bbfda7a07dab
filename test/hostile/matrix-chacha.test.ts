/**
 * The hostile-frame matrix of test/hostile/matrix.test.ts again, every row on
 * a ChaCha20-Poly1305 channel (PROTOCOL.md §6.3): this process installs the Node
 * engines (libsodium where sodium-native loads) and its raw handshakes offer
 * ChaCha20-Poly1305 only, so every peer of every row is bound with that type.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { useNodeCrypto } from "../../node/engines.js";
import { engineChannelTypes } from "../../shared/channel.js";
import { ChannelType } from "../../shared/frames.js";
import { offerChannelTypes } from "../helpers/raw.js";
import { runMatrix } from "./env.js";
import { rows } from "./matrix.js";

await useNodeCrypto();
offerChannelTypes([ChannelType.chacha20poly1305]);

test("this run's engine runs ChaCha20-Poly1305", () => {
  assert.ok(engineChannelTypes().includes(ChannelType.chacha20poly1305));
});
test.run();

runMatrix("hostile matrix, ChaCha20-Poly1305", ["main"], rows);
