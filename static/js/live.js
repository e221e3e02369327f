/**
 * A page's live events: one connection shared by every tab of this browser (shared-feed.js) where the browser
 * has Web Locks and BroadcastChannel; else this tab's own stream of the room it shows, as before.
 */
import { roomPath } from './api.js';
import { Connection } from './connection.js';
import { sharingSupported } from './leader.js';
import { FeedBase } from './room-gate.js';
import { SharedFeed } from './shared-feed.js';

/** Without the APIs to share: history first, then the room's own stream resumes exactly from its cursor. */
class TabFeed extends FeedBase {
  constructor() {
    super();
    this.shown = null;
    this.connection = null;
  }

  start({ shown }) {
    this.shown = shown[0] ?? null;
    document.documentElement.dataset.live = 'tab';
  }

  want() { /* only the room shown is live; the sidebar's counts come from history */ }

  async follow(slug, readHistory) {
    const gate = this.room(slug);
    gate.readHistory = readHistory;
    const cursor = await gate.reload();
    if (slug === this.shown && !this.connection) {
      this.connection = new Connection({
        streamUrl: roomPath(slug, 'events'),
        pollUrl: roomPath(slug, 'poll'),
        cursor,
        onReset: () => gate.reload(),
        onSessionEnded: (reason) => this.sessionEnded(reason),
      });
      this.connection.on('*', (data, { name, id }) => this.route(name, data, { id }, slug));
      this.connection.onStatus((status) => this.setStatus(status));
      this.connection.start();
    }
    return cursor;
  }

  stop(reason) {
    this.connection?.stop(reason);
  }
}

/**
 * Open this page's live events. `interest`: {shown: [the room this tab shows], rooms: [the sidebar's rooms]}.
 * The page registers handlers on `feed.room(slug)`, then calls `feed.follow(slug, readHistory)` for each room.
 */
export function openLive(user, interest) {
  const feed = sharingSupported() ? new SharedFeed(user) : new TabFeed();
  feed.shared = feed instanceof SharedFeed;
  feed.start(interest);
  return feed;
}
