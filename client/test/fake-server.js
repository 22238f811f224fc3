// An in-memory stand-in for the bridge, speaking protocol 1 over an injectable WebSocket,
// for deterministic client tests. Writes apply with ops.js and bump versions as Postgres
// does; tests can refuse the next write, push frames and drop the connection.

import { applyTransaction, parseTransaction } from '../src/ops.js';

export class FakeServer {
  constructor(rows = {}) {
    /** @type {Map<string, object|null>} */
    this.rows = new Map(Object.entries(rows));
    this.sockets = [];
    this.received = [];
    this.refuseNext = null;
    this.online = true;
    const server = this;
    this.WebSocket = class {
      constructor(url) {
        this.url = url;
        this.closed = false;
        server.sockets.push(this);
        setTimeout(() => {
          if (!server.online) return this.drop(1006);
          this.deliver({ type: 'welcome', protocol: 1, user: 'test', heartbeat_ms: 25000 });
        }, 0);
      }
      send(text) {
        if (this.closed) return;
        const frame = JSON.parse(text);
        server.received.push(frame);
        const reply = server.handle(frame);
        if (reply) setTimeout(() => this.deliver({ ...reply, ref: frame.ref }), 0);
      }
      close() { this.drop(1000); }
      drop(code) {
        if (this.closed) return;
        this.closed = true;
        setTimeout(() => this.onclose?.({ code, reason: '' }), 0);
      }
      deliver(frame) {
        if (!this.closed) this.onmessage?.({ data: JSON.stringify(frame) });
      }
    };
  }

  get socket() { return this.sockets.filter((s) => !s.closed).at(-1); }

  push(frame) { this.socket?.deliver(frame); }

  disconnect() { for (const s of this.sockets) s.drop(1006); }

  handle(frame) {
    switch (frame.type) {
      case 'subscribe': return { type: 'ack', keys: frame.keys, cursor: 'tok10' };
      case 'unsubscribe': return { type: 'ack', keys: frame.keys };
      case 'ping': return { type: 'pong' };
      case 'fetch': {
        const records = [];
        const scopes = [];
        for (const key of frame.keys) {
          if (key.includes('?')) {
            const [table, rest] = key.split('?');
            const [column, value] = rest.split('=');
            const rows = [...this.rows].filter(([k, r]) => r && k.startsWith(`${table}:`) && String(r[column]) === value).map(([, r]) => r);
            scopes.push({ key, rows });
          } else if (!key.includes(':')) {
            const rows = [...this.rows].filter(([k, r]) => r && k.startsWith(`${key}:`)).map(([, r]) => r);
            scopes.push({ key, rows });
          } else {
            const [table, id] = key.split(':');
            records.push({ table, id, row: this.rows.get(key) ?? null });
          }
        }
        return { type: 'records', records, scopes, cursor: 'tok10' };
      }
      case 'write': {
        if (this.refuseNext) {
          const error = this.refuseNext;
          this.refuseNext = null;
          return { type: 'error', error };
        }
        try {
          const tx = parseTransaction(frame.tx);
          const { rows, inverse, skipped } = applyTransaction(this.rows, tx.ops, '2026-01-01T00:00:00+00:00');
          const touched = [...new Set(tx.ops.map((op) => `${op.table}:${op.id}`))];
          const result = { id: frame.tx.id, rows: [], inverse, skipped, cursor: 11 };
          for (const key of touched) {
            const before = this.rows.get(key);
            let row = rows.get(key) ?? null;
            if (row) row = { ...row, version: before ? (before.version ?? 0) + 1 : 1 };
            this.rows.set(key, row);
            const [table, id] = key.split(':');
            result.rows.push({ table, id, version: row?.version ?? null, row });
          }
          return { type: 'ack', result };
        } catch (error) {
          return { type: 'error', error: { code: error.code ?? 'invalid_op', message: error.message, temporary: false } };
        }
      }
      default: return { type: 'error', error: { code: 'unknown_type', message: frame.type, temporary: false } };
    }
  }
}

/** Resolves once `check()` is truthy (polling each tick), or rejects after a second. */
export async function until(check, what = 'condition') {
  const deadline = Date.now() + 1000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
