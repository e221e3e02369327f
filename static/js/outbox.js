/**
 * Sending: every message shows at once as pending, is posted in order with its client_id, and becomes sent
 * (by the POST's answer or by its own event, whichever first) or failed with a retry that reuses the client_id.
 * While offline, messages wait here and go out when the connection is live again. A POST that got no
 * definite answer (503, or none in time) is posted again by itself, with the same client_id and backoff, for
 * as long as the page is open, even once its own event has shown it: the server makes a repeat one message.
 */
import { api, ApiError, NetworkError, roomPath } from './api.js';

const POST_TIMEOUT_MS = 8000; // a POST that fails while online shows as failed within 10 s
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;

/** A failure the server may not have meant: it answered 503, or nothing came back in time. */
function undecided(error) {
  return (error instanceof ApiError && error.status === 503) || (error instanceof NetworkError && error.timedOut);
}

/** 1–64 of A-Z a-z 0-9 _ - (API.md); crypto.getRandomValues works outside secure contexts too. */
export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `c${[...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

export class Outbox {
  constructor({ slug, timeline, connection, maxChars, onRejected, onSessionEnded, onAccepted = () => {} }) {
    this.slug = slug;
    this.timeline = timeline;
    this.connection = connection;
    this.maxChars = maxChars;
    this.onRejected = onRejected;
    this.onSessionEnded = onSessionEnded;
    this.onAccepted = onAccepted; // the server answered a POST with its message (slow mode counts from here)
    this.queue = []; // client_ids waiting to be posted, in the order they were written
    this.bodies = new Map(); // client_id -> body, until the server answered its POST (or refused it)
    this.shown = new Set(); // client_ids whose own event arrived: shown as sent
    this.attempts = new Map(); // client_id -> undecided POSTs in a row
    this.pumping = false;
    this.retryTimer = null;
  }

  offline() {
    return navigator.onLine === false || this.connection.state === 'offline';
  }

  /** Validate, show as pending, and queue. Returns an error text instead when the body cannot be sent. */
  send(text) {
    const body = text.replace(/\r\n?/g, '\n').trim();
    if (!body) return 'Write something first.';
    if ([...body].length > this.maxChars) {
      return `Your message is too long: ${[...body].length} characters, at most ${this.maxChars}.`;
    }
    const clientId = newClientId();
    this.bodies.set(clientId, body);
    this.timeline.addPending(body, clientId);
    if (this.offline()) this.timeline.waiting(clientId);
    this.queue.push(clientId);
    this.pump();
    return null;
  }

  retry(clientId) {
    if (!this.bodies.has(clientId) || this.queue.includes(clientId)) return;
    if (this.offline()) this.timeline.waiting(clientId);
    else this.timeline.retrying(clientId);
    this.queue.push(clientId);
    this.pump();
  }

  /** Whether a message is waiting to be posted or being posted now. */
  get busy() {
    return this.queue.length > 0;
  }

  /** The connection is live again: send what waited. */
  resume() {
    this.pump();
  }

  /** A message event from the stream: if it is one of ours, it shows as sent. */
  shownBy(message) {
    if (!message.client_id || !this.bodies.has(message.client_id) || this.shown.has(message.client_id)) return;
    this.shown.add(message.client_id);
    this.timeline.confirm(message);
  }

  /** The server answered the POST (or its event showed it, and no POST is left to answer): done. */
  confirmed(message) {
    if (!message.client_id || !this.bodies.has(message.client_id)) return;
    this.bodies.delete(message.client_id);
    this.attempts.delete(message.client_id);
    if (!this.shown.delete(message.client_id)) this.timeline.confirm(message);
  }

  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length && !this.offline() && this.retryTimer === null) {
        const clientId = this.queue[0];
        const keepWaiting = await this.post(clientId);
        if (keepWaiting) break; // offline, or posted again after a delay: it stays first in line
        if (this.queue[0] === clientId) this.queue.shift();
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Post one message; true when it stays first in line (offline, or to be posted again after a delay). */
  async post(clientId) {
    const body = this.bodies.get(clientId);
    if (body === undefined) return false;
    if (!this.shown.has(clientId)) this.timeline.retrying(clientId);
    try {
      const data = await api('POST', roomPath(this.slug, 'messages'),
        { body: { body, client_id: clientId }, timeoutMs: POST_TIMEOUT_MS });
      this.confirmed(data.message);
      this.onAccepted(data.message);
      return false;
    } catch (error) {
      if (!this.bodies.has(clientId)) return false;
      if (error instanceof NetworkError && !error.timedOut && this.offline()) {
        if (!this.shown.has(clientId)) this.timeline.waiting(clientId);
        return true;
      }
      if (undecided(error)) {
        this.postAgainLater(clientId, error);
        return true;
      }
      if (this.shown.has(clientId)) { // shown by its event, then refused: what the server recorded stands
        this.bodies.delete(clientId);
        this.shown.delete(clientId);
        return false;
      }
      this.timeline.fail(clientId, this.shortReason(error));
      this.onRejected(error);
      if (error instanceof ApiError && (error.code === 'not_authenticated' || error.code === 'banned')) {
        this.onSessionEnded(error.code === 'banned' ? 'banned' : 'signed_out');
      }
      return false;
    }
  }

  /** Back off (at least the server's Retry-After), then post it again with the same client_id. */
  postAgainLater(clientId, error) {
    const attempt = (this.attempts.get(clientId) ?? 0) + 1;
    this.attempts.set(clientId, attempt);
    const backoff = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
    const delay = Math.max(backoff, (error.retryAfter ?? 0) * 1000);
    if (!this.shown.has(clientId)) this.timeline.retrying(clientId);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.pump();
    }, delay);
  }

  shortReason(error) {
    if (error instanceof NetworkError) return error.timedOut ? 'no answer' : 'no connection';
    return {
      muted: 'you are muted',
      slow_mode: 'slow mode',
      banned: 'banned',
      room_locked: 'room locked',
      rate_limited: 'too fast',
      validation_error: 'not accepted',
      payload_too_large: 'too long',
      unavailable: 'server busy',
    }[error.code] ?? 'error';
  }
}
