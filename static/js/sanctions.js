/**
 * What is in force: bans (GET /api/bans) and each room's mutes (GET /api/rooms/<slug>/mutes), every row with
 * who did it, when, why, and a one-click Unban / Unmute.
 *
 * Mutes stay live from the feed: `user_muted` adds a row at once, and since that event carries no reason the
 * room's mutes are then re-read (an answer that a later event of the room overtook is dropped); `user_unmuted`
 * removes it, also when a mute ran out (`"by": null`). Bans are live the same way: `user_banned` carries the ban
 * itself (reason included) and `user_unbanned` lifts it, whichever moderator acted; the list is read once at the
 * start and again only when the feed restarts (`reset`).
 */
import { api, roomPath } from './api.js';
import { cloneTemplate, setTime } from './render.js';

const MUTE_READS_AT_ONCE = 4; // the first read asks every room; a few at a time leaves room for the rest of the page
const REREAD_DELAY_MS = 250; // events of one room that come together cost one read

function muteKey(room, username) {
  return `${room}\n${username.toLowerCase()}`;
}

export class Sanctions {
  /** onLift(kind, entry): 'unban' {username} or 'unmute' {room, username}; resolves true when it was done. */
  constructor({ bansList, mutesList, onLift }) {
    Object.assign(this, { bansList, mutesList, onLift });
    this.bans = [];
    this.bansVersion = 0; // ban events seen, so that a list read they overtook is read again
    this.mutes = new Map(); // muteKey -> {room, username, until, by, reason}
    this.roomVersions = new Map(); // slug -> count of events seen, to drop reads that an event overtook
    this.rereads = new Map(); // slug -> timer
    this.renderBans();
    this.renderMutes();
    setInterval(() => this.dropExpired(), 5000); // in case the feed is behind when a mute runs out
  }

  async loadBans() {
    const version = this.bansVersion;
    const { bans } = await api('GET', '/api/bans');
    if (version !== this.bansVersion) return this.loadBans(); // an event came meanwhile: this read may predate it
    this.bans = bans;
    this.renderBans();
    return undefined;
  }

  /** A `user_banned` event: the ban, newest first (a repeat replaces the row). */
  banned(ban) {
    this.bansVersion += 1;
    this.bans = [ban, ...this.bans.filter((held) => held.username.toLowerCase() !== ban.username.toLowerCase())];
    this.renderBans();
  }

  /** A `user_unbanned` event. */
  unbanned({ username }) {
    this.bansVersion += 1;
    this.banLifted(username);
  }

  /** Read the mutes of these rooms (a few requests at a time). */
  async loadMutes(slugs) {
    const waiting = [...slugs];
    const worker = async () => {
      while (waiting.length) await this.readRoom(waiting.shift()).catch(() => null);
    };
    await Promise.all(Array.from({ length: MUTE_READS_AT_ONCE }, worker));
  }

  /** A `user_muted` event. */
  muted(data) {
    const key = muteKey(data.room, data.username);
    const reason = this.mutes.get(key)?.reason ?? null;
    this.mutes.set(key, { room: data.room, username: data.username, until: data.until, by: data.by, reason,
      reasonPending: true });
    this.changed(data.room);
  }

  /** A `user_unmuted` event (`by` null: the mute ran out). */
  unmuted(data) {
    this.mutes.delete(muteKey(data.room, data.username));
    this.changed(data.room);
  }

  /** This page lifted a ban: show it at once (the next read agrees). */
  banLifted(username) {
    this.bans = this.bans.filter((ban) => ban.username.toLowerCase() !== username.toLowerCase());
    this.renderBans();
  }

  muteLifted(room, username) {
    if (this.mutes.delete(muteKey(room, username))) this.renderMutes();
  }

  // Internals

  changed(room) {
    this.roomVersions.set(room, (this.roomVersions.get(room) ?? 0) + 1);
    this.renderMutes();
    clearTimeout(this.rereads.get(room));
    this.rereads.set(room, setTimeout(() => {
      this.rereads.delete(room);
      this.readRoom(room).catch(() => null);
    }, REREAD_DELAY_MS));
  }

  async readRoom(room) {
    const version = this.roomVersions.get(room) ?? 0;
    const { mutes } = await api('GET', roomPath(room, 'mutes'));
    if ((this.roomVersions.get(room) ?? 0) !== version) return; // an event came meanwhile: its own read follows
    for (const key of [...this.mutes.keys()]) if (this.mutes.get(key).room === room) this.mutes.delete(key);
    for (const mute of mutes) this.mutes.set(muteKey(mute.room, mute.username), mute);
    this.renderMutes();
  }

  dropExpired() {
    const now = Date.now();
    let dropped = false;
    for (const [key, mute] of this.mutes) {
      if (mute.until && Date.parse(mute.until) <= now) {
        this.mutes.delete(key);
        dropped = true;
      }
    }
    if (dropped) this.renderMutes();
  }

  entry({ testid, username, room = null, by, whenLabel, when, reason, reasonPending = false, liftLabel, lift }) {
    const item = cloneTemplate('sanction-template');
    item.dataset.testid = testid;
    item.dataset.username = username;
    item.querySelector('[data-testid=entry-username]').textContent = username;
    const where = item.querySelector('[data-testid=entry-room]');
    if (room) {
      item.dataset.room = room;
      where.textContent = `in #${room}`;
    } else {
      where.remove();
    }
    item.querySelector('[data-testid=entry-by]').textContent = by ?? 'the system';
    item.querySelector('[data-role=when-label]').textContent = whenLabel;
    setTime(item.querySelector('[data-testid=entry-time]'), when);
    const why = item.querySelector('[data-testid=entry-reason]');
    why.textContent = reason || (reasonPending ? '…' : 'No reason given');
    why.classList.toggle('muted', !reason);
    const button = item.querySelector('[data-role=lift]');
    button.textContent = liftLabel.text;
    button.dataset.testid = liftLabel.testid;
    button.setAttribute('aria-label', liftLabel.aria);
    button.addEventListener('click', async () => {
      button.disabled = true;
      const done = await lift();
      if (!done && button.isConnected) button.disabled = false;
    });
    return item;
  }

  renderBans() {
    const items = this.bans.map((ban) => this.entry({
      testid: 'ban-entry', username: ban.username, by: ban.by, whenLabel: 'on', when: ban.created_at, reason: ban.reason,
      liftLabel: { text: 'Unban', testid: 'unban-entry', aria: `Unban ${ban.username}` },
      lift: async () => {
        const done = await this.onLift('unban', { username: ban.username });
        if (done) this.banLifted(ban.username);
        return done;
      },
    }));
    this.bansList.replaceChildren(...(items.length ? items : [empty('Nobody is banned.')]));
  }

  renderMutes() {
    const mutes = [...this.mutes.values()].sort((a, b) => Date.parse(a.until) - Date.parse(b.until)
      || a.room.localeCompare(b.room));
    const items = mutes.map((mute) => this.entry({
      testid: 'mute-entry', username: mute.username, room: mute.room, by: mute.by, whenLabel: 'until', when: mute.until,
      reason: mute.reason, reasonPending: mute.reasonPending,
      liftLabel: { text: 'Unmute', testid: 'unmute-entry', aria: `Unmute ${mute.username} in ${mute.room}` },
      lift: async () => {
        const done = await this.onLift('unmute', { room: mute.room, username: mute.username });
        if (done) this.muteLifted(mute.room, mute.username);
        return done;
      },
    }));
    this.mutesList.replaceChildren(...(items.length ? items : [empty('Nobody is muted.')]));
  }
}

function empty(text) {
  const item = document.createElement('li');
  item.className = 'muted empty';
  item.textContent = text;
  return item;
}
