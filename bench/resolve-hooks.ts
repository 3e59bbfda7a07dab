/**
 * Resolve hook registered by bench/hooks.ts (runs on the loader thread):
 * redirects shared/ modules to their node:crypto prototypes, except when the
 * prototype itself imports the original.
 *   PSIMBOLS_BENCH_AEAD=node    shared/channel.js → bench/node-aead.js
 * (The handshake's node:crypto engine is the project's own now:
 * client/node/handshake-crypto.ts, installed by client/node.ts.)
 */
interface ResolveContext {
  parentURL?: string | undefined;
}
interface ResolveResult {
  url: string;
  format?: string | null | undefined;
  shortCircuit?: boolean | undefined;
}
type NextResolve = (specifier: string, context?: ResolveContext) => Promise<ResolveResult>;

const redirects = new Map<string, string>();
if (process.env.PSIMBOLS_BENCH_AEAD === "node") redirects.set("/shared/channel.js", new URL("./node-aead.js", import.meta.url).href);

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<ResolveResult> {
  const r = await next(specifier, context);
  for (const [suffix, target] of redirects) {
    if (r.url.endsWith(suffix) && context.parentURL !== target) return { ...r, url: target, shortCircuit: true };
  }
  return r;
}
