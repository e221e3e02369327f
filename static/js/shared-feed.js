/**
 * One live connection for all tabs of this browser: the leading tab (leader.js) holds the several-rooms feed
 * (/api/events, or /api/poll) for every room a tab shows or lists, and relays each event to the other tabs.
 *
 * Messages on the channel (each with `from`, the posting tab's id):
 *   want {shown, rooms}    a tab's rooms: the one it shows and its sidebar's; at start, on change, to a new leader
 *   bye {leading, cursor}  the tab is closing (pagehide); a leader has closed its feed and gives its position
 *   leader                 a tab took the lock; the others answer with `want`
 *   event {name, data, id} one event of the feed; `id` is the feed's own opaque position (durable events only)
 *   ready {rooms, cursor}  the rooms the leader's feed carries and its position (after `ready`, and to each `want`)
 *   status {status}        the leader's connection status, shown by every tab
 *   ended {reason}         the session ended ('signed_out', 'banned')
 * Every tab keeps the last feed id it saw; a new leader resumes from its own, after waiting (briefly) for the
 * old leader's `bye`, which comes after everything it relayed, so nothing is lost and nothing repeated.
 */
import { api } from './api.js';
import { Connection } from './connection.js';
import { TabLink } from './leader.js';
import { FeedBase } from './room-gate.js';
import { MAX_RECENT_ROOMS } from './rooms-memory.js';

const REPLAN_DELAY_MS = 250; // tabs that open together cause one reconnect, not one each
const HANDOVER_WAIT_MS = 1000; // how long a new leader waits for the last words of the one before it
const ANSWER_GRACE_MS = 3000; // tabs that do not answer a new leader within this are gone

function newTabId() {
  return [...crypto.getRandomValues(new Uint8Array(8))].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}

export class SharedFeed extends FeedBase {
  constructor(user) {
    super();
    this.tab = newTabId();
    this.interests = new Map(); // tab id -> {shown: [slug], rooms: [slug]}
    this.readyRooms = new Set();
    this.waiters = [];
    this.lastFeedId = null;
    this.leaderTab = null;
    this.goneLeaders = new Set();
    this.byeWaiter = null;
    this.connection = null;
    this.plannedKey = null;
    this.missing = new Set(); // rooms the server says do not exist
    this.link = new TabLink(`chat.live.${user.id}`, {
      onMessage: (message) => this.heard(message),
      onLead: () => { this.lead(); },
    });
  }

  start(interest) {
    this.interests.set(this.tab, interest);
    document.documentElement.dataset.live = 'follower'; // for tests and for reading bug reports
    this.link.start();
    this.post({ type: 'want', ...interest });
    window.addEventListener('pagehide', () => this.leave());
    // Back from the back/forward cache, or thawed after the browser froze this tab: we said bye, and
    // missed what was relayed meanwhile, so start over. A frozen leader would stall every tab: it leaves.
    window.addEventListener('pageshow', (event) => { if (event.persisted) location.reload(); });
    document.addEventListener('freeze', () => this.leave());
    document.addEventListener('resume', () => { if (this.left) location.reload(); });
  }

  want(interest) {
    this.interests.set(this.tab, interest);
    this.post({ type: 'want', ...interest });
    if (this.connection) this.replan();
  }

  /** Resolves once the feed carries `slug`: from then on, every event of that room reaches this tab. */
  subscribe(slug) {
    if (this.readyRooms.has(slug)) return Promise.resolve();
    return new Promise((resolve) => { this.waiters.push({ slug, resolve }); });
  }

  /** Subscribe first, then read the history; the room's gate drops what the history already holds. */
  async follow(slug, readHistory) {
    const gate = this.room(slug);
    gate.readHistory = readHistory;
    await this.subscribe(slug);
    return gate.reload();
  }

  stop(reason) {
    this.connection?.stop(reason);
    if (!this.connection) this.setStatus({ ...this.current, state: 'offline', reason });
  }

  post(message) {
    this.link.post({ ...message, from: this.tab });
  }

  heard(message) {
    const { from } = message;
    if (['event', 'ready', 'status', 'ended'].includes(message.type)) this.leaderTab = from; // only a leader sends these
    switch (message.type) {
      case 'want':
        this.interests.set(from, { shown: message.shown ?? [], rooms: message.rooms ?? [] });
        this.answered?.add(from);
        if (this.connection) {
          this.post({ type: 'status', status: this.current });
          this.post({ type: 'ready', rooms: [...this.readyRooms], cursor: this.connection.cursor });
          this.replan();
        }
        break;
      case 'bye':
        this.interests.delete(from);
        if (message.leading) {
          if (message.cursor) this.lastFeedId = message.cursor;
          this.goneLeaders.add(from);
          if (this.byeWaiter?.tab === from) this.byeWaiter.resolve();
        }
        if (this.connection) this.replan();
        break;
      case 'leader':
        this.leaderTab = from;
        this.post({ type: 'want', ...this.interests.get(this.tab) });
        break;
      case 'event':
        if (message.id) this.lastFeedId = message.id;
        this.route(message.name, message.data, { id: message.id });
        break;
      case 'ready':
        if (message.cursor) this.lastFeedId = message.cursor;
        this.carries(message.rooms ?? []);
        break;
      case 'status':
        if (!this.connection) this.setStatus(message.status);
        break;
      case 'ended':
        this.setStatus({ ...this.current, state: 'offline', reason: message.reason });
        this.sessionEnded(message.reason);
        break;
      default:
    }
  }

  carries(rooms) {
    this.readyRooms = new Set(rooms);
    const waiting = this.waiters;
    this.waiters = waiting.filter((waiter) => !this.readyRooms.has(waiter.slug));
    for (const waiter of waiting) if (this.readyRooms.has(waiter.slug)) waiter.resolve();
  }

  /** This tab holds the lock now: after the old leader's last words, open the feed from the last id we saw. */
  async lead() {
    const previous = this.leaderTab;
    this.leaderTab = this.tab;
    document.documentElement.dataset.live = 'leader';
    this.answered = new Set([this.tab]);
    this.post({ type: 'leader' });
    if (previous && previous !== this.tab && !this.goneLeaders.has(previous)) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, HANDOVER_WAIT_MS); // it crashed: resume from what we saw
        this.byeWaiter = { tab: previous, resolve: () => { clearTimeout(timer); resolve(); } };
      });
      this.byeWaiter = null;
    }
    if (this.left) return;
    setTimeout(() => {
      for (const tab of this.interests.keys()) if (!this.answered.has(tab)) this.interests.delete(tab);
      this.answered = null;
      this.replan();
    }, ANSWER_GRACE_MS);
    const plan = this.plan();
    this.plannedKey = plan.key;
    this.connection = new Connection({
      streamUrl: '/api/events',
      pollUrl: '/api/poll',
      params: plan.params,
      cursor: this.lastFeedId,
      opaqueIds: true,
      onReady: (data) => this.feedReady(data),
      onRefused: () => this.mendRooms(),
      onSessionEnded: (reason) => {
        this.post({ type: 'ended', reason });
        this.sessionEnded(reason);
      },
    });
    this.connection.on('*', (data, { name, id }) => {
      if (id) this.lastFeedId = id;
      this.post({ type: 'event', name, data, id });
      this.route(name, data, { id });
    });
    this.connection.onStatus((status) => {
      this.setStatus(status);
      this.post({ type: 'status', status });
    });
    if (plan.params.rooms) this.connection.start();
  }

  feedReady(data) {
    const rooms = Array.isArray(data.rooms) ? data.rooms : String(this.connection.params.rooms ?? '').split(',');
    this.carries(rooms);
    this.post({ type: 'ready', rooms, cursor: this.connection.cursor });
  }

  /**
   * The rooms the feed should carry: those the tabs show first, then their sidebars'. The user counts as online
   * only where a tab shows the room: the others are named in `away` (the server's complement of "present").
   */
  plan() {
    const shown = new Set();
    const rooms = new Set();
    for (const interest of this.interests.values()) for (const slug of interest.shown ?? []) shown.add(slug);
    for (const slug of shown) if (!this.missing.has(slug)) rooms.add(slug);
    for (const interest of this.interests.values()) {
      for (const slug of interest.rooms ?? []) if (!this.missing.has(slug)) rooms.add(slug);
    }
    const list = [...rooms].slice(0, MAX_RECENT_ROOMS);
    const away = list.filter((slug) => !shown.has(slug));
    const params = { rooms: list.join(','), away: away.join(',') };
    return { params, key: `${[...list].sort()}|${[...away].sort()}` };
  }

  replan() {
    clearTimeout(this.replanTimer);
    this.replanTimer = setTimeout(() => {
      const plan = this.plan();
      if (!this.connection || plan.key === this.plannedKey) return;
      this.plannedKey = plan.key;
      if (!plan.params.rooms) {
        this.connection.stop();
      } else if (this.connection.stopped) {
        this.connection.params = plan.params;
        this.connection.start();
      } else {
        this.connection.setParams(plan.params); // the feed's position stays valid for another list
      }
    }, REPLAN_DELAY_MS);
  }

  /** A 404 (or 422) for the list: find the rooms that no longer exist, leave them out, and go on. */
  mendRooms() {
    const asked = String(this.connection.params.rooms ?? '').split(',').filter(Boolean);
    api('GET', '/api/rooms').then(({ rooms }) => {
      const known = new Set(rooms.map((room) => room.slug));
      const gone = asked.filter((slug) => !known.has(slug) && !this.missing.has(slug));
      if (!gone.length) {
        this.connection.lost('rooms refused');
        return;
      }
      for (const slug of gone) this.missing.add(slug);
      const plan = this.plan();
      this.plannedKey = plan.key;
      if (plan.params.rooms) this.connection.setParams(plan.params);
      else this.connection.stop();
    }).catch(() => this.connection.lost('rooms unknown'));
    return true;
  }

  /** The tab is going: a leader closes its feed, then says bye, then lets the lock go to the next tab. */
  leave() {
    if (this.left) return;
    this.left = true;
    const leading = Boolean(this.connection);
    this.connection?.stop();
    this.post({ type: 'bye', leading, cursor: this.connection?.cursor ?? null });
    this.link.close();
  }
}
