/**
 * The two live transports, each a closable object that calls back nothing once closed: a Server-Sent Events
 * stream (EventSource) and a long-polling loop (api.js's `request`, which holds the only `fetch`).
 *
 * Why a refused stream is asked again: EventSource never shows the status that refused it, so a
 * `429 too_many_streams` or `503 unavailable` would look like a network error and be retried forever. When a
 * stream fails before its `ready`, the transport sends a `HEAD` to the same address: it runs every check a
 * GET gets, admission included, and opens nothing on the server (API.md), so its status (`401`, `403`,
 * `404`, `422`, `429`, `503`, with `Retry-After`) is why the stream failed. The failure is reported with that
 * status. A stream that failed after `ready` was accepted, so it reports no status and the connection simply
 * resumes it.
 */
import { request } from './api.js';

export const CONTROL_EVENTS = ['ready', 'ping', 'presence', 'reset'];
const HEAD_TIMEOUT_MS = 5000;
const POLL_SLACK_MS = 10000; // a waiting poll that has not answered by its timeout plus this is dead

/**
 * Open an EventSource on `url` listening for `names` (the control events are always heard).
 * Callbacks: onReady(data) once; onEvent(name, data, lastEventId) for what follows `ready` (events before it are
 * dropped: `ready` always comes first); onFailure({why, status, code, retryAfter}) once, after which it is closed.
 */
export function openStream(url, names, { onReady, onEvent, onFailure }) {
  const source = new EventSource(url);
  const abort = new AbortController();
  let closed = false;
  let ready = false;
  const close = () => {
    closed = true;
    source.close();
    abort.abort();
  };
  for (const name of new Set([...CONTROL_EVENTS, ...names])) {
    source.addEventListener(name, (event) => {
      if (closed) return;
      let data = null;
      try { data = JSON.parse(event.data); } catch { /* a malformed event carries no data */ }
      if (name === 'ready') {
        ready = true;
        onReady(data);
      } else if (ready) {
        onEvent(name, data, event.lastEventId || null);
      }
    });
  }
  // The browser would reconnect by itself, but then it alone would know the backoff and the cursor.
  source.onerror = async () => {
    if (closed) return;
    source.close();
    if (ready) {
      close();
      onFailure({ why: 'stream closed', status: null });
      return;
    }
    let answer = null;
    try {
      answer = await request('HEAD', url, { timeoutMs: HEAD_TIMEOUT_MS, signal: abort.signal });
    } catch { /* no answer: unreachable */ }
    if (closed) return;
    close();
    onFailure({ why: answer ? 'stream refused' : 'unreachable', status: answer?.status ?? null,
      code: answer?.code ?? null, retryAfter: answer?.retryAfter ?? null });
  };
  return { kind: 'sse', close };
}

/**
 * Poll `url(wait)` in a loop: the first poll answers at once (it proves the path and catches up), then each
 * waits up to `waitSeconds`. onAnswer(body) for each good answer (it may close the transport);
 * onFailure({why, status, code, retryAfter}) once, after which it is closed.
 */
export function openPolling(url, waitSeconds, { onAnswer, onFailure }) {
  const abort = new AbortController();
  let closed = false;
  const close = () => {
    closed = true;
    abort.abort();
  };
  (async () => {
    let wait = 0;
    while (!closed) {
      let answer = null;
      try {
        answer = await request('GET', url(wait), { timeoutMs: wait * 1000 + POLL_SLACK_MS, signal: abort.signal });
      } catch { /* no answer */ }
      if (closed) return;
      if (!answer?.ok || !Array.isArray(answer.data?.events)) {
        close();
        onFailure({ why: answer ? 'poll refused' : 'poll failed', status: answer?.status ?? null,
          code: answer?.code ?? null, retryAfter: answer?.retryAfter ?? null });
        return;
      }
      onAnswer(answer.data);
      wait = waitSeconds;
    }
  })();
  return { kind: 'poll', close };
}
