// The WebSocket connection: explicit states with reasons, capped exponential backoff with
// jitter, token refresh, heartbeat, and requests matched to replies by `ref`.

/** @typedef {'idle'|'connecting'|'open'|'offline'|'closed'} ConnectionState */

/**
 * A frame from the server: one JSON object with a string `type`; the other fields depend
 * on the type (docs/protocol.md), so they stay open here.
 * @typedef {Record<string, any>} Frame
 */

/**
 * A frame to the server; `request()` adds its `ref`.
 * @typedef {{type: string, [field: string]: unknown}} OutgoingFrame
 */

/**
 * The first frame of an accepted connection.
 * @typedef {object} Welcome
 * @property {'welcome'} type
 * @property {number} protocol
 * @property {string|null} user          the token's `sub`, null when anonymous
 * @property {string} role                the database role requests run as
 * @property {number} heartbeat_ms
 * @property {{max_frame_bytes: number, max_subscriptions: number, messages_per_second: number}} limits
 */

/**
 * A request waiting for its reply.
 * @typedef {object} PendingRequest
 * @property {(reply: Frame) => void} resolve
 * @property {(error: RowsyncError) => void} reject
 * @property {ReturnType<typeof setTimeout>} timer
 */

/**
 * @typedef {object} ConnectionOptions
 * @property {string} url                 ws(s)://host/v1/ws
 * @property {() => Promise<string>|string} getToken
 * @property {typeof WebSocket} [WebSocket]
 * @property {number} [requestTimeoutMs]
 * @property {number} [minBackoffMs]
 * @property {number} [maxBackoffMs]
 * @property {() => number} [random]
 */

/** Close codes that mean: do not reconnect until something changes (docs/protocol.md). */
const FATAL = new Set([1009]);
/** Close codes that mean: get a fresh token, then reconnect. */
const REAUTH = new Set([4001, 4100]);

export class Connection {
  /** @param {ConnectionOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {ConnectionState} */
    this.state = 'idle';
    this.reason = '';
    /** @type {WebSocket|null} */
    this.socket = null;
    this.nextRef = 1;
    /** @type {Map<number, PendingRequest>} */
    this.pending = new Map();
    /** @type {Set<(state: ConnectionState, reason: string) => void>} */
    this.stateListeners = new Set();
    /** @type {Set<(frame: Frame) => void>} */
    this.pushListeners = new Set();
    /** @type {Set<(welcome: Welcome) => void>} */
    this.openListeners = new Set();
    this.attempt = 0;
    this.lastHeard = 0;
    this.heartbeatMs = 25000;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.refreshTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.checkTimer = undefined;
    this.stopped = false;
    this.token = '';
  }

  /** @param {ConnectionState} state @param {string} reason */
  setState(state, reason) {
    if (this.state === state && this.reason === reason) return;
    this.state = state;
    this.reason = reason;
    for (const listener of this.stateListeners) listener(state, reason);
  }

  /**
   * @param {(state: ConnectionState, reason: string) => void} listener
   * @returns {() => boolean} removes the listener
   */
  onState(listener) { this.stateListeners.add(listener); return () => this.stateListeners.delete(listener); }
  /**
   * @param {(frame: Frame) => void} listener  gets the frames that answer no request
   * @returns {() => boolean} removes the listener
   */
  onPush(listener) { this.pushListeners.add(listener); return () => this.pushListeners.delete(listener); }
  /**
   * @param {(welcome: Welcome) => void} listener  called on every (re)connect
   * @returns {() => boolean} removes the listener
   */
  onOpen(listener) { this.openListeners.add(listener); return () => this.openListeners.delete(listener); }

  /** @returns {void} */
  start() {
    this.stopped = false;
    if (this.state === 'idle' || this.state === 'closed' || this.state === 'offline') this.connect('start');
    // Timers are throttled in background tabs; a coarse check that compares clocks keeps
    // working (and the browser answers the server's pings by itself).
    this.checkTimer ??= setInterval(() => this.check(), 5000);
  }

  /** @returns {void} */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    clearInterval(this.checkTimer);
    this.checkTimer = undefined;
    this.socket?.close(1000, 'client stopped');
    this.socket = null;
    this.failAll('connection stopped');
    this.setState('closed', 'stopped by the application');
  }

  /**
   * Reconnects now: the page came back, the network came back.
   * @param {string} reason
   * @returns {void}
   */
  wake(reason) {
    if (this.stopped) return;
    // An attempt under way may have started while offline: if it fails, retry at once.
    this.attempt = 0;
    this.woken = true;
    if (this.state !== 'open' && this.state !== 'connecting') {
      clearTimeout(this.retryTimer);
      this.connect(reason);
    } else {
      this.check();
    }
  }

  /** @returns {void} */
  check() {
    if (this.state === 'open' && Date.now() - this.lastHeard > this.heartbeatMs * 2.5) {
      this.socket?.close(4103, 'heartbeat');
      this.dropped('no frame from the server within the heartbeat');
    } else if (this.state === 'open' && Date.now() - this.lastHeard > this.heartbeatMs) {
      this.send({ type: 'ping' });
    }
  }

  /**
   * @param {string} reason
   * @returns {Promise<void>}
   */
  async connect(reason) {
    if (this.stopped) return;
    this.setState('connecting', reason);
    let token;
    try {
      token = await this.options.getToken();
    } catch (error) {
      this.retry(`getToken failed: ${error}`);
      return;
    }
    this.token = token;
    const Ctor = this.options.WebSocket ?? globalThis.WebSocket;
    const url = `${this.options.url}${this.options.url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(token)}`;
    let socket;
    try {
      socket = new Ctor(url);
    } catch (error) {
      this.retry(`cannot connect: ${error}`);
      return;
    }
    this.socket = socket;
    let welcomed = false;
    socket.onmessage = (event) => {
      this.lastHeard = Date.now();
      /** @type {Frame} */
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (!welcomed && frame.type === 'welcome') {
        welcomed = true;
        this.attempt = 0;
        this.woken = false;
        this.heartbeatMs = frame.heartbeat_ms ?? this.heartbeatMs;
        this.scheduleRefresh(token);
        this.setState('open', 'connected');
        const welcome = /** @type {Welcome} */ (frame);
        for (const listener of this.openListeners) listener(welcome);
        return;
      }
      // Refs are numbers, so a frame without one finds nothing.
      const waiting = this.pending.get(frame.ref);
      if (waiting) {
        const { resolve, reject, timer } = waiting;
        clearTimeout(timer);
        this.pending.delete(frame.ref);
        if (frame.type === 'error') reject(new RowsyncError(frame.error));
        else resolve(frame);
        return;
      }
      for (const listener of this.pushListeners) listener(frame);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.failAll('connection closed');
      if (this.stopped) return;
      const code = event.code;
      if (FATAL.has(code)) {
        this.setState('closed', `closed by the server (${code}): ${event.reason}`);
      } else if (REAUTH.has(code)) {
        this.retry(`token refused (${code}); getting a fresh one`, true);
      } else {
        this.dropped(`connection lost (${code}${event.reason ? `: ${event.reason}` : ''})`);
      }
    };
    socket.onerror = () => {};
  }

  /**
   * @param {string} reason
   * @returns {void}
   */
  dropped(reason) {
    this.socket = null;
    this.failAll('connection lost');
    this.retry(reason);
  }

  /**
   * Capped exponential backoff with full jitter.
   * @param {string} reason
   * @param {boolean} [immediate]  the first retry goes at once (a refused token)
   * @returns {void}
   */
  retry(reason, immediate = false) {
    if (this.stopped) return;
    clearTimeout(this.refreshTimer);
    const min = this.options.minBackoffMs ?? 250;
    const max = this.options.maxBackoffMs ?? 10000;
    const random = this.options.random ?? Math.random;
    const now = (immediate && this.attempt === 0) || this.woken;
    this.woken = false;
    const delay = now ? 0 : Math.round(random() * Math.min(max, min * 2 ** this.attempt));
    this.attempt += 1;
    this.setState('offline', reason);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect('retry'), delay);
  }

  /**
   * Sends a fresh token before this one expires.
   * @param {string} token
   * @returns {void}
   */
  scheduleRefresh(token) {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(token);
    if (!exp) return;
    const inMs = Math.max(1000, exp * 1000 - Date.now() - 30000);
    this.refreshTimer = setTimeout(async () => {
      try {
        const fresh = await this.options.getToken();
        if (fresh && fresh !== this.token) {
          await this.request({ type: 'auth', token: fresh });
          this.token = fresh;
          this.scheduleRefresh(fresh);
        }
      } catch {
        // The server closes with 4100 at expiry; the reconnect gets a token then.
      }
    }, inMs);
  }

  /**
   * @param {string} message
   * @returns {void}
   */
  failAll(message) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new RowsyncError({ code: 'disconnected', message, temporary: true }));
    }
    this.pending.clear();
  }

  /**
   * Sends a frame without waiting for its reply.
   * @param {OutgoingFrame} frame
   * @returns {boolean} false when not connected: nothing was sent
   */
  send(frame) {
    if (this.state !== 'open' || !this.socket) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends a request; resolves with its reply, rejects with its error or on timeout.
   * @param {OutgoingFrame} frame
   * @returns {Promise<Frame>} rejects with a RowsyncError
   */
  request(frame) {
    const socket = this.socket;
    if (this.state !== 'open' || !socket) {
      return Promise.reject(new RowsyncError({ code: 'disconnected', message: 'not connected', temporary: true }));
    }
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RowsyncError({ code: 'request_timeout', message: 'no reply in time', temporary: true }));
      }, this.options.requestTimeoutMs ?? 10000);
      this.pending.set(ref, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...frame, ref }));
    });
  }
}

/** An error the server (or the connection) reported: `code` as in docs/errors.md. */
export class RowsyncError extends Error {
  /** @param {{code: string, message: string, temporary?: boolean, sqlstate?: string, detail?: string, hint?: string}} body */
  constructor(body) {
    super(body.message);
    this.code = body.code;
    this.temporary = Boolean(body.temporary);
    this.sqlstate = body.sqlstate;
    this.detail = body.detail;
    this.hint = body.hint;
  }
}

/**
 * The `exp` claim of a JWT, or 0.
 * @param {string} token
 * @returns {number} seconds since the epoch
 */
export function tokenExpiry(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).exp ?? 0;
  } catch {
    return 0;
  }
}
