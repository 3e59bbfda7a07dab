/**
 * Builds a node's calls to the application from its settings (`psimbols
 * serve --upstream … --authorize … --events-url …`) and the signing secret of
 * each destination (docs/BACKEND.md §1 "One secret per destination"): every
 * upstream route, the authorize hook and the events URL read a variable of
 * their own, and fall back to the shared PSIMBOLS_UPSTREAM_SECRET, so that in
 * a setup with separate receivers none can sign a call meant for another.
 */
import type { Logger } from "../log.js";
import { Authorizer } from "./authorize.js";
import { AppClient, parseAppUrl } from "./http.js";
import { type WebhookSecret, parseSecrets as parseSecretList } from "./signature.js";
import { Upstream, parseUpstreamRoute, routeLabel } from "./upstream.js";

/** The shared default secret(s) of every destination without a variable of its own. */
export const SECRET_ENV = "PSIMBOLS_UPSTREAM_SECRET";
/** The authorize hook's own secret(s). */
export const AUTHORIZE_SECRET_ENV = "PSIMBOLS_AUTHORIZE_SECRET";
/** The events URL's own secret(s). */
export const EVENTS_SECRET_ENV = "PSIMBOLS_EVENTS_SECRET";

/** Variables read for secrets: a destination's own, then the shared default. */
export type SecretEnv = Readonly<Record<string, string | undefined>>;

export interface AppSettings {
  /** `--upstream` values: `URL` or `PREFIX=URL`. */
  upstreams?: readonly string[];
  /** `--upstream-batch` values: the routes that take batches, by prefix (`*` the default route). */
  upstreamBatch?: readonly string[];
  /** `--authorize URL`. */
  authorize?: string | undefined;
  /** `--events-url URL` (its client is made with the events, server/app/events.ts; here only its secret's sharing is told). */
  eventsUrl?: string | undefined;
  /** Where the secrets are read (the process environment): {@link SECRET_ENV}, {@link AUTHORIZE_SECRET_ENV}, {@link routeSecretEnv}. */
  env?: SecretEnv;
  upstreamTimeoutMs?: number | undefined;
  upstreamMaxInFlight?: number | undefined;
  upstreamMaxInFlightPerIdentity?: number | undefined;
  authorizeTimeoutMs?: number | undefined;
  log?: Logger;
}

/**
 * The variable of one upstream route's secret: `PSIMBOLS_UPSTREAM_SECRET_DEFAULT`
 * for the default route, else `PSIMBOLS_UPSTREAM_SECRET_` + the prefix upper-cased
 * with each run of other characters than letters and digits as one `_`, trimmed
 * (`billing.` → `PSIMBOLS_UPSTREAM_SECRET_BILLING`).
 * @throws TypeError when the prefix has no letter or digit.
 */
export function routeSecretEnv(prefix: string): string {
  if (prefix === "") return `${SECRET_ENV}_DEFAULT`;
  const name = prefix.toUpperCase().replace(/[^A-Z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  if (name === "") throw new TypeError(`--upstream: the prefix "${prefix}" has no letter or digit to name its secret variable`);
  return `${SECRET_ENV}_${name}`;
}

/**
 * The secrets of one destination: its own variable when set, else the shared
 * {@link SECRET_ENV}. One `whsec_` secret, or two separated by white space
 * during a rotation (signature.ts parseSecrets).
 * @param what - the destination's setting, for the error (`--events-url`).
 * @throws TypeError naming the variables, never echoing a value.
 */
export function destinationSecrets(env: SecretEnv, own: string, what: string): { secrets: WebhookSecret[]; shared: boolean } {
  // A malformed shared secret is refused even when every destination has its own: no silent fallback.
  const shared = parseSecretList(env[SECRET_ENV], SECRET_ENV);
  const mine = parseSecretList(env[own], own);
  if (mine.length > 0) return { secrets: mine, shared: false };
  if (shared.length > 0) return { secrets: shared, shared: true };
  throw new TypeError(`${what} needs ${own} (or the shared ${SECRET_ENV}): make one with: echo whsec_$(openssl rand -base64 32)`);
}

/**
 * The shared secret(s) alone (one or two, at least one).
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
  const batch = new Set<string>();
  for (const label of s.upstreamBatch ?? []) {
    if (batch.has(label)) throw new TypeError(`--upstream-batch: the route "${label}" is given twice`);
    batch.add(label);
  }
  if (upstreams.length === 0 && s.authorize === undefined && batch.size === 0) return { upstream: undefined, authorize: undefined };
  const env = s.env ?? {};
  const sharedBy: string[] = [];
  const variables = new Map<string, string>();
  const routes = upstreams.map((u) => {
    const r = parseUpstreamRoute(u);
    const variable = routeSecretEnv(r.prefix);
    const other = variables.get(variable);
    if (other !== undefined) throw new TypeError(`--upstream: the prefixes "${other || "(default)"}" and "${r.prefix || "(default)"}" would share the secret variable ${variable}`);
    variables.set(variable, r.prefix);
    const d = destinationSecrets(env, variable, `--upstream ${r.prefix ? `${r.prefix}=` : ""}URL`);
    if (d.shared) sharedBy.push(`--upstream ${r.prefix || "(default)"}`);
    return { ...r, secrets: d.secrets, batch: batch.delete(routeLabel(r.prefix)) };
  });
  const [unknown] = batch;
  if (unknown !== undefined) throw new TypeError(`--upstream-batch: no --upstream route has the prefix "${unknown}" (name a route by its prefix, the default route by *)`);
  const authorizeUrl = s.authorize === undefined ? undefined : parseAppUrl(s.authorize, "--authorize");
  let authorize: Authorizer | undefined;
  if (authorizeUrl !== undefined) {
    const d = destinationSecrets(env, AUTHORIZE_SECRET_ENV, "--authorize");
    if (d.shared) sharedBy.push("--authorize");
    authorize = new Authorizer({
      client: new AppClient({ url: authorizeUrl, secrets: d.secrets }),
      ...(s.authorizeTimeoutMs !== undefined ? { timeoutMs: s.authorizeTimeoutMs } : {}),
      ...(s.log ? { log: s.log } : {}),
    });
  }
  if (s.eventsUrl !== undefined && destinationSecrets(env, EVENTS_SECRET_ENV, "--events-url").shared) sharedBy.push("--events-url");
  if (sharedBy.length > 1) {
    s.log?.info(`${sharedBy.join(", ")} share ${SECRET_ENV}: whoever holds it can sign a call for any of them; give each its own variable (docs/BACKEND.md §1)`, { component: "app" });
  }
  return {
    upstream:
      routes.length === 0
        ? undefined
        : new Upstream({
            routes,
            ...(s.upstreamTimeoutMs !== undefined ? { timeoutMs: s.upstreamTimeoutMs } : {}),
            ...(s.upstreamMaxInFlight !== undefined ? { maxInFlight: s.upstreamMaxInFlight } : {}),
            ...(s.upstreamMaxInFlightPerIdentity !== undefined ? { maxInFlightPerIdentity: s.upstreamMaxInFlightPerIdentity } : {}),
            ...(s.log ? { log: s.log } : {}),
          }),
    authorize,
  };
}
