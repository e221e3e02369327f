/** The fallback memory: after a buffering proxy forced long-polling, this origin starts with polling for a while. */

const FALLBACK_KEY = 'chat.transport.poll-until';
const FALLBACK_MEMORY_MS = 30 * 60 * 1000; // how long this origin starts with polling after a fallback

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the fallback is then remembered for this page only
  }
}

/** True while a fallback to polling, remembered by this origin, still holds. */
export function rememberedFallback() {
  const until = Number(storage()?.getItem(FALLBACK_KEY) ?? 0);
  return until > Date.now();
}

export function rememberFallback() {
  try { storage()?.setItem(FALLBACK_KEY, String(Date.now() + FALLBACK_MEMORY_MS)); } catch { /* full or denied */ }
}

export function forgetFallback() {
  try { storage()?.removeItem(FALLBACK_KEY); } catch { /* denied */ }
}

/** `?transport=sse|poll` in the page's address forces one transport. */
export function forcedTransport() {
  const wanted = new URLSearchParams(location.search).get('transport');
  return wanted === 'sse' || wanted === 'poll' ? wanted : null;
}
