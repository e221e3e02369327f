/** The dashboard's forms: mute, ban, lock, slow mode and purge, each with its optional reason, and the room pickers. */

/** Wire every control form to `actions` (mod-actions.js). */
export function wireControls(actions) {
  onSubmit('[data-role=mute-form]', (form, button) => {
    const room = form.elements.room.value;
    const username = form.elements.target.value.trim();
    const minutes = Number(form.elements.minutes.value);
    if (!room || !username) return actions.say('Pick a room and enter a username.');
    if (button === 'unmute') return actions.unmute(room, username);
    return actions.mute(room, username, minutes, formReason(form));
  });

  onSubmit('[data-role=ban-form]', (form, button) => {
    const username = form.elements.target.value.trim();
    if (!username) return actions.say('Enter a username.');
    if (button === 'unban') return actions.unban(username);
    return actions.ban(username, formReason(form), { purgeLastHour: form.elements.purge.checked });
  });

  onSubmit('[data-role=lock-form]', (form, button) => {
    const room = form.elements.room.value;
    if (!room) return actions.say('Pick a room.');
    return actions.setLocked(room, button !== 'unlock', formReason(form));
  });

  onSubmit('[data-testid=slow-mode-form]', (form) => {
    const room = form.elements.room.value;
    const seconds = Number(form.elements.seconds.value);
    if (!room) return actions.say('Pick a room.');
    return actions.slowMode(room, seconds, formReason(form));
  });

  onSubmit('[data-testid=purge-form]', (form) => {
    const username = form.elements.target.value.trim();
    if (!username) return actions.say('Enter a username.');
    return actions.purge(username, Number(form.elements.minutes.value), form.elements.room.value || null,
      formReason(form));
  });
}

function submitterOf(event) {
  return event.submitter?.value;
}

function formReason(form) {
  return form.elements.reason.value.trim() || null;
}

function onSubmit(selector, handler) {
  document.querySelector(selector).addEventListener('submit', (event) => {
    event.preventDefault();
    handler(event.currentTarget, submitterOf(event));
  });
}

/** Fill a room `<select>` (an "All rooms" first option where it has `data-rooms=all`), keeping its choice. */
export function fillRoomSelect(select, rooms) {
  const options = rooms.map((room) => [room.slug, room.locked ? `${room.name} (locked)` : room.name]);
  if (select.dataset.rooms === 'all') options.unshift(['', 'All rooms']);
  const current = [...select.options].map((option) => `${option.value}\n${option.textContent}`);
  if (current.join('\n\n') === options.map(([value, text]) => `${value}\n${text}`).join('\n\n')) return;
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, text]) => Object.assign(document.createElement('option'),
    { value, textContent: text })));
  if (options.some(([value]) => value === chosen)) select.value = chosen;
}
