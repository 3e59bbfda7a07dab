/**
 * Module resolution hooks (node:module register) that make `sodium-native`
 * unresolvable, as on a machine where the optional dependency is not
 * installed. Loaded by test/helpers/hide-sodium.ts.
 */
type Resolve = (specifier: string, context: unknown) => Promise<unknown>;

export async function resolve(specifier: string, context: unknown, next: Resolve): Promise<unknown> {
  if (specifier === "sodium-native" || specifier.startsWith("sodium-native/")) {
    const e = new Error(`Cannot find package 'sodium-native' (hidden by test/helpers/hide-sodium.ts)`) as Error & { code: string };
    e.code = "ERR_MODULE_NOT_FOUND";
    throw e;
  }
  return next(specifier, context);
}
