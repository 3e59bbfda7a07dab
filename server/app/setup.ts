/**
 * Builds a node's calls to the application from its settings (`psimbols
 * serve --upstream … --authorize …`, PSIMBOLS_UPSTREAM_SECRET): one HTTP
 * client shared by the upstream routes and the authorize hook.
 */
import type { Logger } from "../log.js";
import { Authorizer } from "./authorize.js";
import { AppClient, parseAppUrl } from "./http.js";
import { type WebhookSecret, parseSecrets as parseSecretList } from "./signature.js";
import { Upstream, parseUpstreamRoute } from "./upstream.js";

/** The environment variable holding the signing secret(s). */
export const SECRET_ENV = "PSIMBOLS_UPSTREAM_SECRET";

export interface AppSettings {
  /** `--upstream` values: `URL` or `PREFIX=URL`. */
  upstreams?: readonly string[];
  /** `--authorize URL`. */
  authorize?: string | undefined;
  /** The secret text: one `whsec_…`, or two separated by a space during a rotation (both sign). */
  secret?: string | undefined;
  upstreamTimeoutMs?: number | undefined;
  upstreamMaxInFlight?: number | undefined;
  authorizeTimeoutMs?: number | undefined;
  /** Keep-alive connections per application origin. */
  connections?: number | undefined;
  log?: Logger;
}

/**
 * The signing secrets of the application calls: one or two `whsec_` secrets
 * separated by white space (signature.ts parseSecrets), at least one required.
 * @throws TypeError naming {@link SECRET_ENV}, never echoing the value.
 */
export function parseSecrets(text: string | undefined, setting = SECRET_ENV): WebhookSecret[] {
  const secrets = parseSecretList(text, setting);
  if (secrets.length === 0) throw new TypeError(`${setting}: required with --upstream or --authorize (make one with: echo whsec_$(openssl rand -base64 32))`);
  return secrets;
}

/**
 * The upstream and the authorizer the settings ask for (none when neither is set).
 * @throws TypeError / RangeError naming the bad setting.
 */
export function createAppCalls(s: AppSettings): { upstream: Upstream | undefined; authorize: Authorizer | undefined } {
  const upstreams = s.upstreams ?? [];
  if (upstreams.length === 0 && s.authorize === undefined) return { upstream: undefined, authorize: undefined };
  const secrets = parseSecrets(s.secret);
  const routes = upstreams.map((u) => parseUpstreamRoute(u));
  const authorizeUrl = s.authorize === undefined ? undefined : parseAppUrl(s.authorize, "--authorize");
  const client = new AppClient({ secrets, ...(s.connections ? { connections: s.connections } : {}) });
  return {
    upstream:
      routes.length === 0
        ? undefined
        : new Upstream({
            routes,
            client,
            ...(s.upstreamTimeoutMs !== undefined ? { timeoutMs: s.upstreamTimeoutMs } : {}),
            ...(s.upstreamMaxInFlight !== undefined ? { maxInFlight: s.upstreamMaxInFlight } : {}),
            ...(s.log ? { log: s.log } : {}),
          }),
    authorize:
      authorizeUrl === undefined
        ? undefined
        : new Authorizer({
            url: authorizeUrl,
            client,
            ...(s.authorizeTimeoutMs !== undefined ? { timeoutMs: s.authorizeTimeoutMs } : {}),
            ...(s.log ? { log: s.log } : {}),
          }),
  };
}
