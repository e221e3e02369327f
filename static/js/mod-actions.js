/**
 * The moderation calls the dashboard makes, each with its optional reason, and the one feedback line that says
 * how each went. After a call succeeds, onDone(kind) lets the page re-read what it changed (the log).
 *
 * Reasons: every action keeps its reason in the log: mutes, bans, slow mode and purges as API.md has it, a
 * deletion, a lock and an unlock as this implementation adds (`{reason}` in their optional body).
 */
import { api, ApiError, roomPath } from './api.js';

const LAST_HOUR_MINUTES = 60;

function problem(error) {
  if (error instanceof ApiError) {
    const fields = Object.entries(error.fields ?? {}).map(([field, why]) => `${field} ${[].concat(why).join(', ')}`);
    return fields.length ? `${error.message}: ${fields.join('; ')}` : error.message;
  }
  return 'no connection to the server';
}

function withReason(reason, fields = {}) {
  return reason ? { ...fields, reason } : fields;
}

export class ModActions {
  /** feedback: the `role=alert` line; onDone(kind, detail) after each call that succeeded. */
  constructor({ feedback, onDone = () => {} }) {
    this.feedback = feedback;
    this.onDone = onDone;
  }

  say(text, kind = 'error') {
    this.feedback.textContent = text;
    this.feedback.dataset.kind = kind;
  }

  /** Run one call, report it; true when it succeeded. */
  async run(kind, description, call, { detail = {}, note = '' } = {}) {
    this.say(`${description}…`, 'info');
    try {
      await call();
      this.say(`Done: ${description}.${note}`, 'info');
      try { this.onDone(kind, detail); } catch (error) { console.error('onDone failed', error); }
      return true;
    } catch (error) {
      this.say(`Could not ${description}: ${problem(error)}.`);
      return false;
    }
  }

  deleteMessage(room, id, sender, reason) {
    const body = reason ? { reason } : undefined;
    return this.run('delete_message', `delete ${sender}’s message in #${room}`,
      () => api('DELETE', roomPath(room, 'messages', id), { body }));
  }

  mute(room, username, minutes, reason) {
    return this.run('mute', `mute ${username} in #${room} for ${minutes} minutes`,
      () => api('POST', roomPath(room, 'mutes'), { body: withReason(reason, { username, minutes }) }),
      { detail: { room, username } });
  }

  unmute(room, username) {
    return this.run('unmute', `unmute ${username} in #${room}`, () => api('DELETE', roomPath(room, 'mutes', username)),
      { detail: { room, username } });
  }

  /** Ban; with `purgeLastHour`, then delete their messages of the last hour in every room. */
  async ban(username, reason, { purgeLastHour = false } = {}) {
    const banned = await this.run('ban', `ban ${username}`,
      () => api('POST', '/api/bans', { body: withReason(reason, { username }) }), { detail: { username } });
    if (!banned || !purgeLastHour) return banned;
    return this.purge(username, LAST_HOUR_MINUTES, null, reason,
      `delete ${username}’s messages of the last hour in every room (${username} is banned)`);
  }

  unban(username) {
    return this.run('unban', `unban ${username}`, () => api('DELETE', `/api/bans/${encodeURIComponent(username)}`),
      { detail: { username } });
  }

  setLocked(room, locked, reason) {
    const verb = locked ? 'lock' : 'unlock';
    const body = reason ? { reason } : undefined;
    return this.run(verb, `${verb} #${room}`, () => api('POST', roomPath(room, verb), { body }));
  }

  slowMode(room, seconds, reason) {
    const description = seconds ? `set slow mode in #${room} to ${seconds} s` : `turn slow mode off in #${room}`;
    return this.run('slow_mode', description,
      () => api('POST', roomPath(room, 'slow_mode'), { body: withReason(reason, { seconds }) }));
  }

  /** Delete `username`'s messages of the last `minutes`, in `room` or (null) every room. */
  purge(username, minutes, room, reason, description = null) {
    const where = room ? `in #${room}` : 'in every room';
    let deleted = 0;
    return this.run('purge', description ?? `delete ${username}’s messages of the last ${minutes} minutes ${where}`,
      async () => {
        const answer = await api('POST', '/api/moderation/purge',
          { body: withReason(reason, { username, minutes, ...(room ? { room } : {}) }) });
        deleted = answer.deleted.length;
      }, { detail: { username } }).then((done) => {
      if (done) this.say(`${this.feedback.textContent.replace(/\.$/, '')}: ${deleted} deleted.`, 'info');
      return done;
    });
  }
}
