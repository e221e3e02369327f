/** The page's one way to call the JSON API: cookies, the CSRF header on every write, errors as exceptions. */

let csrfToken = null;
let sessionPromise = null;

/** The server refused: `status` and API.md's `code`; `retryAfter` in seconds when the server said. */
export class ApiError extends Error {
  constructor(status, code, message, { fields = null, retryAfter = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.fields = fields;
    this.retryAfter = retryAfter;
  }
}

/** The request never got an answer: no network, the server is down, or it took too long. */
export class NetworkError extends Error {
  constructor(message, { timedOut = false, cancelled = false } = {}) {
    super(message);
    this.name = 'NetworkError';
    this.timedOut = timedOut;
    this.cancelled = cancelled;
  }
}

export function setCsrfToken(token) {
  csrfToken = token || null;
}

function retryAfterSeconds(header) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

async function send(method, path, body, timeoutMs, signal = null) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  const cancel = () => abort.abort();
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal: abort.signal,
    });
    let data = null;
    if (response.status !== 204 && method !== 'HEAD') {
      try {
        data = await response.json();
      } catch {
        data = null; // an HTML error page from a proxy, or an empty body
      }
    }
    return { response, data };
  } catch (error) {
    const cancelled = Boolean(signal?.aborted);
    throw new NetworkError(cancelled ? 'cancelled' : abort.signal.aborted ? 'the server took too long to answer'
      : 'could not reach the server', { timedOut: abort.signal.aborted && !cancelled, cancelled });
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', cancel);
  }
}

/**
 * One request answered as it came, for the live transports, which decide by status:
 * `{status, ok, data, code, retryAfter}`. Throws NetworkError only when no answer came (or `signal` cancelled it).
 */
export async function request(method, path, { timeoutMs = 15000, signal = null } = {}) {
  const { response, data } = await send(method, path, undefined, timeoutMs, signal);
  return { status: response.status, ok: response.ok, data, code: data?.error?.code ?? null,
    retryAfter: retryAfterSeconds(response.headers.get('Retry-After')) };
}

/**
 * Call the API and return the parsed JSON (null for 204).
 * Throws ApiError for any non-2xx answer and NetworkError when no answer came within `timeoutMs`.
 * A `403 csrf_failed` fetches a fresh token from /api/auth/me and retries once.
 */
export async function api(method, path, { body, timeoutMs = 15000 } = {}) {
  let attempt = await send(method, path, body, timeoutMs);
  if (attempt.response.status === 403 && attempt.data?.error?.code === 'csrf_failed') {
    sessionPromise = null;
    await loadSession().catch(() => null);
    attempt = await send(method, path, body, timeoutMs);
  }
  const { response, data } = attempt;
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(response.status, error.code ?? `http_${response.status}`,
      error.message ?? (response.statusText || 'request failed'),
      { fields: error.fields ?? null, retryAfter: retryAfterSeconds(response.headers.get('Retry-After')) });
  }
  return data;
}

/** Who is signed in, from GET /api/auth/me (once per page; it also supplies the CSRF token). */
export function loadSession() {
  if (!sessionPromise) {
    sessionPromise = api('GET', '/api/auth/me').then((data) => {
      setCsrfToken(data.csrf_token);
      return data.user;
    });
    sessionPromise.catch(() => { sessionPromise = null; }); // let a later call try again
  }
  return sessionPromise;
}

/** Remember what login or register answered, so no extra /me round trip is needed. */
export function adoptSession(data) {
  setCsrfToken(data.csrf_token);
  sessionPromise = Promise.resolve(data.user);
}

export function roomPath(slug, ...rest) {
  return ['/api/rooms', encodeURIComponent(slug), ...rest.map((part) => encodeURIComponent(part))].join('/');
}
