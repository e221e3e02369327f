/** DOM building blocks: <template> clones filled with textContent (never innerHTML), times, status, announcements. */

/** Compare two event ids of one stream: split at '-' into two integers, compared as a pair. */
export function compareIds(a, b) {
  const [aMs, aSeq] = String(a).split('-').map(BigInt);
  const [bMs, bSeq] = String(b).split('-').map(BigInt);
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  if (aSeq !== bSeq) return aSeq < bSeq ? -1 : 1;
  return 0;
}

/** The first element of a <template id=...>, cloned. */
export function cloneTemplate(id) {
  const template = document.getElementById(id);
  return template.content.firstElementChild.cloneNode(true);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

/** Fill a <time> with the local time of an ISO instant (the date too, when it is not today). */
export function setTime(element, iso) {
  const moment = iso ? new Date(iso) : new Date();
  if (Number.isNaN(moment.getTime())) return;
  element.dateTime = moment.toISOString();
  const today = new Date().toDateString() === moment.toDateString();
  element.textContent = today ? timeFormat.format(moment) : `${dayFormat.format(moment)} ${timeFormat.format(moment)}`;
  element.title = dateTimeFormat.format(moment);
}

export function localTime(date) {
  return timeFormat.format(date instanceof Date ? date : new Date(date));
}

function mentionPattern(username) {
  const name = username.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
  // A whole word: not inside a longer name (a trailing "." ends a sentence unless a name goes on after it).
  return new RegExp(`(^|[^A-Za-z0-9_.@-])(@${name})(?![A-Za-z0-9_-]|\\.[A-Za-z0-9_-])`, 'gi');
}

/** Whether `body` mentions `@username` (case-insensitive, as a whole word). */
export function mentions(body, username) {
  return Boolean(username) && mentionPattern(username).test(body ?? '');
}

/** Fill `element` with `body` as text, each mention of `@username` in a `mark` element (never HTML). */
export function fillBody(element, body, username = null) {
  if (!username || !mentions(body, username)) {
    element.textContent = body;
    return;
  }
  const parts = [];
  let last = 0;
  for (const match of body.matchAll(mentionPattern(username))) {
    const start = match.index + match[1].length;
    if (start > last) parts.push(document.createTextNode(body.slice(last, start)));
    const mark = document.createElement('mark');
    mark.className = 'mention';
    mark.dataset.testid = 'mention';
    mark.textContent = match[2];
    parts.push(mark);
    last = start + match[2].length;
  }
  if (last < body.length) parts.push(document.createTextNode(body.slice(last)));
  element.replaceChildren(...parts);
}

/** A message as a list item: sender, local time and body, all as text (mentions of `highlight` marked). */
export function renderMessage(templateId, message, highlight = null) {
  const item = cloneTemplate(templateId);
  fillMessage(item, message, highlight);
  return item;
}

export function fillMessage(item, message, highlight = null) {
  if (message.id) item.dataset.id = message.id;
  if (message.room) item.dataset.room = message.room;
  if (message.client_id) item.dataset.clientId = message.client_id;
  const sender = message.sender?.username ?? '';
  item.dataset.sender = sender;
  item.querySelector('.message-sender').textContent = sender;
  setTime(item.querySelector('.message-time'), message.created_at);
  fillBody(item.querySelector('.message-body'), message.body, highlight);
  if (highlight && message.sender?.username !== highlight && mentions(message.body, highlight)) {
    item.classList.add('mentions-me');
  }
}

/** A one-line note in a timeline (a mute, a lock), as text. */
export function renderNotice(templateId, text, iso) {
  const item = cloneTemplate(templateId);
  item.querySelector('.notice-text').textContent = text;
  setTime(item.querySelector('.message-time'), iso);
  return item;
}

const STATUS_TEXT = {
  connecting: () => 'Connecting…',
  live: (status) => (status.transport === 'poll'
    ? ({ proxy: 'Live · long-polling (streaming is blocked on this network)',
      busy: 'Live · long-polling (the server is busy)' }[status.fallback] ?? 'Live · long-polling')
    : 'Live'),
  offline: (status) => {
    const why = status.reason === 'signed_out' ? 'Signed out'
      : status.reason === 'banned' ? 'Disconnected: this account is banned'
        : navigator.onLine === false ? 'Offline — waiting for the network' : 'Offline — reconnecting…';
    return status.lastSynced ? `${why} · last synced ${localTime(status.lastSynced)}` : why;
  },
};

/** Show a Connection's status on `[data-testid=connection-status]`. */
export function renderStatus(element, status) {
  element.dataset.state = status.state;
  element.dataset.transport = status.transport;
  const text = (STATUS_TEXT[status.state] ?? STATUS_TEXT.connecting)(status);
  const label = element.querySelector('[data-role=status-text]');
  if (label.textContent !== text) label.textContent = text;
  element.title = status.lastSynced ? `Last synced ${dateTimeFormat.format(status.lastSynced)}` : '';
}

/** A page-wide message in the `[data-role=flash]` alert. */
export function flash(text, { link = null } = {}) {
  const box = document.querySelector('[data-role=flash]');
  if (!box) return;
  box.replaceChildren(document.createTextNode(text));
  if (link) {
    const anchor = document.createElement('a');
    anchor.href = link.href;
    anchor.textContent = link.text;
    box.append(' ', anchor);
  }
  box.hidden = !text;
}

/**
 * Screen-reader announcements through an aria-live region, batched so a burst reads as one line.
 */
export class Announcer {
  constructor(region, { delayMs = 600 } = {}) {
    this.region = region;
    this.delayMs = delayMs;
    this.pending = [];
    this.timer = null;
  }

  say(text) {
    this.pending.push(text);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), this.delayMs);
  }

  flush() {
    this.timer = null;
    const lines = this.pending.splice(0);
    if (!lines.length || !this.region) return;
    const line = document.createElement('p');
    line.textContent = lines.length > 3 ? `${lines.length} new messages. Latest: ${lines.at(-1)}` : lines.join('. ');
    this.region.append(line);
    while (this.region.childElementCount > 3) this.region.firstElementChild.remove();
  }
}
