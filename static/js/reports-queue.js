/**
 * The dashboard's reports queue: the open reports, newest first (GET /api/moderation/reports?status=open), kept
 * live by `report_created` and `report_resolved` on the moderators' feed. Each shows the reported message in
 * context (the few messages before and after it, read once from the room's history) with Dismiss and "Delete message"
 * (POST /api/moderation/reports/<id>/resolve). Built with DOM text nodes only.
 */
import { api, roomPath } from './api.js';
import { setTime } from './render.js';
import { element } from './dom.js';

const CONTEXT_BEFORE = 3; // messages shown before the reported one
const CONTEXT_AFTER = 3; // and after it: a reply often says more about a report than what came before

/** The id just after a message's (`ms-seq` -> `ms-(seq+1)`): `before` it, a history page ends with the message. */
function justAfter(id) {
  const [ms, seq] = String(id).split('-');
  return `${ms}-${(BigInt(seq) + 1n).toString()}`;
}

export class ReportsQueue {
  /** onResolve(report, action) resolves to the resolved report, or null when it failed (and said why). */
  constructor({ list, count, onResolve }) {
    Object.assign(this, { list, count, onResolve });
    this.open = new Map(); // report id -> report
    this.resolved = new Set(); // ids seen resolved: a list read that a `report_resolved` overtook cannot revive one
    this.items = new Map(); // report id -> <li>
    this.arrived = new Set(); // ids created live since the last list read began: a read that missed them keeps them
    this.render();
  }

  async load() {
    this.arrived.clear();
    const { reports } = await api('GET', '/api/moderation/reports?status=open');
    const listed = new Set(reports.map((report) => report.id));
    for (const id of [...this.open.keys()]) if (!listed.has(id) && !this.arrived.has(id)) this.drop(id);
    for (const report of reports) if (!this.resolved.has(report.id)) this.open.set(report.id, report);
    this.render();
  }

  /** `report_created` */
  created(report) {
    if (this.resolved.has(report.id) || this.open.has(report.id)) return;
    this.arrived.add(report.id);
    this.open.set(report.id, report);
    this.render();
  }

  /** `report_resolved` (or this page's own resolution) */
  resolvedReport(report) {
    this.resolved.add(report.id);
    if (this.open.has(report.id)) {
      this.drop(report.id);
      this.render();
    }
  }

  /** A `message_deleted`: the context of reports in that room shows it deleted. */
  messageDeleted(room, id) {
    for (const item of this.items.values()) {
      if (item.dataset.room !== room) continue;
      const line = item.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
      if (line) this.fillLine(line, { id, deleted: true, body: '', sender: { username: line.dataset.sender } });
    }
  }

  // Internals

  drop(id) {
    this.open.delete(id);
    this.items.get(id)?.remove();
    this.items.delete(id);
  }

  render() {
    const newestFirst = [...this.open.values()].sort((a, b) => b.id - a.id);
    let previous = null;
    for (const report of newestFirst) {
      let item = this.items.get(report.id);
      if (!item) {
        item = this.build(report);
        this.items.set(report.id, item);
      }
      if (previous) {
        if (previous.nextElementSibling !== item) previous.after(item);
      } else if (this.list.firstElementChild !== item) {
        this.list.prepend(item);
      }
      previous = item;
    }
    this.list.querySelector('.reports-empty')?.remove();
    if (!newestFirst.length) {
      this.list.append(element('li', { className: 'reports-empty', testid: 'reports-empty',
        text: 'No open reports.' }));
    }
    const open = newestFirst.length;
    this.count.textContent = open ? `${open} open` : '';
  }

  build(report) {
    const item = element('li', { className: 'report-item', testid: 'report-item' });
    item.dataset.reportId = String(report.id);
    item.dataset.room = report.room;
    item.dataset.messageId = report.message.id;
    const head = element('div', { className: 'report-head' });
    const room = element('a', { className: 'feed-room', testid: 'report-room', text: `#${report.room}` });
    room.href = `/rooms/${encodeURIComponent(report.room)}`;
    const by = element('span', { text: 'reported by ' });
    by.append(element('strong', { testid: 'report-reporter', text: report.reporter }));
    const when = element('time', { className: 'message-time' });
    setTime(when, report.created_at);
    head.append(room, by, when);
    const why = element('p', { className: 'report-why', testid: 'report-reason', text: report.reason });
    const context = element('ol', { className: 'report-context', testid: 'report-context' });
    context.setAttribute('aria-label', 'The reported message, with what came before and after it');
    context.append(this.line(report.message, true));
    this.loadContext(report, context);
    const buttons = element('div', { className: 'row' });
    const dismiss = element('button', { className: 'button-small button-secondary', testid: 'report-dismiss',
      text: 'Dismiss' });
    const remove = element('button', { className: 'button-small button-danger', testid: 'report-delete',
      text: 'Delete message' });
    for (const [button, action] of [[dismiss, 'dismiss'], [remove, 'delete']]) {
      button.type = 'button';
      button.addEventListener('click', async () => {
        dismiss.disabled = remove.disabled = true;
        const done = await this.onResolve(report, action);
        if (done) this.resolvedReport(done);
        else if (item.isConnected) dismiss.disabled = remove.disabled = false;
      });
    }
    buttons.append(dismiss, remove);
    item.append(head, why, context, buttons);
    return item;
  }

  line(message, reported = false) {
    const line = element('li', { testid: 'report-context-message' });
    line.dataset.messageId = message.id;
    line.dataset.sender = message.sender?.username ?? '';
    if (reported) line.dataset.reported = 'true';
    this.fillLine(line, message);
    return line;
  }

  fillLine(line, message) {
    line.replaceChildren(element('span', { className: 'context-sender', text: message.sender?.username ?? '?' }));
    if (message.deleted) line.append(element('span', { className: 'context-deleted', text: '(deleted)' }));
    else line.append(document.createTextNode(message.body));
  }

  /** The messages around the reported one, read once from its room's history: up to CONTEXT_BEFORE before it
   * (the page ending with it, which also says whether it was deleted since) and CONTEXT_AFTER after it
   * (`after=`, the project's addition to the history). What a failure leaves: the message alone. */
  async loadContext(report, context) {
    const path = roomPath(report.room, 'messages');
    const id = encodeURIComponent(report.message.id);
    const [upTo, after] = await Promise.all([
      api('GET', `${path}?limit=${CONTEXT_BEFORE + 1}&before=${encodeURIComponent(justAfter(report.message.id))}`)
        .catch(() => null),
      api('GET', `${path}?limit=${CONTEXT_AFTER}&after=${id}`).catch(() => null),
    ]);
    if (upTo) {
      const before = upTo.messages.filter((message) => message.id !== report.message.id);
      context.prepend(...before.slice(-CONTEXT_BEFORE).map((message) => this.line(message)));
      const reported = upTo.messages.find((message) => message.id === report.message.id);
      if (reported?.deleted) this.fillLine(context.querySelector('[data-reported=true]'), reported);
    }
    if (after) context.append(...after.messages.slice(0, CONTEXT_AFTER).map((message) => this.line(message)));
  }
}
