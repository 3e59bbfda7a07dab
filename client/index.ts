/**
 * psimbols client, browser-safe core: WebCrypto, timers and an injected (or
 * global) WebSocket only. Node users import "psimbols/node", which re-exports
 * all of this and adds key files, a known-servers file and the `ws` socket.
 *
 *   import { connect, generateSigningKey } from "psimbols";
 *   const client = await connect("wss://broker.example/", { key: await generateSigningKey() });
 *   const data = await client.request("echo", { hello: "world" });
 *   await client.close();
 */
export {
  Client,
  ClientState,
  MemoryKnownServers,
  connect,
  type ChannelInfo,
  type ClientEvents,
  type ClientStats,
  type CloseEvent,
  type ConnectOptions,
  type EstablishedEvent,
  type ServerKeyEvent,
  type KnownServers,
  type Logger,
  type NoticeEvent,
  type PushInfo,
  type ReconnectOptions,
  type RequestOptions,
  type WebSocketCtor,
  type WebSocketLike,
} from "./connection.js";
export { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay } from "./backoff.js";
export { Emitter, type Listener, type ListenerErrorHandler } from "./emitter.js";
export { CloseCode, ErrorCode, PsimbolsError, isTerminalClose } from "../shared/errors.js";
export {
  KeyType,
  type PublicKey,
  type SigningKey,
  fingerprint,
  generateSigningKey,
  importPkcs8,
} from "../shared/crypto.js";
export { ChannelType, KemType, NoticeKind, PROTOCOL_VERSION } from "../shared/frames.js";
