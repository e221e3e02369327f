/**
 * The one owner of a live connection: which transport (SSE or long-polling), the cursor, reconnect backoff,
 * the fallback to polling behind a buffering proxy, and delivery of each event to a registry of handlers.
 *
 * Promises: durable events reach handlers in stream order and at most once (an event whose id is not past
 * the cursor is dropped), whatever the transport and however often it reconnects or switches; one handler
 * throwing never stops delivery to the others or to later events.
 */
import { compareIds } from './render.js';

const READY_TIMEOUT_MS = 5000; // no `ready` by then: a proxy holds the stream back
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 5000;
const POLL_WAIT_SECONDS = 25;
const POLL_SLACK_MS = 10000; // a waiting poll that has not answered by its timeout plus this is dead
const FALLBACK_KEY = 'chat.transport.poll-until';
const FALLBACK_MEMORY_MS = 30 * 60 * 1000; // how long this origin starts with polling after a fallback
const PROBE_DELAYS_MS = [60 * 1000, 5 * 60 * 1000, 15 * 60 * 1000]; // then try SSE again
const EPHEMERAL = new Set(['ready', 'ping', 'presence', 'reset']);
const CONTROL_EVENTS = ['ready', 'ping', 'presence', 'reset'];

function backoffDelay(attempt) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2); // jitter: reconnecting clients spread out
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the fallback is then remembered for this page only
  }
}

function rememberedFallback() {
  const until = Number(storage()?.getItem(FALLBACK_KEY) ?? 0);
  return until > Date.now();
}

function rememberFallback() {
  try { storage()?.setItem(FALLBACK_KEY, String(Date.now() + FALLBACK_MEMORY_MS)); } catch { /* full or denied */ }
}

function forgetFallback() {
  try { storage()?.removeItem(FALLBACK_KEY); } catch { /* denied */ }
}

/** `?transport=sse|poll` in the page's address forces one transport. */
export function forcedTransport() {
  const wanted = new URLSearchParams(location.search).get('transport');
  return wanted === 'sse' || wanted === 'poll' ? wanted : null;
}

export class Connection {
  /**
   * @param {object} options
   * @param {string} options.streamUrl  the SSE endpoint
   * @param {string} options.pollUrl    the long-polling endpoint
   * @param {object} [options.params]   extra query parameters for both (the moderators' `rooms`)
   * @param {string|null} [options.cursor] the event id to continue after; null: the tail
   * @param {boolean} [options.pollPresence] deliver a poll's `online` as a `presence` event
   * @param {() => Promise<string|null>} [options.onReset] reload after a `reset`; resolves to the new cursor
   * @param {(reason: string) => void} [options.onSessionEnded] 'signed_out' or 'banned': the connection stops
   */
  constructor({ streamUrl, pollUrl, params = {}, cursor = null, pollPresence = true, onReset = async () => null,
    onSessionEnded = () => {} }) {
    this.streamUrl = streamUrl;
    this.pollUrl = pollUrl;
    this.params = params;
    this.cursor = cursor;
    this.pollPresence = pollPresence;
    this.onReset = onReset;
    this.onSessionEnded = onSessionEnded;
    this.handlers = new Map();
    this.statusListeners = [];
    this.forced = forcedTransport();
    this.fellBack = !this.forced && rememberedFallback();
    this.transport = this.forced ?? (this.fellBack ? 'poll' : 'sse');
    this.state = 'connecting';
    this.reason = null;
    this.lastSynced = null;
    this.generation = 0; // bumped by every (re)connect: callbacks of an older one do nothing
    this.attempt = 0;
    this.heartbeatMs = 15000;
    this.lastActivity = 0;
    this.stopped = true;
    this.eventSource = null;
    this.pollAbort = null;
    this.timers = {};
    this.probeCount = 0;
  }

  /** Register a handler for an event name; several may share a name. */
  on(name, handler) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(handler);
    return this;
  }

  /** Be told of every status change: {state, transport, lastSynced, fellBack, reason}. */
  onStatus(listener) {
    this.statusListeners.push(listener);
    listener(this.status());
    return this;
  }

  status() {
    return { state: this.state, transport: this.transport, lastSynced: this.lastSynced, fellBack: this.fellBack,
      reason: this.reason };
  }

  get live() {
    return this.state === 'live';
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.wake = () => { if (document.visibilityState === 'visible') this.check(); };
    this.restored = (event) => { if (event.persisted) this.check(); }; // back from the back/forward cache
    this.wentOffline = () => this.lost(this.generation, 'offline');
    document.addEventListener('visibilitychange', this.wake);
    window.addEventListener('online', this.wake);
    window.addEventListener('offline', this.wentOffline);
    window.addEventListener('pageshow', this.restored);
    this.connect();
  }

  stop(reason = null) {
    this.stopped = true;
    this.teardown();
    this.clearTimer('probe');
    this.generation += 1;
    document.removeEventListener('visibilitychange', this.wake);
    window.removeEventListener('online', this.wake);
    window.removeEventListener('offline', this.wentOffline);
    window.removeEventListener('pageshow', this.restored);
    if (reason) {
      this.reason = reason;
      this.setState('offline');
    }
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

  teardown() {
    for (const name of ['ready', 'silence', 'retry']) this.clearTimer(name);
    if (this.eventSource) {
      this.eventSource.close();
      this.eventSource = null;
    }
    if (this.pollAbort) {
      this.pollAbort.abort();
      this.pollAbort = null;
    }
  }

  url(base, extra) {
    const url = new URL(base, location.href);
    for (const [key, value] of Object.entries({ ...this.params, ...extra })) {
      if (value !== null && value !== undefined && value !== '') url.searchParams.set(key, value);
    }
    return url.toString();
  }

  /** Open the current transport now, from the cursor. */
  connect() {
    if (this.stopped) return;
    this.teardown();
    const generation = ++this.generation;
    if (this.transport === 'sse') this.openStream(generation);
    else this.pollLoop(generation);
  }

  /** After a failure: first ask whether the session still stands (a closed stream cannot say why). */
  async reconnect() {
    if (this.stopped) return;
    this.teardown();
    const generation = ++this.generation;
    let verdict = 'unreachable';
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), READY_TIMEOUT_MS);
    try {
      const response = await fetch('/api/auth/me', { credentials: 'same-origin', cache: 'no-store', signal: abort.signal });
      if (response.ok) verdict = 'ok';
      else if (response.status === 401) verdict = 'signed_out';
      else if (response.status === 403) verdict = 'banned';
    } catch { /* the server is still unreachable */ } finally {
      clearTimeout(timer);
    }
    if (generation !== this.generation || this.stopped) return;
    if (verdict === 'signed_out' || verdict === 'banned') {
      this.endSession(verdict);
    } else if (verdict === 'ok') {
      this.connect();
    } else {
      this.lost(generation, 'unreachable');
    }
  }

  /** The connection failed or went silent: show it and try again after a backoff with jitter. */
  lost(generation, why) {
    if (this.stopped || generation !== this.generation) return;
    this.teardown();
    this.generation += 1;
    this.reason = why;
    this.setState('offline');
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.timers.retry = setTimeout(() => this.reconnect(), delay);
  }

  endSession(reason) {
    this.stop(reason);
    try { this.onSessionEnded(reason); } catch (error) { console.error('onSessionEnded failed', error); }
  }

  silenceLimit() {
    return this.heartbeatMs + Math.max(5000, this.heartbeatMs / 2);
  }

  /** Something arrived on the stream: it is alive; arm the silence watchdog again. */
  touch(generation) {
    this.lastActivity = Date.now();
    this.clearTimer('silence');
    this.timers.silence = setTimeout(() => this.lost(generation, 'silent'), this.silenceLimit());
  }

  /** Hand an event to its handlers; a durable one only if it is past the cursor, which it then becomes. */
  deliver(name, data, id) {
    if (id) {
      if (this.cursor && compareIds(id, this.cursor) <= 0) return; // seen already: never twice
      this.cursor = id;
    }
    this.synced();
    for (const handler of this.handlers.get(name) ?? []) {
      try {
        const result = handler(data, { id, name });
        if (result && typeof result.catch === 'function') {
          result.catch((error) => console.error(`handler for "${name}" failed`, error));
        }
      } catch (error) {
        console.error(`handler for "${name}" failed`, error);
      }
    }
  }

  /** The server cannot resume us: the page reloads its history, and we continue from that read. */
  async reset(generation) {
    if (generation !== this.generation) return;
    this.teardown();
    const own = ++this.generation;
    try {
      const cursor = await this.onReset();
      if (own !== this.generation) return;
      this.cursor = cursor ?? null;
      this.connect();
    } catch (error) {
      console.error('reloading after a reset failed', error);
      this.lost(own, 'reset');
    }
  }

  // Server-Sent Events

  openStream(generation) {
    const source = new EventSource(this.url(this.streamUrl, { last_event_id: this.cursor }));
    this.eventSource = source;
    let ready = false;
    this.timers.ready = setTimeout(() => {
      if (generation !== this.generation || ready) return;
      if (this.forced === 'sse') this.lost(generation, 'no ready');
      else this.fallBack(generation);
    }, READY_TIMEOUT_MS);
    const names = new Set([...CONTROL_EVENTS, ...this.handlers.keys()]);
    for (const name of names) {
      source.addEventListener(name, (event) => {
        if (generation !== this.generation) return;
        let data = null;
        try { data = JSON.parse(event.data); } catch { /* a malformed event carries no data */ }
        if (name === 'ready') {
          ready = true;
          this.clearTimer('ready');
          this.heartbeatMs = Math.max(1, Number(data?.heartbeat) || 15) * 1000;
          if (!this.cursor && data?.cursor) this.cursor = data.cursor; // started at the tail
          this.attempt = 0;
          this.synced();
          this.touch(generation);
          this.setState('live');
          return;
        }
        if (!ready) return; // `ready` always comes first
        this.touch(generation);
        if (name === 'ping') this.synced();
        else if (name === 'reset') this.reset(generation);
        else this.deliver(name, data, EPHEMERAL.has(name) ? null : (event.lastEventId || null));
      });
    }
    // The browser would reconnect by itself, but then it alone would know the backoff and the cursor: we own both.
    source.onerror = () => this.lost(generation, 'stream closed');
  }

  /** No `ready` in time: a proxy is buffering the stream. Poll instead, remember it, and probe SSE later. */
  fallBack(generation) {
    if (generation !== this.generation) return;
    rememberFallback();
    this.fellBack = true;
    this.transport = 'poll';
    this.setState('connecting');
    this.connect();
  }

  scheduleProbe() {
    if (this.forced || this.timers.probe || this.stopped) return;
    const delay = PROBE_DELAYS_MS[Math.min(this.probeCount, PROBE_DELAYS_MS.length - 1)];
    this.timers.probe = setTimeout(() => this.probe(), delay);
  }

  /** While polling, see whether a stream gets through now; if its `ready` arrives, switch back to SSE. */
  probe() {
    delete this.timers.probe;
    if (this.stopped || this.transport !== 'poll') return;
    this.probeCount += 1;
    const source = new EventSource(this.url(this.streamUrl, { last_event_id: this.cursor }));
    const giveUp = () => {
      clearTimeout(timer);
      source.close();
      if (this.transport === 'poll') rememberFallback();
      this.scheduleProbe();
    };
    const timer = setTimeout(giveUp, READY_TIMEOUT_MS);
    source.onerror = giveUp;
    source.addEventListener('ready', () => {
      clearTimeout(timer);
      source.close();
      forgetFallback();
      if (this.stopped || this.transport !== 'poll') return;
      this.fellBack = false;
      this.probeCount = 0;
      this.transport = 'sse';
      this.connect(); // the same cursor: nothing lost, nothing repeated
    });
  }

  // Long-polling

  async pollLoop(generation) {
    this.scheduleProbe();
    let wait = 0; // the first poll answers at once: it proves the path and catches up
    while (generation === this.generation && !this.stopped) {
      const abort = new AbortController();
      this.pollAbort = abort;
      const timer = setTimeout(() => abort.abort(), wait * 1000 + POLL_SLACK_MS);
      let response = null;
      let body = null;
      try {
        response = await fetch(this.url(this.pollUrl, { cursor: this.cursor, timeout: wait }), {
          credentials: 'same-origin', cache: 'no-store', signal: abort.signal, headers: { Accept: 'application/json' },
        });
        body = await response.json().catch(() => null);
      } catch {
        response = null;
      } finally {
        clearTimeout(timer);
      }
      if (generation !== this.generation || this.stopped) return;
      if (response?.status === 401) return this.endSession('signed_out');
      if (response?.status === 403 && body?.error?.code === 'banned') return this.endSession('banned');
      if (!response?.ok || !body || !Array.isArray(body.events)) return this.lost(generation, 'poll failed');
      this.attempt = 0;
      this.synced();
      if (this.state !== 'live') this.setState('live');
      for (const event of body.events) {
        if (event.event === 'reset') return this.reset(generation);
        this.deliver(event.event, event.data, event.id);
        if (generation !== this.generation) return; // a handler stopped or restarted us
      }
      if (body.cursor && (!this.cursor || compareIds(body.cursor, this.cursor) > 0)) this.cursor = body.cursor;
      if (this.pollPresence && Array.isArray(body.online)) this.deliver('presence', { online: body.online }, null);
      wait = POLL_WAIT_SECONDS;
    }
  }
}
