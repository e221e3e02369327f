/**
 * Tab leadership: every tab of this browser joins one BroadcastChannel; the tab that holds the Web Lock leads,
 * for as long as it lives (the lock is released when it closes or crashes, and the next waiting tab gets it).
 */

/** True when this browser can share one connection between its tabs (else each tab keeps its own). */
export function sharingSupported() {
  return typeof navigator.locks?.request === 'function' && typeof BroadcastChannel === 'function';
}

export class TabLink {
  /**
   * @param {string} name  the lock's and the channel's name (per user, so two accounts never mix)
   * @param {object} callbacks
   * @param {(message: object) => void} callbacks.onMessage  what the other tabs posted, in their order
   * @param {() => void} callbacks.onLead  this tab holds the lock now, until close()
   */
  constructor(name, { onMessage, onLead }) {
    this.name = name;
    this.onMessage = onMessage;
    this.onLead = onLead;
    this.leading = false;
    this.release = null;
    this.channel = null;
  }

  start() {
    this.channel = new BroadcastChannel(this.name);
    this.channel.onmessage = (event) => {
      try { this.onMessage(event.data); } catch (error) { console.error('tab message failed', error); }
    };
    navigator.locks.request(this.name, () => {
      if (!this.channel) return undefined; // closed while waiting
      this.leading = true;
      const held = new Promise((resolve) => { this.release = resolve; });
      try { this.onLead(); } catch (error) { console.error('taking the lead failed', error); }
      return held; // the lock is ours until this settles
    }).catch((error) => console.error('the tab lock failed', error));
  }

  post(message) {
    try { this.channel?.postMessage(message); } catch (error) { console.error('posting to the other tabs failed', error); }
  }

  /** Leave: the lock goes to the next tab waiting for it. */
  close() {
    this.release?.();
    this.release = null;
    this.leading = false;
    this.channel?.close();
    this.channel = null;
  }
}
