/**
 * Sending: every message shows at once as pending, is posted in order with its client_id, and becomes sent
 * (by the POST's answer or by its own event, whichever first) or failed with a retry that reuses the client_id.
 * While offline, messages wait here and go out when the connection is live again.
 */
import { api, ApiError, NetworkError, roomPath } from './api.js';

const POST_TIMEOUT_MS = 8000; // a POST that fails while online shows as failed within 10 s

/** 1–64 of A-Z a-z 0-9 _ - (API.md); crypto.getRandomValues works outside secure contexts too. */
export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `c${[...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

export class Outbox {
  constructor({ slug, timeline, connection, maxChars, onRejected, onSessionEnded }) {
    this.slug = slug;
    this.timeline = timeline;
    this.connection = connection;
    this.maxChars = maxChars;
    this.onRejected = onRejected;
    this.onSessionEnded = onSessionEnded;
    this.queue = []; // client_ids waiting to be posted, in the order they were written
    this.bodies = new Map(); // client_id -> body, until confirmed
    this.pumping = false;
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

  /** The connection is live again: send what waited. */
  resume() {
    this.pump();
  }

  /** A message event from the stream: if it is one of ours, it is confirmed. */
  confirmed(message) {
    if (!message.client_id || !this.bodies.has(message.client_id)) return;
    this.bodies.delete(message.client_id);
    this.queue = this.queue.filter((clientId) => clientId !== message.client_id);
    this.timeline.confirm(message);
  }

  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length && !this.offline()) {
        const clientId = this.queue[0];
        const keepWaiting = await this.post(clientId);
        if (keepWaiting) break; // went offline mid-send: it stays first in line
        if (this.queue[0] === clientId) this.queue.shift();
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Post one message; true when it must wait for the connection to come back. */
  async post(clientId) {
    const body = this.bodies.get(clientId);
    if (body === undefined) return false; // its own event confirmed it meanwhile
    this.timeline.retrying(clientId);
    try {
      const data = await api('POST', roomPath(this.slug, 'messages'),
        { body: { body, client_id: clientId }, timeoutMs: POST_TIMEOUT_MS });
      this.confirmed(data.message);
      return false;
    } catch (error) {
      if (!this.bodies.has(clientId)) return false; // confirmed by its event while the POST failed
      if (error instanceof NetworkError && !error.timedOut && this.offline()) {
        this.timeline.waiting(clientId);
        return true;
      }
      this.timeline.fail(clientId, this.shortReason(error));
      this.onRejected(error);
      if (error instanceof ApiError && (error.code === 'not_authenticated' || error.code === 'banned')) {
        this.onSessionEnded(error.code === 'banned' ? 'banned' : 'signed_out');
      }
      return false;
    }
  }

  shortReason(error) {
    if (error instanceof NetworkError) return error.timedOut ? 'no answer' : 'no connection';
    return {
      muted: 'you are muted',
      banned: 'banned',
      room_locked: 'room locked',
      rate_limited: 'too fast',
      validation_error: 'not accepted',
      payload_too_large: 'too long',
      unavailable: 'server busy',
    }[error.code] ?? 'error';
  }
}
