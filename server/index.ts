/** Server-side API of psimbols: run a broker node in your own process. */
export { Broker, type BrokerOptions, type HttpHook, type Handler, type HandlerContext, type Stats } from "./broker.js";
export { resolveConfig, defaultLimits, type BrokerConfig, type Limits } from "./config.js";
export { MemoryStore } from "./store/memory-store.js";
export type { Store, StoreEvent, ChannelRecord, RetireReason } from "./store/store.js";
export { FileRegistry, type KeyRegistry, type RegisteredKey, Role } from "./registry.js";
export { loadOrCreateServerKey } from "./server-key.js";
export { createLogger } from "./log.js";
export { useNodeCrypto } from "../node/engines.js";
export { generateKeyFile, loadKey, loadPublicKey } from "../node/key-files.js";
// Calls to applications (docs/BACKEND.md): pass `createAppCalls(...)`'s upstream and authorize to Broker.start.
export { createAppCalls, parseSecrets, type AppSettings } from "./app/setup.js";
export { Upstream, type UpstreamOptions, type UpstreamRoute, parseUpstreamRoute } from "./app/upstream.js";
export { Authorizer, type AuthorizerOptions, type Decision } from "./app/authorize.js";
export { AppClient, CallError, CallFailure } from "./app/http.js";
export { WebhookSecret, signWebhook, verifyWebhook } from "./app/signature.js";
export { Events, EventType, noEvents, type BrokerEvent, type EventSink, type EventsOptions } from "./app/events.js";
export { ApiServer, type ApiOptions } from "./api/server.js";
export { FileTokenStore, RedisTokenStore, newToken, type TokenStore } from "./api/tokens.js";
