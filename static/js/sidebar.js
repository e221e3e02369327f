/**
 * The rooms sidebar: this browser's open and recent rooms, each with its count of messages since the user last
 * looked at it here and a mark when one of them mentions the user; live from the shared feed; the total in the title.
 */
import { api, ApiError, roomPath } from './api.js';
import { cloneTemplate, compareIds, mentions } from './render.js';

const HISTORY_PAGE = 50; // a count from history stops here ("50+")

export class Sidebar {
  /**
   * @param {object} options
   * @param {HTMLElement} options.list  the `[data-testid=recent-rooms]` list
   * @param {object} options.live  the page's live feed (live.js)
   * @param {import('./rooms-memory.js').RoomsMemory} options.memory
   * @param {{id: number, username: string}} options.me
   * @param {string|null} [options.shown]  the room this tab shows, which counts as looked at while visible
   */
  constructor({ list, live, memory, me, shown = null }) {
    Object.assign(this, { list, live, memory, me, shown });
    this.titleBase = document.title;
    this.rooms = []; // slugs, in the order shown
    this.names = new Map();
    this.unread = new Map(); // slug -> Map(message id -> mentions me)
    this.capped = new Set(); // rooms whose count reached a full history page
    this.shownLatest = null;
  }

  start() {
    this.rooms = this.memory.recent();
    if (this.shown && !this.rooms.includes(this.shown)) this.rooms.unshift(this.shown);
    this.render();
    const shownGate = this.shown && this.live.room(this.shown);
    shownGate?.on('message', (message) => this.arrivedShown(message));
    shownGate?.on('message_deleted', (data) => this.deleted(this.shown, data.id));
    for (const slug of this.rooms) if (slug !== this.shown) this.follow(slug);
    this.memory.onChange(() => this.seenElsewhere());
    document.addEventListener('visibilitychange', () => this.lookedAtShown());
    this.loadNames();
  }

  follow(slug) {
    const gate = this.live.room(slug);
    gate.on('message', (message) => this.arrived(slug, message));
    gate.on('message_deleted', (data) => this.deleted(slug, data.id));
    this.live.follow(slug, () => this.readCount(slug)).catch((error) => console.error(`counting ${slug}`, error));
  }

  /** The room shown has its history on screen up to `id`; with the tab visible, the user has seen it. */
  shownUpTo(id) {
    if (id && (!this.shownLatest || compareIds(id, this.shownLatest) > 0)) this.shownLatest = id;
    this.lookedAtShown();
  }

  async loadNames() {
    try {
      const { rooms } = await api('GET', '/api/rooms');
      const known = new Set(rooms.map((room) => room.slug));
      for (const room of rooms) this.names.set(room.slug, room.name);
      for (const slug of this.rooms.filter((other) => !known.has(other))) this.drop(slug);
      this.render();
    } catch { /* slugs stand in for names */ }
  }

  async readCount(slug) {
    let page;
    try {
      page = await api('GET', `${roomPath(slug, 'messages')}?limit=${HISTORY_PAGE}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.drop(slug);
        return null;
      }
      throw error;
    }
    const seen = this.memory.lastSeen(slug);
    const counted = new Map();
    for (const message of page.messages) {
      if (this.counts(message, seen)) counted.set(message.id, mentions(message.body, this.me.username));
    }
    this.unread.set(slug, counted);
    if (counted.size >= HISTORY_PAGE && page.has_more) this.capped.add(slug);
    this.render();
    return page.cursor;
  }

  counts(message, seen) {
    return !message.deleted && message.sender?.id !== this.me.id && (!seen || compareIds(message.id, seen) > 0);
  }

  arrived(slug, message) {
    if (!this.counts(message, this.memory.lastSeen(slug))) return;
    if (!this.unread.has(slug)) this.unread.set(slug, new Map());
    this.unread.get(slug).set(message.id, mentions(message.body, this.me.username));
    this.render();
  }

  arrivedShown(message) {
    if (document.visibilityState !== 'visible') this.arrived(this.shown, message); // unread until the tab is seen
    this.shownUpTo(message.id);
  }

  deleted(slug, id) {
    if (this.unread.get(slug)?.delete(id)) this.render();
  }

  lookedAtShown() {
    if (!this.shown || document.visibilityState !== 'visible') return;
    if (this.shownLatest) this.memory.saw(this.shown, this.shownLatest);
    if (this.unread.get(this.shown)?.size) {
      this.unread.set(this.shown, new Map());
      this.render();
    }
  }

  /** Another tab of this browser looked at some room: what it saw is read here too. */
  seenElsewhere() {
    const added = this.memory.recent().filter((slug) => !this.rooms.includes(slug));
    if (added.length) {
      this.rooms.push(...added);
      this.live.want({ shown: this.shown ? [this.shown] : [], rooms: this.rooms });
      for (const slug of added) this.follow(slug);
    }
    for (const [slug, unread] of this.unread) {
      const seen = this.memory.lastSeen(slug);
      for (const id of [...unread.keys()]) if (seen && compareIds(id, seen) <= 0) unread.delete(id);
      if (!unread.size) this.capped.delete(slug);
    }
    this.render();
  }

  drop(slug) {
    this.memory.forget(slug);
    this.rooms = this.rooms.filter((other) => other !== slug);
    this.unread.delete(slug);
    this.render();
  }

  render() {
    let total = 0;
    const items = this.rooms.map((slug) => {
      const unread = this.unread.get(slug) ?? new Map();
      const mentioned = [...unread.values()].some(Boolean);
      total += unread.size;
      const item = cloneTemplate('recent-room-template');
      const link = item.querySelector('[data-testid=room-link]');
      link.href = `/rooms/${encodeURIComponent(slug)}`;
      link.dataset.room = slug;
      if (slug === this.shown) link.setAttribute('aria-current', 'page');
      const name = this.names.get(slug) ?? slug;
      item.querySelector('.recent-room-name').textContent = name;
      item.querySelector('[data-testid=mention-mark]').hidden = !mentioned;
      const count = item.querySelector('[data-testid=unread-count]');
      count.textContent = unread.size ? `${unread.size}${this.capped.has(slug) ? '+' : ''}` : '';
      count.hidden = !unread.size;
      link.setAttribute('aria-label', `${name}${unread.size ? `, ${unread.size} unread` : ''}${mentioned ? ', mentions you' : ''}`);
      return item;
    });
    this.list.replaceChildren(...items);
    this.list.closest('[data-role=sidebar]')?.toggleAttribute('hidden', !items.length);
    document.title = total ? `(${total}) ${this.titleBase}` : this.titleBase;
  }
}
