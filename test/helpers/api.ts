/** Calls to the server API (docs/BACKEND.md "Server API") for tests. */

/** One API call: `o.body` as JSON (or `o.raw` as is), a bearer `o.token`; the answer's status, headers and parsed JSON. */
export async function call(base: string, method: string, path: string, o: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...o.headers };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  const body = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  if (body !== undefined) headers["content-type"] ??= "application/json";
  const res = await fetch(new URL(path, base), { method, headers, ...(body !== undefined ? { body } : {}), signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, any>) : undefined };
}
