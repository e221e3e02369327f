/**
 * The chat page: live events of its room (from the feed this browser's tabs share, live.js) and its history,
 * subscribed first and read second; the composer; online list; room state; the rooms sidebar.
 * This module registers one handler per event name on its room's gate.
 */
import { api, ApiError, loadSession, NetworkError, roomPath } from './api.js';
import { pageUser } from './auth.js';
import { openLive } from './live.js';
import { Outbox } from './outbox.js';
import { PostingLimits } from './posting-limits.js';
import { Announcer, cloneTemplate, flash, localTime, renderStatus } from './render.js';
import { RoomsMemory } from './rooms-memory.js';
import { Sidebar } from './sidebar.js';
import { Timeline } from './timeline.js';

const HISTORY_PAGE = 50;

const root = document.querySelector('[data-role=chat]');
const slug = root.dataset.room;
const maxChars = Number(root.dataset.maxChars) || 2000;
const me = pageUser();
const isModerator = me.role === 'moderator';
const element = (role) => root.querySelector(`[data-role=${role}]`);

const scroller = element('scroller');
const composer = element('composer');
const textarea = composer.elements.body;
const feedback = element('feedback');
const statusElement = root.querySelector('[data-testid=connection-status]');
const loadOlderButton = element('load-older');
const announcer = new Announcer(element('announcer'));

let hasMore = false;
let loadingOlder = false;
let roomLocked = !element('locked-badge').hidden;
let feedbackTimer = null;

// Slow mode and the user's own mute: the composer counts down to when they can post again.
const sendButton = composer.querySelector('[data-testid=send]');
const limits = new PostingLimits({
  badge: element('slow-mode-badge'),
  countdown: element('composer-countdown'),
  muteNotice: element('mute-notice'),
  exempt: isModerator,
  onChange: (held) => {
    sendButton.setAttribute('aria-disabled', String(held));
    if (!held) {
      if (/slow mode|muted/i.test(feedback.textContent)) say('');
      announcer.say('You can post again.');
    }
  },
});
{
  const notice = element('mute-notice'); // the user's mute in force when the server rendered the page
  if (notice.dataset.until) limits.muted({ until: notice.dataset.until, by: notice.dataset.by || null });
}
limits.setSlowMode(root.dataset.slowModeSeconds);

// Feedback

function say(text, { kind = 'error', clearAfterMs = null } = {}) {
  clearTimeout(feedbackTimer);
  feedback.textContent = text;
  feedback.dataset.kind = kind;
  if (clearAfterMs) feedbackTimer = setTimeout(() => { feedback.textContent = ''; }, clearAfterMs);
}

function describeRejection(error) {
  if (error instanceof NetworkError) {
    return error.timedOut ? 'The server did not answer in time. Use Retry to send again.'
      : 'Could not reach the server. Use Retry to send again.';
  }
  switch (error.code) {
    case 'muted': return 'You are muted in this room, so your message was not sent.';
    case 'slow_mode': {
      const wait = error.retryAfter ?? limits.slowModeSeconds;
      return `Slow mode: wait ${wait} second${wait === 1 ? '' : 's'}, then use Retry.`;
    }
    case 'banned': return 'Your account is banned: you cannot send messages.';
    case 'room_locked': return 'This room is locked: only moderators can post right now.';
    case 'rate_limited': {
      const wait = error.retryAfter ?? 10;
      return `You are sending messages too fast. Wait ${wait} second${wait === 1 ? '' : 's'}, then use Retry.`;
    }
    case 'payload_too_large': return `Your message is too long (at most ${maxChars} characters).`;
    case 'validation_error': {
      const problem = [].concat(error.fields?.body ?? [])[0];
      return problem ? `Your message was not accepted: it ${problem}.` : `Your message was not accepted: ${error.message}`;
    }
    case 'unavailable': return 'The server could not take your message just now. Use Retry in a moment.';
    case 'not_authenticated': return 'You have been signed out.';
    case 'not_found': return 'This room no longer exists.';
    default: return `Your message was not sent: ${error.message}`;
  }
}

// The timeline, the outbox and the connection

const timeline = new Timeline({
  scroller,
  list: element('message-list'),
  jumpButton: element('jump'),
  jumpCount: element('jump-count'),
  me,
  canDelete: (message) => isModerator || message.sender?.id === me.id,
  onDelete: async (id, button) => {
    button.disabled = true;
    try {
      await api('DELETE', roomPath(slug, 'messages', id));
      timeline.remove(id);
    } catch (error) {
      button.disabled = false;
      say(error instanceof ApiError ? `Could not delete: ${error.message}` : 'Could not delete: no connection.');
    }
  },
  onRetry: (clientId) => {
    const held = limits.refusal();
    if (held) say(held, { kind: 'warning' });
    else outbox.retry(clientId);
  },
});

async function loadHistory() {
  const page = await api('GET', `${roomPath(slug, 'messages')}?limit=${HISTORY_PAGE}`);
  timeline.replaceAll(page.messages);
  setHasMore(page.has_more);
  sidebar.shownUpTo(timeline.latestId());
  return page.cursor;
}

let ended = false;
function sessionEnded(reason) {
  if (ended) return;
  ended = true;
  connection.stop(reason);
  textarea.disabled = true;
  composer.querySelector('[data-testid=send]').disabled = true;
  if (reason === 'banned') flash('Your account has been banned.');
  else flash('You have been signed out.', { link: { href: `/?next=${encodeURIComponent(location.pathname)}`, text: 'Sign in again' } });
}

// This browser remembers the rooms it opened (the sidebar, and the feed's list) and what was seen in each.
const memory = new RoomsMemory(me.id);
memory.opened(slug);
const connection = openLive(me, { shown: [slug], rooms: memory.recent() });
connection.onSessionEnded(sessionEnded);
const room = connection.room(slug);
const sidebar = new Sidebar({ list: document.querySelector('[data-testid=recent-rooms]'), live: connection, memory, me,
  shown: slug });

const outbox = new Outbox({
  slug,
  timeline,
  connection,
  maxChars,
  onRejected: (error) => {
    if (error instanceof ApiError && error.code === 'slow_mode') limits.slowModeRefused(error.retryAfter);
    say(describeRejection(error));
  },
  onAccepted: () => limits.accepted(),
  onSessionEnded: sessionEnded,
});

// The shared feed can be live before it carries this room: until the room is followed, say "connecting".
let following = false;
function showStatus(status) {
  renderStatus(statusElement, following || status.state !== 'live' ? status : { ...status, state: 'connecting' });
  if (following && status.state === 'live') outbox.resume();
}
connection.onStatus(showStatus);

// Handlers, by event name: the room's gate passes its events once its history is shown, each message once

room.on('message', (message) => {
  const mine = message.sender?.id === me.id;
  if (mine) {
    outbox.shownBy(message);
    limits.accepted(); // also a post from another tab of ours: slow mode counts the user's last post
  }
  const outcome = timeline.receive(message);
  if (outcome === 'new' && !mine) announcer.say(`${message.sender.username}: ${message.body.slice(0, 200)}`);
});

room.on('message_deleted', (data) => {
  timeline.remove(data.id);
});

room.on('presence', (data) => renderOnline(data.online ?? []));

// A feed's ids are its own positions, not the room's: notices then take their place by arrival.
const noticeOrder = (id) => (connection.shared ? null : id);

const isMe = (username) => username?.toLowerCase() === me.username.toLowerCase();

room.on('user_muted', (data, { id }) => {
  const until = data.until ? ` until ${localTime(data.until)}` : '';
  timeline.notice(noticeOrder(id), `${data.username} was muted by ${data.by}${until}.`);
  if (isMe(data.username)) {
    say(`You have been muted in this room${until}.`, { kind: 'warning' });
    limits.muted({ until: data.until, by: data.by });
  }
});

room.on('user_unmuted', (data, { id }) => {
  // `"by": null`: nobody lifted it, the mute ran out.
  timeline.notice(noticeOrder(id), data.by ? `${data.username} was unmuted by ${data.by}.` : `${data.username}’s mute ended.`);
  if (isMe(data.username)) {
    limits.unmuted();
    say('You can post in this room again.', { kind: 'info', clearAfterMs: 8000 });
  }
});

room.on('room_updated', (data, { id }) => {
  const seconds = Number(data.room?.slow_mode_seconds ?? limits.slowModeSeconds);
  if (seconds !== limits.slowModeSeconds) {
    timeline.notice(noticeOrder(id), seconds ? `Slow mode is on: one message every ${seconds} s.` : 'Slow mode is off.');
    limits.setSlowMode(seconds);
  }
  const locked = Boolean(data.room?.locked);
  if (locked === roomLocked) return;
  timeline.notice(noticeOrder(id), locked ? 'The room was locked: only moderators can post.' : 'The room was unlocked.');
  setLocked(locked);
});

// Room state

function setLocked(locked) {
  roomLocked = locked;
  element('locked-badge').hidden = !locked;
  const toggle = element('toggle-lock');
  if (toggle) {
    toggle.textContent = locked ? 'Unlock room' : 'Lock room';
    toggle.setAttribute('aria-pressed', String(locked));
  }
  if (locked && !isModerator) say('This room is locked: only moderators can post.', { kind: 'warning' });
  else if (!locked && feedback.textContent.includes('locked')) say('');
}

function renderOnline(usernames) {
  const list = element('online-list');
  const sorted = [...new Set(usernames)].sort((a, b) => a.localeCompare(b, undefined, { sensitivity: 'base' }));
  list.replaceChildren(...sorted.map((username) => {
    const item = cloneTemplate('online-item-template');
    item.querySelector('.online-name').textContent = username;
    item.dataset.username = username;
    if (username === me.username) item.classList.add('me');
    return item;
  }));
  element('online-count').textContent = `(${sorted.length})`;
}

// Older history

function setHasMore(more) {
  hasMore = more;
  loadOlderButton.hidden = !more;
  element('history-start').hidden = more;
}

async function loadOlder() {
  if (!hasMore || loadingOlder) return;
  const before = timeline.oldestId();
  if (!before) return;
  loadingOlder = true;
  loadOlderButton.disabled = true;
  loadOlderButton.textContent = 'Loading older messages…';
  try {
    const page = await api('GET', `${roomPath(slug, 'messages')}?limit=${HISTORY_PAGE}&before=${encodeURIComponent(before)}`);
    timeline.prependOlder(page.messages);
    setHasMore(page.has_more);
  } catch {
    say('Could not load older messages.', { clearAfterMs: 5000 });
  } finally {
    loadingOlder = false;
    loadOlderButton.disabled = false;
    loadOlderButton.textContent = 'Load older messages';
  }
}

loadOlderButton.addEventListener('click', loadOlder);
scroller.addEventListener('scroll', () => {
  if (scroller.scrollTop < 200 && scroller.scrollHeight > scroller.clientHeight) loadOlder();
}, { passive: true });

// The composer

function submit() {
  let held = textarea.value.trim() ? limits.refusal() : null;
  if (!held && textarea.value.trim() && limits.slowModeSeconds && !isModerator && outbox.busy) {
    // The next post would be refused (429) the moment the one on its way is accepted.
    held = 'Slow mode: your last message is still on its way; this one stays in the box until it is sent.';
  }
  if (held) { // not queued: the text stays in the composer (posting-limits.js says why)
    say(held, { kind: 'warning' });
    return;
  }
  const problem = outbox.send(textarea.value);
  if (problem) {
    say(problem);
    return;
  }
  textarea.value = '';
  updateCount();
  if (!/locked|muted|slow mode/i.test(feedback.textContent)) say('');
}

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  submit();
  textarea.focus();
});

textarea.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    submit();
  }
});

function updateCount() {
  const length = [...textarea.value.trim()].length;
  const counter = element('char-count');
  counter.textContent = length > maxChars * 0.8 ? `· ${length}/${maxChars}` : '';
  counter.classList.toggle('over', length > maxChars);
}
textarea.addEventListener('input', updateCount);

element('toggle-lock')?.addEventListener('click', async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    const data = await api('POST', roomPath(slug, roomLocked ? 'unlock' : 'lock'));
    setLocked(Boolean(data.room.locked));
  } catch (error) {
    say(`Could not change the lock: ${error.message}`);
  } finally {
    button.disabled = false;
  }
});

// Start: who am I (the CSRF token), the room; then its events and its history (live.js orders the two).

async function start() {
  sidebar.start();
  for (let attempt = 0; ; attempt += 1) {
    try {
      const [, about] = await Promise.all([loadSession(), api('GET', roomPath(slug))]);
      renderOnline(about.online);
      setLocked(about.room.locked);
      limits.setSlowMode(about.room.slow_mode_seconds);
      await connection.follow(slug, loadHistory);
      following = true;
      showStatus(connection.status());
      flash('');
      return;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        location.assign(`/?next=${encodeURIComponent(location.pathname + location.search)}`);
        return;
      }
      if (error instanceof ApiError && error.code === 'banned') {
        sessionEnded('banned');
        return;
      }
      renderStatus(statusElement, { ...connection.status(), state: 'offline' });
      flash('Could not load this room. Retrying…');
      await new Promise((resolve) => { setTimeout(resolve, Math.min(5000, 500 * 2 ** attempt)); });
    }
  }
}

start();
