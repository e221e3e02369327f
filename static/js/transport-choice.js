/**
 * Which transport a Connection uses, and when it switches: SSE first; long-polling when `ready` does not come
 * in time (a buffering proxy: remembered for this origin) or while the server refuses streams (429/503, told by
 * the transport's HEAD); while polling, a probe stream now and then, and back to SSE when one gets its `ready`.
 */
import { forcedTransport, forgetFallback, rememberedFallback, rememberFallback } from './fallback.js';
import { compareIds } from './render.js';
import { CONTROL_EVENTS, openPolling, openStream } from './transports.js';

const READY_TIMEOUT_MS = 5000; // no `ready` by then: a proxy holds the stream back
const POLL_WAIT_SECONDS = 25;
const PROBE_DELAYS_MS = [60 * 1000, 5 * 60 * 1000, 15 * 60 * 1000]; // while polling, try SSE again after these
const DURABLE_EVENTS = ['message', 'message_deleted', 'user_muted', 'user_unmuted', 'room_updated'];
const EPHEMERAL = new Set(CONTROL_EVENTS);

export class TransportChoice {
  constructor(connection) {
    this.connection = connection;
    this.forced = forcedTransport();
    this.fallback = !this.forced && rememberedFallback() ? 'proxy' : null; // why we poll: 'proxy' or 'busy'
    this.kind = this.forced ?? (this.fallback ? 'poll' : 'sse');
    this.probeTimer = null;
    this.probeCount = 0;
    this.readyTimer = null;
  }

  /** Open the chosen transport from the connection's cursor; returns the closable transport. */
  open() {
    return this.kind === 'sse' ? this.openSse() : this.openPoll();
  }

  /** The server refused a stream with 429/503: poll (after its Retry-After). False when SSE is forced. */
  pollWhileBusy() {
    if (this.kind !== 'sse' || this.forced === 'sse') return false;
    this.kind = 'poll';
    this.fallback = 'busy';
    return true;
  }

  stop() {
    clearTimeout(this.probeTimer);
    clearTimeout(this.readyTimer);
    this.probeTimer = null;
  }

  openSse() {
    const connection = this.connection;
    clearTimeout(this.readyTimer);
    const transport = openStream(connection.url(connection.streamUrl, { last_event_id: connection.cursor }),
      [...DURABLE_EVENTS, ...connection.handlers.names()], {
        onReady: (data) => {
          clearTimeout(this.readyTimer);
          connection.heartbeatMs = Math.max(1, Number(data?.heartbeat) || 15) * 1000;
          if (!connection.cursor && data?.cursor) connection.cursor = data.cursor; // started at the tail
          connection.touch();
          connection.ready(data ?? {});
        },
        onEvent: (name, data, id) => {
          connection.touch();
          if (name === 'ping') connection.synced();
          else if (name === 'reset') connection.reset();
          else connection.deliver(name, data, EPHEMERAL.has(name) ? null : id);
        },
        onFailure: (failure) => {
          clearTimeout(this.readyTimer);
          connection.failed(failure);
        },
      });
    this.readyTimer = setTimeout(() => {
      if (connection.current !== transport) return;
      if (this.forced === 'sse') {
        connection.lost('no ready');
        return;
      }
      rememberFallback(); // a proxy is buffering the stream: poll, remember it, and probe SSE later
      this.fallback = 'proxy';
      this.kind = 'poll';
      connection.setState('connecting');
      connection.connect();
    }, READY_TIMEOUT_MS);
    return transport;
  }

  scheduleProbe() {
    if (this.forced || this.probeTimer || this.connection.stopped) return;
    const delay = PROBE_DELAYS_MS[Math.min(this.probeCount, PROBE_DELAYS_MS.length - 1)];
    this.probeTimer = setTimeout(() => this.probe(), delay);
  }

  /** While polling, see whether a stream gets through now; if its `ready` arrives, switch back to SSE. */
  probe() {
    this.probeTimer = null;
    const connection = this.connection;
    if (connection.stopped || this.kind !== 'poll') return;
    this.probeCount += 1;
    const giveUp = () => {
      clearTimeout(timer);
      trial.close();
      if (this.kind === 'poll' && this.fallback === 'proxy') rememberFallback();
      this.scheduleProbe();
    };
    const trial = openStream(connection.url(connection.streamUrl, { last_event_id: connection.cursor }), [], {
      onReady: () => {
        clearTimeout(timer);
        trial.close();
        if (this.fallback === 'proxy') forgetFallback();
        if (connection.stopped || this.kind !== 'poll') return;
        this.fallback = null;
        this.probeCount = 0;
        this.kind = 'sse';
        connection.connect(); // the same cursor: nothing lost, nothing repeated
      },
      onEvent: () => {},
      onFailure: giveUp,
    });
    const timer = setTimeout(giveUp, READY_TIMEOUT_MS);
  }

  openPoll() {
    const connection = this.connection;
    this.scheduleProbe();
    let first = true;
    const transport = openPolling((wait) => connection.url(connection.pollUrl, { cursor: connection.cursor, timeout: wait }),
      POLL_WAIT_SECONDS, {
        onAnswer: (body) => {
          this.polled(transport, body, first);
          first = false;
        },
        onFailure: (failure) => connection.failed(failure),
      });
    return transport;
  }

  polled(transport, body, first) {
    const connection = this.connection;
    // A poll's first answer stands for `ready`: from its cursor on, nothing is missed.
    const rooms = connection.params.rooms ? String(connection.params.rooms).split(',') : undefined;
    connection.ready(first ? { cursor: body.cursor, rooms } : null);
    for (const event of body.events) {
      if (event.event === 'reset') connection.reset();
      else connection.deliver(event.event, event.data, event.id);
      if (connection.current !== transport) return; // a handler or the reset stopped or restarted us
    }
    if (body.cursor && (connection.opaqueIds || !connection.cursor || compareIds(body.cursor, connection.cursor) > 0)) {
      connection.cursor = body.cursor;
    }
    if (!connection.pollPresence || !body.online) return;
    if (Array.isArray(body.online)) connection.deliver('presence', { online: body.online }, null);
    else for (const [room, online] of Object.entries(body.online)) connection.deliver('presence', { room, online }, null);
  }
}
