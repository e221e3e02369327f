/**
 * What every live feed of a page shares: events routed to one gate per room, each gate holding its room's events
 * until that room's history is read, then passing only what is past the history's cursor, each message once.
 */
import { Handlers } from './handlers.js';
import { compareIds } from './render.js';

const NOTICE_EVENTS = new Set(['user_muted', 'user_unmuted', 'room_updated']);
const NOTICE_MEMORY_MS = 30000; // a hand-over can replay a few seconds of a feed: an identical notice is a repeat

/** The room an event belongs to (API.md: `room`, or `room.slug` for `room_updated`). */
export function roomOf(data) {
  const room = data?.room;
  return typeof room === 'string' ? room : room?.slug ?? null;
}

export class RoomGate {
  constructor(slug) {
    this.slug = slug;
    this.handlers = new Handlers();
    this.queue = [];
    this.open = false;
    this.cursor = null; // the last message id passed (or the history's cursor)
    this.notices = new Map(); // key -> when seen
    this.readHistory = null;
  }

  on(name, handler) {
    this.handlers.on(name, handler);
    return this;
  }

  push(name, data, meta) {
    if (this.open) this.pass(name, data, meta);
    else this.queue.push([name, data, meta]);
  }

  pass(name, data, meta) {
    if (name === 'message' && data?.id) {
      if (this.cursor && compareIds(data.id, this.cursor) <= 0) return; // in the history, or seen already
      this.cursor = data.id;
    } else if (NOTICE_EVENTS.has(name)) {
      const key = `${name} ${JSON.stringify(data)}`;
      const now = Date.now();
      for (const [other, at] of this.notices) if (now - at > NOTICE_MEMORY_MS) this.notices.delete(other);
      if (this.notices.has(key)) return;
      this.notices.set(key, now);
    }
    this.handlers.deliver(name, data, meta);
  }

  /** History read up to `cursor`: pass what waited, and from now on everything past it. */
  openAt(cursor) {
    this.cursor = cursor ?? null;
    this.open = true;
    for (const [name, data, meta] of this.queue.splice(0)) this.pass(name, data, meta);
  }

  /** Read the history (again, after a `reset`) and open at its cursor; events meanwhile wait. */
  async reload() {
    if (!this.readHistory) return null;
    this.open = false;
    try {
      const cursor = await this.readHistory();
      this.openAt(cursor);
      return cursor;
    } catch (error) {
      this.openAt(this.cursor); // keep going with what we have rather than hold the room forever
      throw error;
    }
  }
}

/** The part of a page's live feed that does not depend on how events arrive. */
export class FeedBase {
  constructor() {
    this.gates = new Map();
    this.sessionListeners = [];
    this.statusListeners = [];
    this.current = { state: 'connecting', transport: 'sse', lastSynced: null, fellBack: false, reason: null };
  }

  /** The gate of one room, on which the page registers that room's handlers. */
  room(slug) {
    if (!this.gates.has(slug)) this.gates.set(slug, new RoomGate(slug));
    return this.gates.get(slug);
  }

  onStatus(listener) {
    this.statusListeners.push(listener);
    listener(this.current);
    return this;
  }

  onSessionEnded(listener) {
    this.sessionListeners.push(listener);
    return this;
  }

  status() {
    return this.current;
  }

  get state() {
    return this.current.state;
  }

  setStatus(status) {
    this.current = status;
    for (const listener of this.statusListeners) {
      try { listener(status); } catch (error) { console.error('status listener failed', error); }
    }
  }

  sessionEnded(reason) {
    for (const listener of this.sessionListeners) {
      try { listener(reason); } catch (error) { console.error('session listener failed', error); }
    }
  }

  /** An event from the connection (ours, or relayed by the leading tab): to its room's gate. */
  route(name, data, meta, fallbackRoom = null) {
    if (name === 'reset') {
      this.reloadAll();
      return;
    }
    const slug = roomOf(data) ?? fallbackRoom;
    if (slug) this.gates.get(slug)?.push(name, data, meta);
  }

  reloadAll() {
    for (const gate of this.gates.values()) {
      gate.reload().catch((error) => console.error(`reloading ${gate.slug} after a reset failed`, error));
    }
  }
}
