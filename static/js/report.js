/**
 * The room page's "Report" control: on each message of someone else, a button that opens a small inline form
 * asking why, then POST /api/rooms/<slug>/messages/<id>/reports. The outcome shows in the message itself:
 * reported, reported before (the API answers the first report again), or why it failed. DOM text only.
 */
import { api, roomPath } from './api.js';
import { element } from './dom.js';

const MAX_REASON = 500;

/** Add the control to a message's element (once; never on one's own messages or on one not confirmed yet). */
export function addReportControl(item, message, me) {
  if (!message.id || !message.room || message.sender?.id === me.id) return;
  if (item.querySelector('[data-action=report]')) return;
  const button = element('button', { className: 'button-small button-quiet report', testid: 'report', text: 'Report' });
  button.type = 'button';
  button.dataset.action = 'report';
  button.setAttribute('aria-label', `Report message from ${message.sender?.username ?? 'unknown'}`);
  button.addEventListener('click', () => openForm(item, message, button));
  item.querySelector('.message-meta').append(button);
}

function openForm(item, message, button) {
  if (item.querySelector('[data-testid=report-form]')) {
    item.querySelector('[data-testid=report-reason]').focus();
    return;
  }
  item.querySelector('[data-testid=report-outcome]')?.remove();
  const form = element('form', { className: 'report-form', testid: 'report-form' });
  form.noValidate = true;
  const label = element('label', { text: 'Why should moderators look at this?' });
  const input = element('input', { testid: 'report-reason' });
  input.name = 'reason';
  input.maxLength = MAX_REASON;
  input.autocomplete = 'off';
  input.required = true;
  const fieldId = `report-reason-${message.id}`;
  input.id = fieldId;
  label.htmlFor = fieldId;
  const send = element('button', { className: 'button-small', testid: 'report-send', text: 'Send report' });
  send.type = 'submit';
  const cancel = element('button', { className: 'button-small button-secondary', testid: 'report-cancel',
    text: 'Cancel' });
  cancel.type = 'button';
  const error = element('p', { className: 'field-error', testid: 'report-error' });
  error.setAttribute('role', 'alert');
  const row = element('div', { className: 'row' });
  row.append(send, cancel);
  form.append(label, input, row, error);
  item.append(form);
  input.focus();
  cancel.addEventListener('click', () => {
    form.remove();
    button.focus();
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const reason = input.value.trim();
    if (!reason) {
      error.textContent = 'Say in a few words what is wrong with it.';
      input.focus();
      return;
    }
    send.disabled = true;
    error.textContent = '';
    try {
      const report = await api('POST', roomPath(message.room, 'messages', message.id, 'reports'), { body: { reason } });
      form.remove();
      const before = report.reason !== reason || report.status !== 'open';
      showOutcome(item, before ? 'You reported this message before; moderators have it.'
        : 'Reported. Thank you: moderators will look at it.');
      button.disabled = true;
      button.textContent = 'Reported';
    } catch (failure) {
      error.textContent = failure.status === 404 ? 'This message is gone.'
        : `Could not send the report: ${failure.message}`;
      send.disabled = false;
    }
  });
}

function showOutcome(item, text) {
  const outcome = element('p', { className: 'report-outcome', testid: 'report-outcome', text });
  outcome.setAttribute('role', 'status');
  item.append(outcome);
}
