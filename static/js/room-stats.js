/**
 * Per-room activity on the dashboard: messages in the last minute (counted live from the feed's `message`
 * events, in one-second buckets) and people online, with each room's lock and slow mode.
 * The table is redrawn once a second (and when a room changes), not per message, busiest rooms first.
 */
const WINDOW_SECONDS = 60;

function second() {
  return Math.floor(Date.now() / 1000);
}

function cell(tag, testid, className = '') {
  const element = document.createElement(tag);
  if (testid) element.dataset.testid = testid;
  if (className) element.className = className;
  return element;
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

export class RoomStats {
  /** body: the table's `<tbody>`; onPick(slug): the moderator picked a room's name (to filter the feed by it). */
  constructor({ body, onPick = () => {} }) {
    this.body = body;
    this.onPick = onPick;
    this.rooms = new Map(); // slug -> {name, locked, slowMode, online, buckets, seconds, row}
  }

  /** Start redrawing once a second. */
  start() {
    this.render();
    this.timer = setInterval(() => this.render(), 1000);
  }

  /** Rooms as GET /api/rooms answers them (online from `online_count`). */
  setRooms(rooms) {
    for (const room of rooms) this.update(room, { online: true });
    this.render();
  }

  /** A `room_updated` event's room: its lock and slow mode, shown at once. */
  roomUpdated(room) {
    this.update(room);
    this.render();
  }

  /** A presence event's count of who is online in a room (shown with the next tick: they come often). */
  setOnline(slug, count) {
    this.entry(slug).online = count;
  }

  /** A `room` object (from the list or an event); `online`: take its `online_count` too. */
  update(room, { online = false } = {}) {
    const entry = this.entry(room.slug);
    entry.name = room.name ?? entry.name;
    entry.locked = Boolean(room.locked);
    entry.slowMode = Number(room.slow_mode_seconds) || 0;
    if (online && Number.isFinite(room.online_count)) entry.online = room.online_count;
  }

  noteMessage(slug) {
    const entry = this.entry(slug);
    const now = second();
    const index = now % WINDOW_SECONDS;
    if (entry.seconds[index] !== now) {
      entry.seconds[index] = now;
      entry.buckets[index] = 0;
    }
    entry.buckets[index] += 1;
  }

  /** Messages in `slug` within the last minute. */
  rate(slug) {
    const entry = this.rooms.get(slug);
    if (!entry) return 0;
    const oldest = second() - WINDOW_SECONDS;
    let total = 0;
    for (let index = 0; index < WINDOW_SECONDS; index += 1) {
      if (entry.seconds[index] > oldest) total += entry.buckets[index];
    }
    return total;
  }

  // Internals

  entry(slug) {
    let entry = this.rooms.get(slug);
    if (!entry) {
      entry = { name: slug, locked: false, slowMode: 0, online: null, buckets: new Uint32Array(WINDOW_SECONDS),
        seconds: new Float64Array(WINDOW_SECONDS), row: null };
      this.rooms.set(slug, entry);
    }
    return entry;
  }

  row(slug, entry) {
    if (entry.row) return entry.row;
    const row = cell('tr', 'room-stat');
    row.dataset.room = slug;
    const head = cell('th', null, 'room-stat-name');
    head.scope = 'row';
    const pick = cell('button', 'room-stat-pick', 'button-quiet link-button');
    pick.type = 'button';
    pick.title = `Show only #${slug} in the feed`;
    pick.addEventListener('click', () => this.onPick(slug));
    head.append(pick, cell('span', 'room-stat-flags', 'room-flags'));
    row.append(head, cell('td', 'room-rate', 'num'), cell('td', 'room-online', 'num'));
    entry.row = row;
    return row;
  }

  render() {
    const order = [...this.rooms.entries()].map(([slug, entry]) => ({ slug, entry, rate: this.rate(slug) }));
    order.sort((a, b) => b.rate - a.rate || (b.entry.online ?? 0) - (a.entry.online ?? 0)
      || a.entry.name.localeCompare(b.entry.name, undefined, { sensitivity: 'base' }));
    order.forEach(({ slug, entry, rate }, position) => {
      const row = this.row(slug, entry);
      setText(row.querySelector('[data-testid=room-stat-pick]'), entry.name);
      const flags = [entry.locked ? 'locked' : '', entry.slowMode ? `slow ${entry.slowMode} s` : ''].filter(Boolean);
      setText(row.querySelector('[data-testid=room-stat-flags]'), flags.join(' · '));
      setText(row.querySelector('[data-testid=room-rate]'), String(rate));
      setText(row.querySelector('[data-testid=room-online]'), entry.online === null ? '–' : String(entry.online));
      row.classList.toggle('busy', rate > 0);
      if (this.body.children[position] !== row) this.body.insertBefore(row, this.body.children[position] ?? null);
    });
  }
}
