/**
 * The dashboard's live feed: every room's messages and moderation notices, newest at the bottom.
 *
 * Built for 100 messages a second across rooms: arrivals are queued and drawn once per animation frame
 * (one DOM append and one trim per frame, however many came), and the list keeps at most `cap` items,
 * dropping the oldest. A hidden tab gets no frames, so the queue itself keeps at most `cap` items too.
 * The room and text filters hide items (the `hidden` attribute) among what is loaded; nothing is re-read.
 * Everything a user wrote goes in as text nodes (render.js), never as HTML.
 */
import { renderMessage, renderNotice } from './render.js';

const NEAR_BOTTOM_PX = 64;

function feedKey(room, id) {
  return `${room}/${id}`;
}

export class ModFeed {
  /** list: the `[data-testid=mod-feed]` element; scroller: its scrolling box; cap: the most items kept. */
  constructor({ list, scroller, cap, onDrawn = () => {} }) {
    Object.assign(this, { list, scroller, cap, onDrawn });
    this.queue = []; // {message} or {notice, room}, not drawn yet
    this.keys = new Set(); // messages queued or drawn, so none is shown twice
    this.searchText = new WeakMap(); // item -> lowercased text the text filter matches
    this.filter = { room: '', text: '' };
    this.frame = null;
    this.removedSenders = new Map(); // key -> sender of what remove() took out lately, for the deletion's notice
  }

  /** A live message, drawn with the next frame; true when it is new here. */
  add(message) {
    const key = feedKey(message.room, message.id);
    if (message.deleted || this.keys.has(key)) return false;
    this.keys.add(key);
    this.enqueue({ message });
    return true;
  }

  /** A one-line note (a deletion, a mute), in order with the messages. */
  note(text, room = null) {
    this.enqueue({ notice: text, room });
  }

  /** Recent history, older than anything drawn live so far: inserted quietly before the first drawn item. */
  addRecent(messages) {
    const first = this.list.firstElementChild;
    const fresh = messages.filter((message) => !message.deleted && !this.keys.has(feedKey(message.room, message.id)));
    const room = Math.max(0, this.cap - this.list.childElementCount);
    const fragment = document.createDocumentFragment();
    for (const message of fresh.slice(-room)) {
      this.keys.add(feedKey(message.room, message.id));
      fragment.append(this.build({ message }));
    }
    this.list.insertBefore(fragment, first);
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.onDrawn();
  }

  /** Take a message out, drawn or still queued; its sender's name, when it was here. */
  remove(room, id) {
    const key = feedKey(room, id);
    if (!this.keys.delete(key)) return this.removedSenders.get(key) ?? null;
    let sender = null;
    const item = this.list.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (item) {
      sender = item.dataset.sender;
      item.remove();
      this.onDrawn();
    } else {
      const queued = this.queue.findIndex((entry) => entry.message
        && feedKey(entry.message.room, entry.message.id) === key);
      if (queued !== -1) sender = this.queue.splice(queued, 1)[0].message.sender.username;
    }
    this.removedSenders.set(key, sender);
    if (this.removedSenders.size > 500) this.removedSenders.delete(this.removedSenders.keys().next().value);
    return sender;
  }

  /** Show only `room` ('' for all) and items whose sender, room or text contains `text` (ignoring case). */
  setFilter({ room = this.filter.room, text = this.filter.text }) {
    this.filter = { room, text: text.trim().toLowerCase() };
    for (const item of this.list.children) item.hidden = !this.matches(item);
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.onDrawn();
  }

  /** How many items are drawn, and how many of them the filters show. */
  counts() {
    const total = this.list.childElementCount;
    if (!this.filter.room && !this.filter.text) return { total, shown: total };
    let shown = 0;
    for (const item of this.list.children) if (!item.hidden) shown += 1;
    return { total, shown };
  }

  // Internals

  enqueue(entry) {
    this.queue.push(entry);
    if (this.queue.length > this.cap) this.forget(this.queue.splice(0, this.queue.length - this.cap));
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.draw());
  }

  forget(entries) {
    for (const entry of entries) if (entry.message) this.keys.delete(feedKey(entry.message.room, entry.message.id));
  }

  matches(item) {
    if (this.filter.room && item.dataset.room !== this.filter.room) return false;
    return !this.filter.text || (this.searchText.get(item) ?? '').includes(this.filter.text);
  }

  build(entry) {
    if (entry.notice !== undefined) {
      const item = renderNotice('notice-template', entry.notice);
      if (entry.room) item.dataset.room = entry.room;
      this.searchText.set(item, entry.notice.toLowerCase());
      item.hidden = !this.matches(item);
      return item;
    }
    const { message } = entry;
    const item = renderMessage('feed-item-template', message);
    item.dataset.key = feedKey(message.room, message.id);
    const roomLink = item.querySelector('.feed-room');
    roomLink.href = `/rooms/${encodeURIComponent(message.room)}`;
    roomLink.textContent = `#${message.room}`;
    const who = message.sender.username;
    item.querySelector('[data-action=delete]').setAttribute('aria-label', `Delete message from ${who} in ${message.room}`);
    item.querySelector('[data-action=mute]').setAttribute('aria-label', `Mute ${who} in ${message.room} for 10 minutes`);
    item.querySelector('[data-action=ban]').setAttribute('aria-label', `Ban ${who}`);
    this.searchText.set(item, `${who}\n#${message.room}\n${message.body}`.toLowerCase());
    item.hidden = !this.matches(item);
    return item;
  }

  /** One frame's work: draw what is queued in one append, drop the oldest past the cap, keep the scroll. */
  draw() {
    this.frame = null;
    const entries = this.queue.splice(0);
    if (!entries.length) return;
    const { scroller, list } = this;
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= NEAR_BOTTOM_PX;
    const fragment = document.createDocumentFragment();
    for (const entry of entries) fragment.append(this.build(entry));
    list.append(fragment);
    const excess = list.childElementCount - this.cap;
    if (excess > 0) {
      const before = atBottom ? 0 : scroller.scrollHeight;
      const range = document.createRange();
      range.setStartBefore(list.firstElementChild);
      range.setEndAfter(list.children[excess - 1]);
      for (let index = 0; index < excess; index += 1) {
        const { key } = list.children[index].dataset;
        if (key) this.keys.delete(key);
      }
      range.deleteContents();
      // Someone reading older items: keep what they look at in place while the top is dropped.
      if (!atBottom) scroller.scrollTop -= before - scroller.scrollHeight;
    }
    if (atBottom) scroller.scrollTop = scroller.scrollHeight;
    this.onDrawn();
  }
}
