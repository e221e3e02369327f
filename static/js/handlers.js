/** A registry of event handlers by name ('*' hears every event), each wrapped so one failure cannot stop delivery. */

export class Handlers {
  constructor() {
    this.byName = new Map();
  }

  /** Register a handler for an event name; several may share a name. */
  on(name, handler) {
    if (!this.byName.has(name)) this.byName.set(name, []);
    this.byName.get(name).push(handler);
    return this;
  }

  names() {
    return [...this.byName.keys()].filter((name) => name !== '*');
  }

  /** Call every handler of `name`, then every '*' handler; a throw or a rejected promise is logged, never passed on. */
  deliver(name, data, meta) {
    for (const handler of [...(this.byName.get(name) ?? []), ...(this.byName.get('*') ?? [])]) {
      try {
        const result = handler(data, { name, ...meta });
        if (result && typeof result.catch === 'function') {
          result.catch((error) => console.error(`handler for "${name}" failed`, error));
        }
      } catch (error) {
        console.error(`handler for "${name}" failed`, error);
      }
    }
  }
}
