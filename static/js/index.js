/** The front page: sign in or register; once signed in, the rooms list, this browser's rooms with unread counts, and creating a room. */
import { api, ApiError, loadSession } from './api.js';
import { initAuthForm, initPasswordForm, pageUser } from './auth.js';
import { openLive } from './live.js';
import { cloneTemplate } from './render.js';
import { RoomsMemory } from './rooms-memory.js';
import { Sidebar } from './sidebar.js';

function roomHref(slug) {
  return `/rooms/${encodeURIComponent(slug)}`;
}

async function showRooms() {
  const list = document.querySelector('[data-role=room-list]');
  const status = document.querySelector('[data-role=rooms-status]');
  try {
    const { rooms } = await api('GET', '/api/rooms');
    list.replaceChildren(...rooms.map((room) => {
      const item = cloneTemplate('room-item-template');
      item.dataset.slug = room.slug;
      item.querySelector('.room-link').href = roomHref(room.slug);
      item.querySelector('.room-name').textContent = room.name;
      item.querySelector('.room-locked').hidden = !room.locked;
      item.querySelector('.room-online').textContent = room.online_count ? `${room.online_count} online` : '';
      return item;
    }));
    status.textContent = rooms.length ? `${rooms.length} room${rooms.length === 1 ? '' : 's'}` : 'No rooms yet: create the first one below.';
  } catch (error) {
    if (error instanceof ApiError && error.code === 'banned') status.textContent = 'This account is banned.';
    else if (error instanceof ApiError && error.status === 401) status.textContent = 'You have been signed out. Reload to sign in.';
    else status.textContent = 'Could not load the rooms. Reload to try again.';
  }
}

function initCreateRoom(form) {
  const errorBox = form.querySelector('[data-role=create-room-error]');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    errorBox.textContent = '';
    if (!name) {
      errorBox.textContent = 'Give the room a name.';
      form.elements.name.focus();
      return;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await loadSession(); // the CSRF token
      const { room } = await api('POST', '/api/rooms', { body: { name } });
      location.assign(roomHref(room.slug));
    } catch (error) {
      if (error instanceof ApiError && error.code === 'room_exists') {
        errorBox.textContent = 'A room with that address exists already. ';
      } else if (error instanceof ApiError && error.code === 'validation_error') {
        errorBox.textContent = `That name does not work: ${[].concat(error.fields?.name ?? error.message).join(', ')}`;
      } else {
        errorBox.textContent = `Could not create the room: ${error.message}`;
      }
      form.elements.name.focus();
    } finally {
      button.disabled = false;
    }
  });
}

/** The sidebar's counts come live from the feed this browser's tabs share (this page shows no room itself). */
function showRecentRooms(me) {
  const memory = new RoomsMemory(me.id);
  const live = openLive(me, { shown: [], rooms: memory.recent() });
  new Sidebar({ list: document.querySelector('[data-testid=recent-rooms]'), live, memory, me }).start();
}

if (pageUser()) {
  loadSession().catch(() => null); // the CSRF token, and a first check of the session
  showRecentRooms(pageUser());
  showRooms();
  initCreateRoom(document.querySelector('[data-role=create-room]'));
  initPasswordForm(document.querySelector('[data-role=password-form]'));
} else {
  initAuthForm(document.querySelector('[data-role=auth-form]'));
}
