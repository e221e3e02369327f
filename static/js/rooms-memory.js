/** What this browser remembers per user in localStorage: the rooms it opened lately and the last message seen in each. */
import { compareIds } from './render.js';

export const MAX_RECENT_ROOMS = 50; // the several-rooms feed's limit (CHAT_MAX_ROOMS_PER_STREAM)

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

export class RoomsMemory {
  constructor(userId) {
    this.key = `chat.rooms.${userId}`;
  }

  read() {
    try {
      const value = JSON.parse(storage()?.getItem(this.key) ?? 'null');
      return { recent: Array.isArray(value?.recent) ? value.recent : [], seen: value?.seen ?? {} };
    } catch {
      return { recent: [], seen: {} };
    }
  }

  write(value) {
    try { storage()?.setItem(this.key, JSON.stringify(value)); } catch { /* full or denied */ }
  }

  recent() {
    return this.read().recent;
  }

  /** This browser opened `slug`: first among the recent rooms. */
  opened(slug) {
    const value = this.read();
    value.recent = [slug, ...value.recent.filter((other) => other !== slug)].slice(0, MAX_RECENT_ROOMS);
    this.write(value);
  }

  forget(slug) {
    const value = this.read();
    value.recent = value.recent.filter((other) => other !== slug);
    delete value.seen[slug];
    this.write(value);
  }

  lastSeen(slug) {
    return this.read().seen[slug] ?? null;
  }

  /** The user has looked at `slug` up to message `id` (never moves back). */
  saw(slug, id) {
    if (!id) return;
    const value = this.read();
    const before = value.seen[slug];
    if (before && compareIds(id, before) <= 0) return;
    value.seen[slug] = id;
    this.write(value);
  }

  /** Be told when another tab changes the memory. */
  onChange(listener) {
    window.addEventListener('storage', (event) => { if (event.key === this.key) listener(); });
  }
}
