// Presence rooms (who is here, each with a small state) and broadcast (ephemeral events),
// rejoined after every reconnect; plus a typing-indicator helper built on broadcast.

/** @typedef {import('./connection.js').Connection} Connection */
/** @typedef {import('./connection.js').Frame} Frame */

/**
 * One connection in a room (two tabs of one user are two members).
 * @typedef {object} Member
 * @property {string} id            opaque, unique per connection
 * @property {string|null} user     the token's `sub`, null when anonymous
 * @property {unknown} state        its last state: any JSON
 */

/**
 * An ephemeral event another member sent to the room; never echoed to the sender.
 * @typedef {object} RoomEvent
 * @property {string} event
 * @property {unknown} payload      any JSON
 * @property {{id: string, user: string|null}} from
 */

/**
 * Who is typing in a room, for `useSyncExternalStore`.
 * @typedef {object} Typing
 * @property {() => void} start     on each keystroke; sent at most once a second
 * @property {() => void} stop
 * @property {(listener: () => void) => () => boolean} subscribe  returns the unsubscribe
 * @property {() => string[]} getSnapshot  users typing now (or member ids, for anonymous ones)
 * @property {() => void} close  stops listening to the room
 */

export class Presence {
  /** @param {Connection} connection */
  constructor(connection) {
    this.connection = connection;
    /** @type {Map<string, Room>} */
    this.rooms = new Map();
  }

  /**
   * @param {string} name  a record or scope key
   * @returns {Room} the same Room for the same name
   */
  room(name) {
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(this.connection, name);
      this.rooms.set(name, room);
    }
    return room;
  }

  /** @returns {void} */
  rejoin() {
    for (const room of this.rooms.values()) room.rejoin();
  }

  /**
   * @param {Frame} frame  a `presence` or `broadcast` push
   * @returns {void}
   */
  onFrame(frame) {
    this.rooms.get(frame.room)?.onFrame(frame);
  }
}

export class Room {
  /**
   * @param {Connection} connection
   * @param {string} name
   */
  constructor(connection, name) {
    this.connection = connection;
    this.name = name;
    this.joined = false;
    /** @type {unknown} */
    this.state = {};
    /** @type {Map<string, Member>} */
    this.members = new Map();
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    /** @type {Set<(event: RoomEvent) => void>} */
    this.eventListeners = new Set();
    /** @type {Member[]} */
    this.snapshot = [];
  }

  /**
   * Joins with `state` (or updates it when joined).
   * @param {unknown} [state]  any JSON, 1 KiB at most by default
   * @returns {Promise<Frame>} the `ack`; rejects with a RowsyncError
   */
  join(state = {}) {
    this.state = state;
    const action = this.joined ? 'update' : 'join';
    this.joined = true;
    return this.connection.request({ type: 'presence', action, room: this.name, state }).catch((error) => {
      if (action === 'join' && !error.temporary) this.joined = false;
      throw error;
    });
  }

  /**
   * @param {unknown} state
   * @returns {Promise<Frame>}
   */
  update(state) {
    return this.join(state);
  }

  /** @returns {Promise<Frame | void>} never rejects */
  leave() {
    this.joined = false;
    this.members.clear();
    this.changed();
    return this.connection.request({ type: 'presence', action: 'leave', room: this.name }).catch(() => {});
  }

  /** @returns {void} */
  rejoin() {
    if (!this.joined) return;
    this.members.clear();
    this.joined = false;
    this.join(this.state).catch(() => {});
  }

  /**
   * Sends an ephemeral event to the room's other members.
   * @param {string} event
   * @param {unknown} [payload]  any JSON
   * @returns {boolean} false when not joined or not connected: nothing was sent
   */
  broadcast(event, payload = {}) {
    if (!this.joined) return false;
    return this.connection.send({ type: 'broadcast', room: this.name, event, payload });
  }

  /**
   * @param {(event: RoomEvent) => void} listener
   * @returns {() => boolean} removes the listener
   */
  onEvent(listener) {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /**
   * @param {() => void} listener  called when the members change
   * @returns {() => boolean} removes the listener
   */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The members, including this connection, in a stable array.
   * @returns {Member[]}
   */
  getSnapshot() {
    return this.snapshot;
  }

  /**
   * @param {Frame} frame
   * @returns {void}
   */
  onFrame(frame) {
    if (frame.type === 'broadcast') {
      const event = /** @type {RoomEvent} */ (frame);
      for (const listener of this.eventListeners) listener(event);
      return;
    }
    if (frame.event === 'state') {
      this.members = new Map(frame.members.map((/** @type {Member} */ m) => [m.id, m]));
    } else if (frame.event === 'diff') {
      for (const id of frame.leaves ?? []) this.members.delete(id);
      for (const m of frame.joins ?? []) this.members.set(m.id, m);
    }
    this.changed();
  }

  /** @returns {void} */
  changed() {
    this.snapshot = [...this.members.values()];
    for (const listener of this.listeners) listener();
  }
}

/**
 * Who is typing in a room: `start()` on each keystroke (sent at most once a second),
 * `stop()` when done; others see you for `idleMs` after your last event.
 * @param {Room} room
 * @param {{idleMs?: number}} [options]  idleMs: 3000 by default
 * @returns {Typing}
 */
export function typing(room, { idleMs = 3000 } = {}) {
  /** @type {Map<string, ReturnType<typeof setTimeout>>} */
  const typers = new Map();
  /** @type {Set<() => void>} */
  const listeners = new Set();
  let lastSent = 0;
  /** @type {string[]} */
  let snapshot = [];
  const changed = () => {
    snapshot = [...typers.keys()];
    for (const listener of listeners) listener();
  };
  const unlisten = room.onEvent((event) => {
    if (event.event !== 'typing') return;
    const who = event.from.user ?? event.from.id;
    clearTimeout(typers.get(who));
    const payload = /** @type {{typing?: unknown} | null | undefined} */ (event.payload);
    if (payload?.typing === false) {
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
    close() {
      unlisten();
      for (const timer of typers.values()) clearTimeout(timer);
      typers.clear();
      listeners.clear();
    },
  };
}
