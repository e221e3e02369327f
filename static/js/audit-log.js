/**
 * The audit log: what moderators did (GET /api/moderation/actions, the newest 200), filtered here by
 * moderator, room and action over what is loaded (the API takes no filters). refresh() coalesces calls that
 * come together (a purge's hundred deletions read the log once) and tells `onNew` of entries not seen before.
 */
import { api } from './api.js';
import { setTime } from './render.js';

const LOADED = 200;
const COALESCE_MS = 400;
const ACTIONS = ['delete_message', 'mute', 'unmute', 'ban', 'unban', 'lock', 'unlock', 'slow_mode', 'purge',
  'resolve_report'];

function words(action) {
  return action.replaceAll('_', ' ');
}

function span(className, text, testid = null) {
  const element = document.createElement('span');
  element.className = className;
  element.textContent = text;
  if (testid) element.dataset.testid = testid;
  return element;
}

export class AuditLog {
  /** list: the `<ol>`; selects: {moderator, room, action}; count: where "N of M" goes; onNew(entries). */
  constructor({ list, selects, count, onNew = () => {} }) {
    Object.assign(this, { list, selects, count, onNew });
    this.entries = [];
    this.newestId = null;
    this.timer = null;
    this.reading = null;
    for (const select of Object.values(selects)) select.addEventListener('change', () => this.render());
    this.fillOptions();
  }

  /** Read the log again soon (calls within COALESCE_MS share one read). */
  refresh() {
    if (this.timer === null) this.timer = setTimeout(() => { this.timer = null; this.read(); }, COALESCE_MS);
  }

  async read() {
    if (this.reading) {
      this.refresh(); // one read at a time: ask again after this one
      return;
    }
    this.reading = api('GET', `/api/moderation/actions?limit=${LOADED}`);
    try {
      const { actions } = await this.reading;
      const fresh = this.newestId === null ? [] : actions.filter((entry) => entry.id > this.newestId);
      this.entries = actions;
      this.newestId = actions.length ? Math.max(...actions.map((entry) => entry.id)) : (this.newestId ?? 0);
      this.fillOptions();
      this.render();
      if (fresh.length) this.onNew(fresh);
    } catch { /* the log is a convenience; the next refresh tries again */ } finally {
      this.reading = null;
    }
  }

  // Internals

  fillOptions() {
    const seen = (field) => [...new Set(this.entries.map((entry) => entry[field]).filter(Boolean))]
      .sort((a, b) => a.localeCompare(b, undefined, { sensitivity: 'base' }));
    const actions = [...new Set([...ACTIONS, ...seen('action')])];
    setOptions(this.selects.moderator, seen('moderator'), (name) => name);
    setOptions(this.selects.room, seen('room'), (slug) => `#${slug}`);
    setOptions(this.selects.action, actions, words);
  }

  render() {
    const { moderator, room, action } = Object.fromEntries(Object.entries(this.selects).map(([k, s]) => [k, s.value]));
    const shown = this.entries.filter((entry) => (!moderator || entry.moderator === moderator)
      && (!room || entry.room === room) && (!action || entry.action === action));
    this.list.replaceChildren(...shown.map((entry) => this.item(entry)));
    if (!shown.length) {
      const none = span('muted', this.entries.length ? 'Nothing matches these filters.' : 'Nothing yet.');
      const item = document.createElement('li');
      item.append(none);
      this.list.append(item);
    }
    this.count.textContent = shown.length === this.entries.length ? `${this.entries.length} loaded`
      : `${shown.length} of ${this.entries.length} loaded`;
  }

  item(entry) {
    const item = document.createElement('li');
    item.dataset.testid = 'audit-entry';
    item.dataset.action = entry.action;
    item.dataset.moderator = entry.moderator ?? '';
    if (entry.room) item.dataset.room = entry.room;
    const when = document.createElement('time');
    setTime(when, entry.created_at);
    // A lock's or slow mode's target is its room, named already; a deletion's is a message id.
    const target = entry.target === entry.room ? ''
      : entry.action === 'delete_message' && entry.target ? `message ${entry.target}` : (entry.target ?? '');
    item.append(when, ' ', span('audit-moderator', entry.moderator ?? 'the system', 'audit-moderator'), ' ',
      span('audit-action', words(entry.action), 'audit-action'), target ? ' ' : '', span('audit-target', target),
      entry.room ? ` in #${entry.room}` : '');
    if (entry.reason) item.append(span('audit-reason', `“${entry.reason}”`, 'audit-reason'));
    return item;
  }
}

/** Options for `values` after the first ("any"), keeping what is selected even if it is no longer loaded. */
function setOptions(select, values, label) {
  const chosen = select.value;
  const any = select.options[0];
  const list = chosen && !values.includes(chosen) ? [chosen, ...values] : values;
  const current = [...select.options].slice(1).map((option) => option.value);
  if (current.length === list.length && current.every((value, index) => value === list[index])) return; // an open list stays open
  select.replaceChildren(any, ...list.map((value) => {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = label(value);
    return option;
  }));
  select.value = chosen;
}
