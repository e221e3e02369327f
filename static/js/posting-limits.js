/**
 * What stops this user posting in the room right now, shown in the composer with a live countdown: slow mode
 * (a wait after each accepted post, for everyone but moderators) and the user's own mute. Each refuses a send
 * locally with a text saying why and until when; the server still decides (a 429 slow_mode or 403 muted is
 * taken as news). A send refused here is not queued: the text stays in the composer, because a message
 * posted minutes after it was written, by itself, may no longer be what the person means to say.
 */
import { localTime } from './render.js';

const TICK_MS = 250; // the shown seconds change within a quarter of a second of the real ones

/** "45 s", "12 min", "2 h 5 min", "3 d 4 h": the time left, rounded up so it never says 0 while it holds. */
export function timeLeft(ms) {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/** "one message every 30 s", "one message every 2 min". */
function every(seconds) {
  if (seconds < 60 || seconds % 60) return `one message every ${seconds} s`;
  return `one message every ${seconds / 60} min`;
}

/** A local time, with the day when it is not today. */
function when(date) {
  const today = new Date().toDateString() === date.toDateString();
  return today ? localTime(date)
    : `${date.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })} ${localTime(date)}`;
}

export class PostingLimits {
  /**
   * `badge`: the room's slow-mode indicator; `countdown`: the composer's slow-mode line; `muteNotice`: the
   * composer's mute line; `exempt`: slow mode does not apply (a moderator); `onChange`: called when posting
   * becomes allowed or held (to announce it).
   */
  constructor({ badge, countdown, muteNotice, exempt = false, onChange = () => {} }) {
    this.badge = badge;
    this.countdown = countdown;
    this.muteNotice = muteNotice;
    this.exempt = exempt;
    this.onChange = onChange;
    this.slowModeSeconds = 0;
    this.lastAcceptedAt = null; // when (here) our last post was known accepted: slow mode counts from it
    this.slowUntil = 0; // ms since the epoch; 0 when not held
    this.mute = null; // { until: Date | null, by: string | null }
    this.timer = null;
    this.held = false;
  }

  // What the room and the server say

  /** The room's slow mode (0: off), from the page, GET /api/rooms/<slug> or a room_updated event. */
  setSlowMode(seconds) {
    this.slowModeSeconds = Math.max(0, Number(seconds) || 0);
    this.badge.hidden = this.slowModeSeconds === 0;
    this.badge.textContent = this.slowModeSeconds ? `Slow mode: ${every(this.slowModeSeconds)}` : '';
    this.badge.dataset.seconds = String(this.slowModeSeconds);
    // The server applies a changed setting to the last post already made (and none when it is off).
    if (this.slowModeSeconds === 0 || this.exempt) this.slowUntil = 0;
    else if (this.lastAcceptedAt !== null) this.slowUntil = this.lastAcceptedAt + this.slowModeSeconds * 1000;
    this.render();
  }

  /** One of our posts was accepted (its POST's answer or its own event, whichever came first). */
  accepted() {
    if (this.exempt) return;
    // Counted from when we heard (the later of the POST's answer and the event), which is after the
    // server's moment: the wait shown never ends before the server's.
    this.lastAcceptedAt = Date.now();
    if (this.slowModeSeconds) this.slowUntil = this.lastAcceptedAt + this.slowModeSeconds * 1000;
    this.render();
  }

  /** The server refused a post with 429 slow_mode: wait at least its Retry-After. */
  slowModeRefused(retryAfterSeconds) {
    const seconds = retryAfterSeconds ?? this.slowModeSeconds;
    if (!seconds) return;
    this.slowUntil = Math.max(this.slowUntil, Date.now() + seconds * 1000);
    this.render();
  }

  /** This user is muted (`until` an ISO time, or null for no end; `by` a username or null when unknown). */
  muted({ until = null, by = null } = {}) {
    const end = until ? new Date(until) : null;
    if (end && (Number.isNaN(end.getTime()) || end.getTime() <= Date.now())) {
      this.unmuted();
      return;
    }
    this.mute = { until: end, by };
    this.render();
  }

  unmuted() {
    this.mute = null;
    this.render();
  }

  // What the composer asks

  /** Why a send is held now (a text for the person), or null when it may go. */
  refusal() {
    this.expire();
    if (this.mute) return `${this.muteText()} Your message was not sent; it stays in the box.`;
    if (this.slowUntil) {
      return 'Slow mode: your message was not sent yet; it stays in the box until the countdown ends.';
    }
    return null;
  }

  get isMuted() {
    this.expire();
    return this.mute !== null;
  }

  // Showing it

  muteText() {
    const { until, by } = this.mute;
    const who = by ? ` by ${by}` : '';
    if (!until) return `You are muted${who} in this room until a moderator unmutes you.`;
    return `You are muted${who} until ${when(until)} (${timeLeft(until.getTime() - Date.now())}).`;
  }

  /** Drop what has run out: posting is allowed from a mute's `until` on, and when slow mode's wait ends. */
  expire() {
    const now = Date.now();
    let changed = false;
    if (this.mute?.until && this.mute.until.getTime() <= now) {
      this.mute = null;
      changed = true;
    }
    if (this.slowUntil && this.slowUntil <= now) {
      this.slowUntil = 0;
      changed = true;
    }
    return changed;
  }

  render() {
    this.expire();
    if (this.mute) {
      this.muteNotice.hidden = false;
      this.muteNotice.textContent = this.muteText();
      if (this.mute.until) this.muteNotice.dataset.until = this.mute.until.toISOString();
      else delete this.muteNotice.dataset.until;
    } else {
      this.muteNotice.hidden = true;
      this.muteNotice.textContent = '';
      delete this.muteNotice.dataset.until;
    }
    if (this.slowUntil) {
      this.countdown.hidden = false;
      this.countdown.textContent = `Slow mode: you can post again in ${timeLeft(this.slowUntil - Date.now())}`;
    } else {
      this.countdown.hidden = true;
      this.countdown.textContent = '';
    }
    const held = Boolean(this.mute || this.slowUntil);
    if (held !== this.held) {
      this.held = held;
      this.onChange(held);
    }
    // Tick only while something counts down.
    const ticking = this.slowUntil || this.mute?.until;
    if (ticking && this.timer === null) this.timer = setInterval(() => this.render(), TICK_MS);
    else if (!ticking && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}
