/**
 * The moderators' dashboard: one live feed of every room (/api/moderation/events, same Connection as the chat),
 * delete / mute / ban on each message, and simple mute, ban and lock controls.
 */
import { api, ApiError, loadSession, roomPath } from './api.js';
import './auth.js'; // the logout button
import { Connection } from './connection.js';
import { Announcer, compareIds, localTime, renderMessage, renderNotice, renderStatus, setTime } from './render.js';

const FEED_LIMIT = 500;
const RECENT_ROOMS = 30; // on load, the feed starts with the latest messages of this many rooms
const RECENT_PER_ROOM = 20;
const NEAR_BOTTOM_PX = 64;

const feed = document.querySelector('[data-role=feed]');
const scroller = document.querySelector('[data-role=scroller]');
const statusElement = document.querySelector('[data-testid=connection-status]');
const feedbackBox = document.querySelector('[data-role=mod-feedback]');
const announcer = new Announcer(document.querySelector('[data-role=announcer]'));

function say(text, kind = 'error') {
  feedbackBox.textContent = text;
  feedbackBox.dataset.kind = kind;
}

function problem(error) {
  if (error instanceof ApiError) {
    const fields = Object.entries(error.fields ?? {}).map(([field, why]) => `${field} ${[].concat(why).join(', ')}`);
    return fields.length ? `${error.message}: ${fields.join('; ')}` : error.message;
  }
  return 'no connection to the server';
}

/** Run a moderation call and report its outcome in the feedback line. */
async function act(description, call) {
  say(`${description}…`, 'info');
  try {
    await call();
    say(`Done: ${description}.`, 'info');
    refreshLog();
    return true;
  } catch (error) {
    say(`Could not ${description}: ${problem(error)}.`);
    return false;
  }
}

// The feed

function feedKey(room, id) {
  return `${room}/${id}`;
}
const feedItems = new Map();

function append(item) {
  const stay = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= NEAR_BOTTOM_PX;
  feed.append(item);
  while (feed.childElementCount > FEED_LIMIT) {
    const oldest = feed.firstElementChild;
    feedItems.delete(oldest.dataset.key);
    oldest.remove();
  }
  if (stay) scroller.scrollTop = scroller.scrollHeight;
}

/** Add a message to the feed: at the end, announced (live), or quietly before `before` (recent history). */
function addMessage(message, { recent = false, before = null } = {}) {
  const key = feedKey(message.room, message.id);
  if (feedItems.has(key) || message.deleted) return;
  const item = renderMessage('feed-item-template', message);
  item.dataset.key = key;
  const roomLink = item.querySelector('.feed-room');
  roomLink.href = `/rooms/${encodeURIComponent(message.room)}`;
  roomLink.textContent = `#${message.room}`;
  const who = message.sender.username;
  item.querySelector('[data-action=delete]').setAttribute('aria-label', `Delete message from ${who} in ${message.room}`);
  item.querySelector('[data-action=mute]').setAttribute('aria-label', `Mute ${who} in ${message.room} for 10 minutes`);
  item.querySelector('[data-action=ban]').setAttribute('aria-label', `Ban ${who}`);
  feedItems.set(key, item);
  if (recent) {
    feed.insertBefore(item, before); // before the first live item, or at the end if none came yet
    return;
  }
  append(item);
  announcer.say(`${who} in ${message.room}: ${message.body.slice(0, 120)}`);
}

/** Start the feed with recent messages, older than anything the live feed has shown since. */
async function loadRecent(rooms) {
  const pages = await Promise.all(rooms.slice(0, RECENT_ROOMS).map((room) =>
    api('GET', `${roomPath(room.slug, 'messages')}?limit=${RECENT_PER_ROOM}`).then((page) => page.messages, () => [])));
  const recent = pages.flat().sort((a, b) => compareIds(a.id, b.id)).slice(-FEED_LIMIT);
  const firstLive = feed.firstElementChild;
  for (const message of recent) addMessage(message, { recent: true, before: firstLive });
  scroller.scrollTop = scroller.scrollHeight;
}

function note(text) {
  append(renderNotice('notice-template', text));
}

feed.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const item = button.closest('[data-testid=message]');
  const { room, id, sender } = item.dataset;
  button.disabled = true;
  if (button.dataset.action === 'delete') {
    const done = await act(`delete ${sender}’s message in #${room}`,
      () => api('DELETE', roomPath(room, 'messages', id)));
    if (done) removeMessage(room, id);
  } else if (button.dataset.action === 'mute') {
    await act(`mute ${sender} in #${room} for 10 minutes`,
      () => api('POST', roomPath(room, 'mutes'), { body: { username: sender, minutes: 10 } }));
  } else if (button.dataset.action === 'ban') {
    await act(`ban ${sender}`, () => api('POST', '/api/bans', { body: { username: sender } }));
  }
  if (button.isConnected) button.disabled = false;
});

function removeMessage(room, id) {
  const key = feedKey(room, id);
  feedItems.get(key)?.remove();
  feedItems.delete(key);
}

// The live connection

const connection = new Connection({
  streamUrl: '/api/moderation/events',
  pollUrl: '/api/moderation/poll',
  pollPresence: false,
  onReset: async () => {
    note('The feed was too far behind and restarted from now.');
    return null; // the tail
  },
  onSessionEnded: (reason) => say(reason === 'banned' ? 'This account is banned.' : 'You have been signed out.'),
});
connection.onStatus((status) => renderStatus(statusElement, status));

connection.on('message', (message) => addMessage(message));
connection.on('message_deleted', (data) => {
  const item = feedItems.get(feedKey(data.room, data.id));
  const whose = item ? `${item.dataset.sender}’s message` : 'A message';
  removeMessage(data.room, data.id);
  note(`${whose} in #${data.room} was deleted by ${data.deleted_by}.`);
});
connection.on('user_muted', (data) => {
  note(`${data.username} was muted in #${data.room} by ${data.by}${data.until ? ` until ${localTime(data.until)}` : ''}.`);
});
connection.on('user_unmuted', (data) => note(`${data.username} was unmuted in #${data.room} by ${data.by}.`));
connection.on('room_updated', (data) => {
  note(`#${data.room.slug} was ${data.room.locked ? 'locked' : 'unlocked'}.`);
});
for (const name of ['user_muted', 'user_unmuted', 'room_updated', 'message_deleted']) connection.on(name, () => refreshLog());

// Controls

function submitterOf(event) {
  return event.submitter?.value;
}

document.querySelector('[data-role=mute-form]').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const room = form.elements.room.value;
  const username = form.elements.target.value.trim();
  const minutes = Number(form.elements.minutes.value);
  if (!room || !username) return say('Pick a room and enter a username.');
  if (submitterOf(event) === 'unmute') {
    act(`unmute ${username} in #${room}`, () => api('DELETE', roomPath(room, 'mutes', username)));
  } else {
    act(`mute ${username} in #${room} for ${minutes} minutes`,
      () => api('POST', roomPath(room, 'mutes'), { body: { username, minutes } }));
  }
});

document.querySelector('[data-role=ban-form]').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const username = form.elements.target.value.trim();
  const reason = form.elements.reason.value.trim() || null;
  if (!username) return say('Enter a username.');
  if (submitterOf(event) === 'unban') {
    act(`unban ${username}`, () => api('DELETE', `/api/bans/${encodeURIComponent(username)}`));
  } else {
    act(`ban ${username}`, () => api('POST', '/api/bans', { body: { username, reason } }));
  }
});

document.querySelector('[data-role=lock-form]').addEventListener('submit', (event) => {
  event.preventDefault();
  const room = event.currentTarget.elements.room.value;
  if (!room) return say('Pick a room.');
  const verb = submitterOf(event) === 'unlock' ? 'unlock' : 'lock';
  act(`${verb} #${room}`, () => api('POST', roomPath(room, verb)));
});

async function loadRooms() {
  const { rooms } = await api('GET', '/api/rooms');
  loadRecent(rooms).catch(() => say('Could not load recent messages.'));
  for (const select of document.querySelectorAll('[data-role=room-select]')) {
    select.replaceChildren(...rooms.map((room) => {
      const option = document.createElement('option');
      option.value = room.slug;
      option.textContent = room.locked ? `${room.name} (locked)` : room.name;
      return option;
    }));
  }
}

async function refreshLog() {
  try {
    const { actions } = await api('GET', '/api/moderation/actions?limit=20');
    const log = document.querySelector('[data-role=action-log]');
    log.replaceChildren(...actions.map((entry) => {
      const item = document.createElement('li');
      const when = document.createElement('time');
      setTime(when, entry.created_at);
      const what = document.createElement('span');
      const where = entry.room ? ` in #${entry.room}` : '';
      what.textContent = `${entry.moderator}: ${entry.action.replace('_', ' ')} ${entry.target ?? ''}${where}`;
      item.append(when, ' ', what);
      return item;
    }));
    if (!actions.length) log.replaceChildren(Object.assign(document.createElement('li'), { textContent: 'Nothing yet.' }));
  } catch { /* the log is a convenience; the feed matters */ }
}

async function start() {
  try {
    await loadSession();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) location.assign('/?next=/moderate');
    else say('Could not load your session. Reload the page.');
    return;
  }
  connection.start();
  loadRooms().catch(() => say('Could not load the rooms list.'));
  refreshLog();
}

start();
