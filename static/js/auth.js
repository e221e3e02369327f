/** Signing in and out: the login/registration form, and the logout button every page carries. */
import { adoptSession, api, ApiError, loadSession, NetworkError } from './api.js';
import { flash } from './render.js';

/** The signed-in user as the server rendered it into the page, or null. */
export function pageUser() {
  const { userId, username, role } = document.body.dataset;
  return userId ? { id: Number(userId), username, role } : null;
}

/**
 * Where to go after signing in: `?next=` when it is a page of this site, else the rooms list. The
 * address is resolved as the browser will resolve it (which drops tabs and newlines, and reads `\` as
 * `/`), so `/%09/evil.example` or `/\evil.example` cannot lead to another host.
 */
function nextLocation() {
  const next = new URLSearchParams(location.search).get('next') || '/';
  if (!next.startsWith('/')) return '/';
  const target = new URL(next, location.origin);
  return target.origin === location.origin ? target.pathname + target.search + target.hash : '/';
}

function describeAuthError(error, action) {
  if (error instanceof NetworkError) return 'Could not reach the server. Check your connection and try again.';
  if (!(error instanceof ApiError)) return 'Something went wrong. Try again.';
  switch (error.code) {
    case 'invalid_credentials': return 'Wrong username or password.';
    case 'username_taken': return 'That username is taken. Pick another, or sign in.';
    case 'banned': return 'This account is banned.';
    case 'rate_limited': return `Too many attempts. Try again in ${error.retryAfter ?? 'a few'} seconds.`;
    case 'validation_error': {
      const parts = Object.entries(error.fields ?? {}).map(([field, problems]) => `${field}: ${[].concat(problems).join(', ')}`);
      return parts.length ? `Please check: ${parts.join('; ')}.` : error.message;
    }
    default: return `Could not ${action}: ${error.message}`;
  }
}

/** Wire the login/registration form on `/`. */
export function initAuthForm(form) {
  const errorBox = form.querySelector('[data-role=auth-error]');
  const buttons = [...form.querySelectorAll('button[type=submit]')];
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const action = event.submitter?.value === 'register' ? 'register' : 'login';
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    errorBox.textContent = '';
    if (!username || !password) {
      errorBox.textContent = 'Enter a username and a password.';
      (username ? form.elements.password : form.elements.username).focus();
      return;
    }
    buttons.forEach((button) => { button.disabled = true; });
    form.setAttribute('aria-busy', 'true');
    try {
      const data = await api('POST', `/api/auth/${action}`, { body: { username, password } });
      adoptSession(data);
      location.assign(nextLocation());
    } catch (error) {
      errorBox.textContent = describeAuthError(error, action === 'register' ? 'create the account' : 'sign in');
      form.elements.password.focus();
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
      form.removeAttribute('aria-busy');
    }
  });
}

/** Log out this session (`logout`) or every session of the account (`logout_all`), then go to sign-in. */
async function logout(button, path) {
  button.disabled = true;
  try {
    await loadSession(); // the CSRF token
    await api('POST', path);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      button.disabled = false;
      flash('Could not log out. Check your connection and try again.');
      return;
    }
  }
  location.assign('/');
}

const LOGOUT_PATHS = { logout: '/api/auth/logout', 'logout-all': '/api/auth/logout_all' };

/** Every page's logout buttons: this session, and everywhere (idempotent). */
export function initLogout() {
  for (const button of document.querySelectorAll('[data-action=logout], [data-action=logout-all]')) {
    if (button.dataset.wired) continue;
    button.dataset.wired = 'true';
    button.addEventListener('click', () => logout(button, LOGOUT_PATHS[button.dataset.action]));
  }
}

/** The change-password form on `/`: the other sessions end, this one stays signed in. */
export function initPasswordForm(form) {
  const errorBox = form.querySelector('[data-role=password-error]');
  const status = form.querySelector('[data-role=password-status]');
  const button = form.querySelector('button[type=submit]');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const current = form.elements.current_password.value;
    const next = form.elements.new_password.value;
    errorBox.textContent = '';
    status.textContent = '';
    if (!current || [...next].length < 8) {
      errorBox.textContent = 'Enter your current password and a new one of at least 8 characters.';
      (current ? form.elements.new_password : form.elements.current_password).focus();
      return;
    }
    button.disabled = true;
    try {
      await loadSession(); // the CSRF token
      await api('POST', '/api/auth/password', { body: { current_password: current, new_password: next } });
      form.reset();
      status.textContent = 'Password changed. Every other session of this account is signed out.';
    } catch (error) {
      errorBox.textContent = error instanceof ApiError && error.code === 'invalid_credentials'
        ? 'Your current password is wrong.' : describeAuthError(error, 'change the password');
      form.elements.current_password.focus();
    } finally {
      button.disabled = false;
    }
  });
}

initLogout();
