/**
 * The chat's message list: one element per message, in event-id order, each once; pending messages of this
 * page trail the list until confirmed. It owns scrolling: a reader looking at older messages is never moved;
 * arrivals below show a "new messages" divider and a jump-to-latest button with a count.
 */
import { compareIds, fillMessage, renderMessage, renderNotice } from './render.js';
import { addReportControl } from './report.js';

const NEAR_BOTTOM_PX = 64;

export class Timeline {
  constructor({ scroller, list, jumpButton, jumpCount, me, canDelete, onDelete, onRetry }) {
    this.scroller = scroller;
    this.list = list;
    this.jumpButton = jumpButton;
    this.jumpCount = jumpCount;
    this.me = me;
    this.canDelete = canDelete;
    this.onDelete = onDelete;
    this.onRetry = onRetry;
    this.byId = new Map();
    this.byClientId = new Map(); // this page's outgoing messages not yet confirmed
    this.unseen = 0;
    this.divider = null;
    this.stuck = true; // following the latest messages; a resize (phone keyboard, window) keeps it so
    scroller.addEventListener('scroll', () => {
      this.stuck = this.atBottom();
      if (this.stuck) this.markSeen();
    }, { passive: true });
    new ResizeObserver(() => {
      if (this.stuck) this.scroller.scrollTop = this.scroller.scrollHeight;
    }).observe(scroller);
    jumpButton.addEventListener('click', () => {
      this.scrollToBottom();
      document.querySelector('textarea[name=body]')?.focus();
    });
  }

  atBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.scroller;
    return scrollHeight - scrollTop - clientHeight <= NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.markSeen();
  }

  markSeen() {
    this.unseen = 0;
    this.jumpButton.hidden = true;
  }

  oldestId() {
    for (const item of this.list.children) if (item.dataset.id) return item.dataset.id;
    return null;
  }

  /** Replace everything confirmed with a fresh history page (first load, or after a `reset`). */
  replaceAll(messages) {
    for (const [id, item] of this.byId) {
      item.remove();
      this.byId.delete(id);
    }
    for (const notice of this.list.querySelectorAll('.notice')) notice.remove();
    this.divider?.remove();
    this.divider = null;
    const items = messages.filter((message) => !message.deleted).map((message) => this.build(message));
    this.list.prepend(...items);
    this.scrollToBottom();
  }

  /** Older messages at the top, keeping what the reader looks at where it is. */
  prependOlder(messages) {
    const before = this.scroller.scrollHeight;
    const items = messages.filter((message) => !message.deleted && !this.byId.has(message.id))
      .map((message) => this.build(message));
    this.list.prepend(...items);
    this.scroller.scrollTop += this.scroller.scrollHeight - before;
    return items.length;
  }

  /**
   * A message from the live feed. Returns 'new', 'confirmed' (this page's own pending message, matched by
   * client_id) or 'duplicate'.
   */
  receive(message) {
    if (message.deleted) {
      this.remove(message.id);
      return 'duplicate';
    }
    if (this.byId.has(message.id)) return 'duplicate';
    if (message.client_id && message.sender?.id === this.me.id && this.byClientId.has(message.client_id)) {
      this.confirm(message);
      return 'confirmed';
    }
    const stayAtBottom = this.atBottom();
    const item = this.build(message);
    this.insertInOrder(item);
    if (stayAtBottom) {
      this.scrollToBottom();
    } else {
      this.unseen += 1;
      if (this.unseen === 1) this.placeDivider(item);
      this.jumpCount.textContent = String(this.unseen);
      this.jumpButton.setAttribute('aria-label', `Jump to latest: ${this.unseen} new message${this.unseen === 1 ? '' : 's'}`);
      this.jumpButton.hidden = false;
    }
    return 'new';
  }

  /** The newest confirmed message's id, or null. */
  latestId() {
    for (let item = this.list.lastElementChild; item; item = item.previousElementSibling) {
      if (item.dataset.id && this.byId.get(item.dataset.id) === item) return item.dataset.id;
    }
    return null;
  }

  /**
   * A durable notice (a mute, a lock): at its place by `id` when it is a room event id, else (a feed's events
   * name no room event id for these) after everything shown so far, which is the order the room's events came in.
   */
  notice(id, text) {
    const stayAtBottom = this.atBottom();
    const item = renderNotice('notice-template', text);
    if (id) {
      item.dataset.order = id;
      this.insertInOrder(item);
    } else {
      const lastPlaced = [...this.list.children].reverse().find((other) => other.dataset.order || other.classList.contains('notice'));
      if (lastPlaced) lastPlaced.after(item);
      else this.list.prepend(item);
    }
    if (stayAtBottom) this.scrollToBottom();
  }

  remove(id) {
    const item = this.byId.get(id);
    if (!item) return false;
    this.byId.delete(id);
    item.remove();
    if (this.divider && !this.divider.nextElementSibling) {
      this.divider.remove();
      this.divider = null;
    }
    return true;
  }

  // This page's outgoing messages

  addPending(body, clientId) {
    const message = { body, client_id: clientId, sender: { id: this.me.id, username: this.me.username },
      created_at: new Date().toISOString() };
    const item = this.build(message);
    this.setState(item, 'pending');
    this.byClientId.set(clientId, item);
    this.list.append(item); // after everything confirmed
    this.scrollToBottom();
    return item;
  }

  /** The server has it (by the POST's answer or by its own event, whichever came first; the second is a no-op). */
  confirm(message) {
    const item = this.byClientId.get(message.client_id);
    if (!item || this.byId.has(message.id)) {
      if (item && this.byId.get(message.id) !== item) item.remove(); // confirmed already as another element
      this.byClientId.delete(message.client_id);
      return false;
    }
    this.byClientId.delete(message.client_id);
    fillMessage(item, message, this.me.username);
    item.dataset.order = message.id;
    this.byId.set(message.id, item);
    this.setState(item, 'sent');
    this.addDeleteButton(item, message);
    const stayAtBottom = this.atBottom();
    item.remove();
    this.insertInOrder(item);
    if (stayAtBottom) this.scrollToBottom();
    return true;
  }

  fail(clientId, reason) {
    const item = this.byClientId.get(clientId);
    if (!item) return;
    this.setState(item, 'failed', reason);
    if (!item.querySelector('[data-testid=retry]')) {
      const retry = document.createElement('button');
      retry.type = 'button';
      retry.className = 'button-small retry';
      retry.dataset.testid = 'retry';
      retry.textContent = 'Retry';
      retry.setAttribute('aria-label', 'Retry sending this message');
      retry.addEventListener('click', () => this.onRetry(clientId));
      item.append(retry);
    }
  }

  /** Sending (again) now. */
  retrying(clientId) {
    const item = this.byClientId.get(clientId);
    if (!item) return;
    item.querySelector('[data-testid=retry]')?.remove();
    this.setState(item, 'pending');
  }

  /** Still pending, but held until the connection is back. */
  waiting(clientId) {
    const item = this.byClientId.get(clientId);
    if (item) this.setState(item, 'pending', 'Waiting for the connection…');
  }

  // Internals

  build(message) {
    const item = renderMessage('message-template', message, this.me.username);
    if (message.id) {
      item.dataset.order = message.id;
      this.byId.set(message.id, item);
    }
    if (message.sender?.id === this.me.id) {
      item.classList.add('mine');
      if (message.id) this.setState(item, 'sent');
    }
    this.addDeleteButton(item, message);
    addReportControl(item, message, this.me); // someone else's message: report it to the moderators
    return item;
  }

  addDeleteButton(item, message) {
    if (!message.id || !this.canDelete(message) || item.querySelector('[data-action=delete]')) return;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'button-small button-quiet delete';
    button.dataset.action = 'delete';
    button.textContent = 'Delete';
    button.setAttribute('aria-label', `Delete message from ${message.sender?.username ?? 'unknown'}`);
    button.addEventListener('click', () => this.onDelete(item.dataset.id, button));
    item.querySelector('.message-meta').append(button);
  }

  setState(item, state, reason = '') {
    item.dataset.state = state;
    const label = { pending: reason || 'Sending…', sent: '', failed: reason ? `Not sent: ${reason}` : 'Not sent' }[state];
    item.querySelector('.message-state').textContent = label;
    item.setAttribute('aria-busy', state === 'pending' ? 'true' : 'false');
  }

  /** After the last element whose id is smaller; pending elements (no id) stay at the end. */
  insertInOrder(item) {
    const id = item.dataset.order;
    for (let other = this.list.lastElementChild; other; other = other.previousElementSibling) {
      if ((other.dataset.order && compareIds(other.dataset.order, id) < 0) || (!other.dataset.order && other.classList.contains('notice'))) {
        other.after(item);
        return;
      }
    }
    this.list.prepend(item);
  }

  placeDivider(firstUnseen) {
    if (!this.divider) {
      this.divider = document.createElement('li');
      this.divider.className = 'divider';
      this.divider.dataset.testid = 'new-messages-divider';
      this.divider.setAttribute('role', 'separator');
      this.divider.textContent = 'New messages';
    }
    firstUnseen.before(this.divider);
  }
}
