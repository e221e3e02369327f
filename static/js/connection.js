/**
 * The one owner of a live connection: its transport (SSE, or long-polling behind a buffering proxy or when the
 * server refuses streams with 429/503), its cursor, reconnect backoff, and delivery to a registry of handlers.
 *
 * Promises: durable events reach handlers in the server's order and at most once (with comparable ids, an event
 * not past the cursor is dropped; a feed's opaque ids are only kept, as the server never repeats on resume),
 * whatever the transport and however often it reconnects or switches; one handler throwing never stops delivery.
 * Each (re)connect closes the previous transport object first, and a closed transport calls back nothing.
 */
import { request } from './api.js';
import { Handlers } from './handlers.js';
import { compareIds } from './render.js';
import { TransportChoice } from './transport-choice.js';

const ME_TIMEOUT_MS = 5000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 5000;

function backoffDelay(attempt) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2); // jitter: reconnecting clients spread out
}

export class Connection {
  /**
   * streamUrl, pollUrl: the SSE and long-polling endpoints; params: extra query parameters for both (`rooms`,
   * `away`); cursor: the id to continue after (null: the tail); opaqueIds: a feed's ids, kept to resume with and
   * never compared (a `reset` then continues); pollPresence: deliver a poll's `online` as `presence` events;
   * onReset(): reload after a `reset`, resolving to the new cursor; onReady(data): the stream's `ready` (a poll's
   * first answer stands for it); onRefused({status, code}): a 404/422, true when the owner mends it;
   * onSessionEnded(reason): 'signed_out' or 'banned', and the connection stops.
   */
  constructor({ streamUrl, pollUrl, params = {}, cursor = null, opaqueIds = false, pollPresence = true,
    onReset = async () => null, onReady = () => {}, onRefused = () => false, onSessionEnded = () => {} }) {
    Object.assign(this, { streamUrl, pollUrl, params, cursor, opaqueIds, pollPresence, onReset, onReady, onRefused,
      onSessionEnded });
    this.handlers = new Handlers();
    this.statusListeners = [];
    this.choice = new TransportChoice(this);
    this.state = 'connecting';
    this.reason = null;
    this.lastSynced = null;
    this.attempt = 0;
    this.heartbeatMs = 15000;
    this.lastActivity = 0;
    this.stopped = true;
    this.current = null; // the open transport: {kind, close()}
    this.pending = null; // an AbortController for an awaited step between transports
    this.timers = {};
  }

  /** Register a handler for an event name ('*': every event); see handlers.js. */
  on(name, handler) {
    this.handlers.on(name, handler);
    return this;
  }

  /** Be told of every status change: {state, transport, lastSynced, fellBack, fallback, reason}. */
  onStatus(listener) {
    this.statusListeners.push(listener);
    listener(this.status());
    return this;
  }

  status() {
    const { kind, fallback } = this.choice;
    return { state: this.state, transport: kind, lastSynced: this.lastSynced, fellBack: Boolean(fallback), fallback,
      reason: this.reason };
  }

  get transport() {
    return this.choice.kind;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    const wake = () => { if (document.visibilityState === 'visible') this.check(); };
    this.pageEvents = [[document, 'visibilitychange', wake], [window, 'online', wake],
      [window, 'offline', () => this.lost('offline')],
      [window, 'pageshow', (event) => { if (event.persisted) this.check(); }]]; // back from the back/forward cache
    for (const [target, name, listener] of this.pageEvents) target.addEventListener(name, listener);
    this.connect();
  }

  stop(reason = null) {
    this.stopped = true;
    this.teardown();
    this.choice.stop();
    for (const [target, name, listener] of this.pageEvents ?? []) target.removeEventListener(name, listener);
    if (reason) {
      this.reason = reason;
      this.setState('offline');
    }
  }

  /** New query parameters (another list of rooms): reconnect now from the same cursor. */
  setParams(params) {
    this.params = params;
    if (!this.stopped && !this.timers.retry && !this.pending) this.connect();
  }

  /** The tab woke or the network came back: make sure the connection is alive now, and catch up. */
  check() {
    if (this.stopped || this.state === 'connecting') return; // a first connection is under way
    if (this.state === 'offline') {
      this.attempt = 0;
      this.reconnect();
    } else if (this.transport === 'poll') {
      this.connect(); // a poll that slept with the laptop may be dead: ask again at once, same cursor
    } else if (Date.now() - this.lastActivity > this.silenceLimit()) {
      this.reconnect();
    }
  }

  // Internals

  setState(state) {
    if (state === 'live') this.reason = null;
    this.state = state;
    const status = this.status();
    for (const listener of this.statusListeners) {
      try { listener(status); } catch (error) { console.error('status listener failed', error); }
    }
  }

  synced() {
    this.lastSynced = new Date();
  }

  clearTimer(name) {
    clearTimeout(this.timers[name]);
    delete this.timers[name];
  }

  /** Close whatever is open or under way; nothing of it calls back afterwards. */
  teardown() {
    for (const name of ['ready', 'silence', 'retry']) this.clearTimer(name);
    this.current?.close();
    this.current = null;
    this.pending?.abort();
    this.pending = null;
  }

  url(base, extra) {
    const url = new URL(base, location.href);
    for (const [key, value] of Object.entries({ ...this.params, ...extra })) {
      if (value !== null && value !== undefined && value !== '') url.searchParams.set(key, value);
    }
    return url.pathname + url.search;
  }

  /** Open the current transport now, from the cursor. */
  connect() {
    if (this.stopped) return;
    this.teardown();
    this.current = this.choice.open();
  }

  /** After a failure: first ask whether the session still stands (a closed stream cannot say why). */
  async reconnect() {
    if (this.stopped) return;
    this.teardown();
    const step = new AbortController();
    this.pending = step;
    let verdict = 'unreachable';
    try {
      const answer = await request('GET', '/api/auth/me', { timeoutMs: ME_TIMEOUT_MS, signal: step.signal });
      verdict = answer.ok ? 'ok' : { 401: 'signed_out', 403: 'banned' }[answer.status] ?? 'unreachable';
    } catch { /* the server is still unreachable */ }
    if (step.signal.aborted || this.stopped) return;
    this.pending = null;
    if (verdict === 'signed_out' || verdict === 'banned') this.endSession(verdict);
    else if (verdict === 'ok') this.connect();
    else this.lost('unreachable');
  }

  /** The connection failed or went silent: show it and try again after a backoff with jitter (or `delayMs`). */
  lost(why, delayMs = null) {
    if (this.stopped) return;
    this.teardown();
    this.reason = why;
    this.setState('offline');
    const delay = delayMs ?? backoffDelay(this.attempt);
    this.attempt += 1;
    this.timers.retry = setTimeout(() => this.reconnect(), delay);
  }

  /** A transport ended: decide by the status the server gave, when it gave one. */
  failed({ why, status, code = null, retryAfter = null }) {
    if (status === 401) return this.endSession('signed_out');
    if (status === 403 && code === 'banned') return this.endSession('banned');
    if (status === 429 || status === 503) return this.busy(retryAfter);
    if ((status === 404 || status === 422) && this.onRefused({ status, code })) return undefined;
    return this.lost(why);
  }

  /** The server refuses streams for now (too many): poll after its Retry-After instead of retrying the stream. */
  busy(retryAfter) {
    const delay = Math.max(1, retryAfter ?? 5) * 1000;
    if (!this.choice.pollWhileBusy()) return this.lost('server busy', delay);
    this.teardown();
    this.setState('connecting');
    this.timers.retry = setTimeout(() => { delete this.timers.retry; this.connect(); }, delay);
    return undefined;
  }

  endSession(reason) {
    this.stop(reason);
    try { this.onSessionEnded(reason); } catch (error) { console.error('onSessionEnded failed', error); }
  }

  silenceLimit() {
    return this.heartbeatMs + Math.max(5000, this.heartbeatMs / 2);
  }

  /** Something arrived on the stream: it is alive; arm the silence watchdog again. */
  touch() {
    this.lastActivity = Date.now();
    this.clearTimer('silence');
    this.timers.silence = setTimeout(() => this.lost('silent'), this.silenceLimit());
  }

  /** The transport is through: live; `data` (the `ready` event, or a poll's first answer) goes to onReady. */
  ready(data = null) {
    this.attempt = 0;
    this.synced();
    if (this.state !== 'live') this.setState('live');
    if (!data) return;
    try { this.onReady(data); } catch (error) { console.error('onReady failed', error); }
  }

  /** Hand an event to its handlers; a durable one only if it is past the cursor, which it then becomes. */
  deliver(name, data, id) {
    if (id) {
      if (!this.opaqueIds && this.cursor && compareIds(id, this.cursor) <= 0) return; // seen already: never twice
      this.cursor = id;
    }
    this.synced();
    this.handlers.deliver(name, data, { id });
  }

  /** The server cannot resume us: the page reloads its history; a room's stream continues from that read. */
  async reset() {
    if (this.opaqueIds) {
      this.handlers.deliver('reset', {}, { id: null });
      return;
    }
    this.teardown();
    const step = new AbortController();
    this.pending = step;
    try {
      const cursor = await this.onReset();
      if (step.signal.aborted) return;
      this.pending = null;
      this.cursor = cursor ?? null;
      this.connect();
    } catch (error) {
      if (step.signal.aborted) return;
      console.error('reloading after a reset failed', error);
      this.lost('reset');
    }
  }
}
