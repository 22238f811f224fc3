// Presence rooms (who is here, each with a small state) and broadcast (ephemeral events),
// rejoined after every reconnect; plus a typing-indicator helper built on broadcast.

export class Presence {
  /** @param {import('./connection.js').Connection} connection */
  constructor(connection) {
    this.connection = connection;
    /** @type {Map<string, Room>} */
    this.rooms = new Map();
  }

  /** @param {string} name */
  room(name) {
    if (!this.rooms.has(name)) this.rooms.set(name, new Room(this.connection, name));
    return this.rooms.get(name);
  }

  rejoin() {
    for (const room of this.rooms.values()) room.rejoin();
  }

  onFrame(frame) {
    this.rooms.get(frame.room)?.onFrame(frame);
  }
}

export class Room {
  constructor(connection, name) {
    this.connection = connection;
    this.name = name;
    this.joined = false;
    this.state = {};
    /** @type {Map<string, {id: string, user: string|null, state: any}>} */
    this.members = new Map();
    this.listeners = new Set();
    this.eventListeners = new Set();
    this.snapshot = [];
  }

  /** Joins with `state` (or updates it when joined). */
  join(state = {}) {
    this.state = state;
    const action = this.joined ? 'update' : 'join';
    this.joined = true;
    return this.connection.request({ type: 'presence', action, room: this.name, state }).catch((error) => {
      if (action === 'join' && !error.temporary) this.joined = false;
      throw error;
    });
  }

  update(state) {
    return this.join(state);
  }

  leave() {
    this.joined = false;
    this.members.clear();
    this.changed();
    return this.connection.request({ type: 'presence', action: 'leave', room: this.name }).catch(() => {});
  }

  rejoin() {
    if (!this.joined) return;
    this.members.clear();
    this.joined = false;
    this.join(this.state).catch(() => {});
  }

  /** Sends an ephemeral event to the room's other members. */
  broadcast(event, payload = {}) {
    if (!this.joined) return false;
    return this.connection.send({ type: 'broadcast', room: this.name, event, payload });
  }

  /** @param {(event: {event: string, payload: any, from: {id: string, user: string|null}}) => void} listener */
  onEvent(listener) {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The members, including this connection, in a stable array. */
  getSnapshot() {
    return this.snapshot;
  }

  onFrame(frame) {
    if (frame.type === 'broadcast') {
      for (const listener of this.eventListeners) listener(frame);
      return;
    }
    if (frame.event === 'state') {
      this.members = new Map(frame.members.map((m) => [m.id, m]));
    } else if (frame.event === 'diff') {
      for (const id of frame.leaves ?? []) this.members.delete(id);
      for (const m of frame.joins ?? []) this.members.set(m.id, m);
    }
    this.changed();
  }

  changed() {
    this.snapshot = [...this.members.values()];
    for (const listener of this.listeners) listener();
  }
}

/**
 * Who is typing in a room: `start()` on each keystroke (sent at most once a second),
 * `stop()` when done; others see you for `idleMs` after your last event.
 * @param {Room} room
 */
export function typing(room, { idleMs = 3000 } = {}) {
  const typers = new Map();
  const listeners = new Set();
  let lastSent = 0;
  let snapshot = [];
  const changed = () => {
    snapshot = [...typers.keys()];
    for (const listener of listeners) listener();
  };
  room.onEvent((event) => {
    if (event.event !== 'typing') return;
    const who = event.from.user ?? event.from.id;
    clearTimeout(typers.get(who));
    if (event.payload?.typing === false) {
      typers.delete(who);
    } else {
      typers.set(who, setTimeout(() => { typers.delete(who); changed(); }, idleMs));
    }
    changed();
  });
  return {
    start() {
      const now = Date.now();
      if (now - lastSent < 1000) return;
      lastSent = now;
      room.broadcast('typing', { typing: true });
    },
    stop() {
      lastSent = 0;
      room.broadcast('typing', { typing: false });
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    /** Users typing now. */
    getSnapshot() {
      return snapshot;
    },
  };
}
