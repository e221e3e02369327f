/**
 * The moderators' dashboard, for people who keep it open all day: one live feed of every room
 * (/api/moderation/events, same Connection as the chat) with room and text filters, per-room activity,
 * the open reports, the bans and mutes in force, the audit log, and the controls. This module wires the parts
 * together: mod-feed.js (the feed), room-stats.js, reports-queue.js, sanctions.js (bans and mutes), audit-log.js,
 * mod-actions.js (the calls) and mod-controls.js (the forms).
 */
import { api, ApiError, loadSession, roomPath } from './api.js';
import { AuditLog } from './audit-log.js';
import './auth.js'; // the logout button
import { Connection } from './connection.js';
import { ModActions } from './mod-actions.js';
import { fillRoomSelect, wireControls } from './mod-controls.js';
import { ModFeed } from './mod-feed.js';
import { Announcer, compareIds, localTime, renderStatus } from './render.js';
import { ReportsQueue } from './reports-queue.js';
import { RoomStats } from './room-stats.js';
import { Sanctions } from './sanctions.js';

const RECENT_ROOMS = 30; // on load, the feed starts with the latest messages of this many rooms
const RECENT_PER_ROOM = 20;
const ROOMS_EVERY_MS = 60 * 1000; // new rooms (nothing announces one); people online come live as `presence`
const LOG_EVERY_MS = 30 * 1000; // purges without deletions announce nothing, and ban events do not say who logged what
const FEED_MUTE_MINUTES = 10;

const byTestId = (id) => document.querySelector(`[data-testid=${id}]`);
const feedList = byTestId('mod-feed');
const feedFilters = { room: byTestId('feed-filter-room'), text: byTestId('feed-filter-text') };
const feedReason = byTestId('feed-reason');
const feedCount = byTestId('feed-count');
const announcer = new Announcer(document.querySelector('[data-role=announcer]'));

/** The most feed items kept: the page's default, or `?feed_cap=` (50–10000) on a slow machine or in a test. */
function feedCap() {
  const asked = Number(new URLSearchParams(location.search).get('feed_cap'));
  const cap = Number.isInteger(asked) && asked > 0 ? asked : Number(feedList.dataset.cap);
  return Math.min(10000, Math.max(50, cap || 2000));
}

const feed = new ModFeed({
  list: feedList,
  scroller: document.querySelector('[data-role=scroller]'),
  cap: feedCap(),
  onDrawn: () => {
    const { total, shown } = feed.counts();
    const kept = `the newest ${feed.cap.toLocaleString()} are kept`;
    feedCount.textContent = total === shown ? `${total.toLocaleString()} shown; ${kept}.`
      : `${shown.toLocaleString()} of ${total.toLocaleString()} match the filters; ${kept}.`;
  },
});
const stats = new RoomStats({
  body: document.querySelector('[data-role=room-stats]'),
  onPick: (slug) => {
    feedFilters.room.value = slug;
    feed.setFilter({ room: slug });
  },
});
const actions = new ModActions({
  feedback: byTestId('mod-feedback'),
  onDone: () => log.refresh(), // a ban or an unban reaches the bans list as an event, like anyone else's
});
const sanctions = new Sanctions({
  bansList: byTestId('bans-list'),
  mutesList: byTestId('mutes-list'),
  onLift: (kind, { room, username }) => (kind === 'unban' ? actions.unban(username) : actions.unmute(room, username)),
});
const reports = new ReportsQueue({
  list: byTestId('reports-queue'),
  count: byTestId('reports-count'),
  onResolve: async (report, action) => {
    try {
      const resolved = await api('POST', `/api/moderation/reports/${report.id}/resolve`, { body: { action } });
      actions.say(action === 'delete' ? `Deleted the message ${report.reporter} reported in #${report.room}.`
        : `Dismissed ${report.reporter}’s report in #${report.room}.`);
      log.refresh();
      return resolved;
    } catch (error) {
      actions.say(`Could not resolve the report: ${error.message}`);
      return null;
    }
  },
});
const log = new AuditLog({
  list: byTestId('audit-log'),
  count: byTestId('audit-count'),
  selects: { moderator: byTestId('audit-filter-moderator'), room: byTestId('audit-filter-room'),
    action: byTestId('audit-filter-action') },
});

function refreshBans() {
  sanctions.loadBans().catch(() => actions.say('Could not load the bans.'));
}

feedFilters.room.addEventListener('change', () => feed.setFilter({ room: feedFilters.room.value }));
let typing = null;
feedFilters.text.addEventListener('input', () => {
  clearTimeout(typing); // a filter over thousands of items runs once the typing pauses
  typing = setTimeout(() => feed.setFilter({ text: feedFilters.text.value }), 120);
});

// The feed's buttons: one click for a deletion or a 10-minute mute (with the feed's reason); a ban asks first.

const banDialog = byTestId('ban-dialog');
let banTarget = null;

function askToBan(username) {
  banTarget = username;
  banDialog.querySelector('[data-role=ban-dialog-user]').textContent = username;
  banDialog.querySelector('[name=reason]').value = feedReason.value.trim();
  banDialog.returnValue = 'cancel';
  banDialog.showModal();
}

banDialog.addEventListener('close', () => {
  const choice = banDialog.returnValue;
  if (!banTarget || (choice !== 'ban' && choice !== 'ban-purge')) return;
  const reason = banDialog.querySelector('[name=reason]').value.trim() || null;
  actions.ban(banTarget, reason, { purgeLastHour: choice === 'ban-purge' });
  banTarget = null;
});

feedList.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const { room, id, sender } = button.closest('[data-testid=message]').dataset;
  const reason = feedReason.value.trim() || null;
  if (button.dataset.action === 'ban') {
    askToBan(sender);
    return;
  }
  button.disabled = true;
  if (button.dataset.action === 'delete') {
    if (await actions.deleteMessage(room, id, sender, reason)) feed.remove(room, id);
  } else if (button.dataset.action === 'mute') {
    await actions.mute(room, sender, FEED_MUTE_MINUTES, reason);
  }
  if (button.isConnected) button.disabled = false;
});

// The live connection

const connection = new Connection({
  streamUrl: '/api/moderation/events',
  pollUrl: '/api/moderation/poll',
  pollPresence: true, // long-polled, the feed's `online` (by room) stands for its presence events
  onReset: async () => {
    feed.note('The feed was too far behind and restarted from now.');
    reloadLists();
    loadReports();
    return null; // the tail
  },
  onSessionEnded: (reason) => actions.say(reason === 'banned' ? 'This account is banned.' : 'You have been signed out.'),
});
connection.onStatus((status) => renderStatus(byTestId('connection-status'), status));

connection.on('message', (message) => {
  if (!feed.add(message)) return;
  stats.noteMessage(message.room);
  announcer.say(`${message.sender.username} in ${message.room}: ${message.body.slice(0, 120)}`);
});
connection.on('message_deleted', (data) => {
  reports.messageDeleted(data.room, data.id);
  const sender = feed.remove(data.room, data.id);
  feed.note(`${sender ? `${sender}’s message` : 'A message'} in #${data.room} was deleted by ${data.deleted_by}.`,
    data.room);
});
connection.on('user_muted', (data) => {
  sanctions.muted(data);
  feed.note(`${data.username} was muted in #${data.room} by ${data.by}${data.until ? ` until ${localTime(data.until)}` : ''}.`,
    data.room);
});
connection.on('user_unmuted', (data) => {
  sanctions.unmuted(data);
  feed.note(data.by ? `${data.username} was unmuted in #${data.room} by ${data.by}.`
    : `${data.username}’s mute in #${data.room} ran out.`, data.room);
});
connection.on('room_updated', ({ room }) => {
  const before = stats.rooms.get(room.slug);
  let what = 'was updated';
  if (before && before.locked !== room.locked) what = room.locked ? 'was locked' : 'was unlocked';
  else if (before && before.slowMode !== room.slow_mode_seconds) {
    what = room.slow_mode_seconds ? `is in slow mode: ${room.slow_mode_seconds} s between posts` : 'left slow mode';
  } else if (!before) what = room.locked ? 'was locked' : 'was unlocked';
  stats.roomUpdated(room);
  feed.note(`#${room.slug} ${what}.`, room.slug);
});
// Who is online, per room, live: the feed's `presence` for every room where anyone is (the project's addition).
connection.on('presence', (data) => { if (data?.room) stats.setOnline(data.room, data.online?.length ?? 0); });
// Bans: `user_banned` / `user_unbanned` come on this feed only (the project's addition, docs/API.md).
connection.on('user_banned', (ban) => {
  sanctions.banned(ban);
  feed.note(`${ban.username} was banned by ${ban.by}${ban.reason ? `: ${ban.reason}` : ''}.`);
});
connection.on('user_unbanned', (data) => {
  sanctions.unbanned(data);
  feed.note(data.by ? `${data.username} was unbanned by ${data.by}.` : `${data.username} was unbanned.`);
});
for (const name of ['user_muted', 'user_unmuted', 'room_updated', 'message_deleted', 'user_banned', 'user_unbanned']) {
  connection.on(name, () => log.refresh());
}

// The reports queue: `report_created` / `report_resolved` come on this same feed, and on no other (API.md).
connection.on('report_created', ({ report }) => {
  reports.created(report);
  announcer.say(`${report.reporter} reported a message in ${report.room}: ${report.reason.slice(0, 120)}`);
});
connection.on('report_resolved', ({ report }) => {
  reports.resolvedReport(report);
  log.refresh();
});

function loadReports() {
  reports.load().catch(() => actions.say('Could not load the reports.'));
}

wireControls(actions);

// Rooms, and what is loaded once then kept fresh

let roomsLoaded = false;

async function loadRooms() {
  const { rooms } = await api('GET', '/api/rooms');
  for (const select of [...document.querySelectorAll('[data-role=room-select]'), feedFilters.room]) {
    fillRoomSelect(select, rooms);
  }
  stats.setRooms(rooms);
  if (roomsLoaded) return;
  roomsLoaded = true;
  loadRecent(rooms).catch(() => actions.say('Could not load recent messages.'));
  sanctions.loadMutes(rooms.map((room) => room.slug));
}

/** Start the feed with recent messages, older than anything the live feed has shown since. */
async function loadRecent(rooms) {
  const pages = await Promise.all(rooms.slice(0, RECENT_ROOMS).map((room) =>
    api('GET', `${roomPath(room.slug, 'messages')}?limit=${RECENT_PER_ROOM}`).then((page) => page.messages, () => [])));
  feed.addRecent(pages.flat().sort((a, b) => compareIds(a.id, b.id)));
}

function reloadLists() {
  refreshBans();
  log.refresh();
  api('GET', '/api/rooms').then(({ rooms }) => sanctions.loadMutes(rooms.map((room) => room.slug)), () => null);
}

function every(ms, task) {
  setInterval(() => { if (document.visibilityState === 'visible') task(); }, ms);
}

async function start() {
  try {
    await loadSession();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) location.assign('/?next=/moderate');
    else actions.say('Could not load your session. Reload the page.');
    return;
  }
  connection.start();
  loadReports();
  loadRooms().catch(() => actions.say('Could not load the rooms list.'));
  refreshBans();
  log.read();
  stats.start();
  every(ROOMS_EVERY_MS, () => loadRooms().catch(() => null));
  every(LOG_EVERY_MS, () => log.refresh());
  // Back from a hidden stretch: read what the timers skipped.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    loadRooms().catch(() => null);
    log.refresh();
    loadReports();
  });
}

start();
