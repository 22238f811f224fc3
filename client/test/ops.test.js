// The shared operation vectors (tests/vectors/*.json, format in its README.md) run against
// the JavaScript port, one test per case, then unit tests of the port itself.

import { test } from 'node:test';
import assert from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import {
  ApplyError,
  OpError,
  applyOp,
  applyTransaction,
  deepEqual,
  keyToJson,
  opToJson,
  parseKey,
  parseOp,
  parseTransaction,
} from '../src/ops.js';

/** @typedef {import('../src/ops.js').Json} Json */
/** @typedef {import('../src/ops.js').Row} Row */

const VECTORS = new URL('../../tests/vectors/', import.meta.url);

/** The transaction timestamp "$now" stands for, as `to_jsonb(now())` renders one. */
const NOW = '2026-01-02T03:04:05.678901+00:00';

/**
 * Orders strings by code point, as the Rust runner orders ids.
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
function byCodePoint(a, b) {
  const x = Array.from(a, (c) => /** @type {number} */ (c.codePointAt(0)));
  const y = Array.from(b, (c) => /** @type {number} */ (c.codePointAt(0)));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/**
 * Rows of one table in comparable form: defaults filled in, `version` dropped, sorted by id.
 * @param {Row[]} rows
 * @param {Row} defaults
 * @returns {Row[]}
 */
function normalise(rows, defaults) {
  return rows
    .map((row) => {
      const full = { ...structuredClone(defaults), ...structuredClone(row) };
      delete full.version;
      return full;
    })
    .sort((a, b) => byCodePoint(JSON.stringify(a.id), JSON.stringify(b.id)));
}

/**
 * Replaces every "$now" string with the transaction's timestamp.
 * @param {Json} value
 * @returns {Json}
 */
function withNow(value) {
  if (value === '$now') return NOW;
  if (Array.isArray(value)) return value.map(withNow);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withNow(v)]));
  }
  return value;
}

/**
 * A map's entries, deep-copied, to compare it with itself later.
 * @param {Map<string, Row | null>} rows
 */
function snapshot(rows) {
  return structuredClone([...rows]);
}

/**
 * Runs one case of a vector file.
 * @param {any} file the parsed vector file
 * @param {any} c the case
 */
function runCase(file, c) {
  /** @type {Row} */
  const defaults = file.defaults;
  /** @type {{[table: string]: Row[]}} */
  const before = c.before ?? file.before;
  /** @type {Map<string, Row | null>} */
  const rows = new Map();
  for (const [table, list] of Object.entries(before)) {
    for (const row of list) {
      assert.strictEqual(typeof row.id, 'string', 'row ids in vectors are text');
      rows.set(`${table}:${row.id}`, { ...structuredClone(defaults), ...structuredClone(row) });
    }
  }
  const given = snapshot(rows);

  let tx;
  try {
    tx = parseTransaction(c.tx, 1000);
  } catch (error) {
    if (!(error instanceof OpError)) throw error;
    assert.ok(c.error, `unexpected parse error: ${error}`);
    assert.strictEqual(c.error.code, 'invalid_op', `expected ${c.error.code}, parse failed: ${error}`);
    assert.deepStrictEqual(
      [error.index, error.field],
      [c.error.index, c.error.field ?? null],
      `error index and field (${error})`,
    );
    return;
  }

  if (c.error) {
    assert.notStrictEqual(c.error.code, 'invalid_op', 'expected invalid_op, the transaction parsed');
    let thrown;
    try {
      applyTransaction(rows, tx.ops, NOW);
    } catch (error) {
      thrown = error;
    }
    assert.ok(thrown, `expected error ${c.error.code}, it applied`);
    assert.ok(thrown instanceof ApplyError, `not an ApplyError: ${thrown}`);
    assert.deepStrictEqual([thrown.code, thrown.index], [c.error.code, c.error.index], 'error');
    assert.deepStrictEqual(snapshot(rows), given, 'rows after a refused transaction');
    return;
  }

  const outcome = applyTransaction(rows, tx.ops, NOW);
  assert.deepStrictEqual(snapshot(rows), given, 'the input map is left as it was');
  for (const table of Object.keys(before)) {
    assert.ok(table in c.after, `after lists every table of before (missing ${table})`);
  }
  for (const [table, expected] of Object.entries(c.after)) {
    /** @type {Row[]} */
    const actual = [];
    for (const [k, row] of outcome.rows) {
      if (k.slice(0, k.indexOf(':')) === table && row !== null) actual.push(row);
    }
    assert.deepStrictEqual(
      normalise(actual, defaults),
      withNow(normalise(/** @type {Row[]} */ (expected), defaults)),
      `rows of ${table}`,
    );
  }
  assert.deepStrictEqual(outcome.inverse, withNow(c.inverse), 'inverse');
  assert.deepStrictEqual(outcome.skipped, c.skipped ?? [], 'skipped');
  // The round trip: the inverse always applies, and restores every row as it was before.
  if ((c.skipped ?? []).length === 0) {
    const undone = applyTransaction(outcome.rows, parseTransaction({ ops: outcome.inverse }, 1000).ops, NOW);
    for (const [table, expected] of Object.entries(before)) {
      /** @type {Row[]} */
      const actual = [];
      for (const [k, row] of undone.rows) {
        if (k.slice(0, k.indexOf(':')) === table && row !== null) actual.push(row);
      }
      assert.deepStrictEqual(normalise(actual, defaults), normalise(expected, defaults), `rows of ${table} after the inverse`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// The shared vectors

const files = readdirSync(VECTORS)
  .filter((name) => name.endsWith('.json'))
  .sort();

test('the shared vector files are there', () => {
  assert.ok(files.length >= 4, `vector files missing in ${VECTORS.pathname}`);
});

for (const name of files) {
  let vectors;
  try {
    vectors = JSON.parse(readFileSync(new URL(name, VECTORS), 'utf8'));
    assert.ok(Array.isArray(vectors.cases), 'cases must be an array');
  } catch (error) {
    test(name, () => {
      throw error;
    });
    continue;
  }
  for (const c of vectors.cases) {
    test(`${name} / ${c.name ?? 'unnamed'}`, () => runCase(vectors, c));
  }
}

// ---------------------------------------------------------------------------------------
// Unit tests

test('deepEqual: numbers by value, objects regardless of key order, arrays in order', () => {
  assert.ok(deepEqual(1, 1.0));
  assert.ok(!deepEqual(1, 1.5));
  assert.ok(!deepEqual(1, '1'));
  assert.ok(!deepEqual(null, false));
  assert.ok(!deepEqual(0, false));
  const a = JSON.parse('{"a":1,"b":[1,{"c":2}]}');
  const b = JSON.parse('{"b":[1.0,{"c":2}],"a":1}');
  assert.ok(deepEqual(a, b));
  assert.ok(!deepEqual(a, { a: 1 }));
  assert.ok(!deepEqual({ a: 1 }, a));
  assert.ok(!deepEqual([1, 2], [2, 1]));
  assert.ok(!deepEqual([], {}));
  assert.ok(!deepEqual({ a: null }, { b: null }));
  assert.ok(!deepEqual({ a: null }, {}));
  assert.ok(!deepEqual({ constructor: 1 }, { toString: 1 }));
});

test('parseKey: dotted and array forms; keyToJson uses the array form for dotted names', () => {
  const dotted = parseKey('meta.color');
  assert.deepStrictEqual(dotted, { column: 'meta', path: ['color'] });
  assert.deepStrictEqual(parseKey(['meta', 'color']), dotted);
  assert.strictEqual(keyToJson(dotted), 'meta.color');
  assert.deepStrictEqual(parseKey('title'), { column: 'title', path: [] });
  const withDot = parseKey(['meta', 'a.b']);
  assert.deepStrictEqual(withDot, { column: 'meta', path: ['a.b'] });
  assert.deepStrictEqual(keyToJson(withDot), ['meta', 'a.b']);
  for (const bad of ['', 'a..b', '.a', 'a.', [], [1], ['a', ''], 3, null, {}]) {
    assert.throws(
      () => parseKey(bad),
      (e) => e instanceof OpError && e.field === 'key',
      JSON.stringify(bad),
    );
  }
});

// Which field each malformed op or transaction names is pinned by tests/vectors/parse.json;
// these are what JSON cannot carry, and the JavaScript error's shape.
test('parse errors: values JSON cannot carry, and the error\'s message', () => {
  assert.throws(
    () => parseOp({ type: 'set', table: 't', id: '1', key: 'k', value: NaN }),
    (e) => e instanceof OpError && e.field === 'value' && e.index === null,
  );
  const twoOps = {
    ops: [
      { type: 'delete', table: 't', id: '1' },
      { type: 'set', table: 't', id: '1' },
    ],
  };
  assert.throws(
    () => parseTransaction(twoOps),
    (e) => e instanceof OpError && String(e) === 'op 1, field "key": missing',
  );
  const tx = { id: '0B5E4F6A-1111-4222-8333-944455556666', ops: [{ type: 'delete', table: 't', id: 7 }] };
  const parsed = parseTransaction(tx, 10);
  assert.strictEqual(parsed.id, '0b5e4f6a-1111-4222-8333-944455556666');
  assert.strictEqual(parsed.ops[0].id, '7');
  assert.throws(() => parseTransaction(tx, 0), (e) => e instanceof OpError && e.field === 'ops');
  assert.strictEqual(parseTransaction({ id: null, ops: tx.ops }).id, null);
});

test('opToJson gives back the wire form of every op type', () => {
  const ops = [
    { type: 'set', table: 'tasks', id: '1', key: 'status', value: 'done', version: 3 },
    { type: 'set', table: 'tasks', id: '1', key: 'meta.color', remove: true, expect: 'red' },
    { type: 'set', table: 'tasks', id: '1', key: ['meta', 'a.b'], value: null, expect: null },
    { type: 'set-now', table: 'tasks', id: '1', key: 'updated_at' },
    { type: 'listInsert', table: 'tasks', id: '1', key: 'tags', value: 'x', position: { after: 'y' } },
    { type: 'listInsert', table: 'tasks', id: '1', key: 'tags', value: 'x', position: 'prepend' },
    { type: 'listRemove', table: 'tasks', id: '1', key: 'tags', value: 'x' },
    { type: 'create', table: 'tasks', id: '1', value: { title: 't' }, expect_absent: true },
    { type: 'create', table: 'tasks', id: '1', value: { title: 't' } },
    { type: 'delete', table: 'tasks', id: '1', expect_version: 2 },
    { type: 'delete', table: 'tasks', id: '1' },
  ];
  for (const op of ops) assert.deepStrictEqual(opToJson(parseOp(op)), op);
  // Defaults are left out or filled in as the Rust core does.
  assert.deepStrictEqual(
    opToJson(parseOp({ type: 'listInsert', table: 't', id: 1, key: 'k', value: 1 })),
    { type: 'listInsert', table: 't', id: '1', key: 'k', value: 1, position: 'append' },
  );
  assert.deepStrictEqual(
    opToJson(parseOp({ type: 'set', table: 't', id: '1', key: 'k', value: 1, remove: false })),
    { type: 'set', table: 't', id: '1', key: 'k', value: 1 },
  );
  assert.deepStrictEqual(
    opToJson(parseOp({ type: 'create', table: 't', id: '1', value: {}, expect_absent: false })),
    { type: 'create', table: 't', id: '1', value: {} },
  );
});

test('applyTransaction leaves its input untouched when an op fails', () => {
  const t1 = { id: 't1', version: 4, title: 'A', meta: { color: 'red', n: [1, 2] }, tags: ['a'] };
  const rows = new Map([
    ['tasks:t1', t1],
    ['tasks:t2', null],
  ]);
  const before = structuredClone([...rows]);
  const tx = parseTransaction({
    ops: [
      { type: 'set', table: 'tasks', id: 't1', key: 'meta.color', value: 'blue' },
      { type: 'listInsert', table: 'tasks', id: 't1', key: 'tags', value: 'b', position: 'prepend' },
      { type: 'create', table: 'tasks', id: 't2', value: { id: 't2' } },
      { type: 'delete', table: 'tasks', id: 't1' },
      { type: 'set', table: 'tasks', id: 't1', key: 'title', value: 'B', version: 4 },
    ],
  });
  assert.throws(
    () => applyTransaction(rows, tx.ops, NOW),
    (e) => e instanceof ApplyError && e.code === 'not_found' && e.index === 4,
  );
  assert.deepStrictEqual([...rows], before);
  assert.strictEqual(rows.get('tasks:t1'), t1);
  assert.strictEqual(rows.size, 2);

  const conflict = parseTransaction({
    ops: [
      { type: 'set', table: 'tasks', id: 't1', key: 'meta.n', value: [] },
      { type: 'set', table: 'tasks', id: 't1', key: 'title', value: 'B', version: 3 },
    ],
  });
  assert.throws(
    () => applyTransaction(rows, conflict.ops, NOW),
    (e) =>
      e instanceof ApplyError &&
      e.code === 'conflict' &&
      e.index === 1 &&
      e.expected === 3 &&
      e.current === 4,
  );
  assert.deepStrictEqual([...rows], before);
});

test('applyOp changes neither its row nor its op, and returns rows sharing nothing', () => {
  const row = { id: 't1', version: 1, meta: { color: 'red' }, tags: [{ k: 1 }, 'b'] };
  const given = structuredClone(row);
  const op = parseOp({ type: 'listInsert', table: 'tasks', id: 't1', key: 'tags', value: { k: 1 } });
  const opGiven = structuredClone(op);
  const { row: after, outcome } = applyOp(row, op, NOW);
  assert.deepStrictEqual(row, given);
  assert.deepStrictEqual(op, opGiven);
  assert.deepStrictEqual(after, { id: 't1', version: 1, meta: { color: 'red' }, tags: ['b', { k: 1 }] });
  assert.deepStrictEqual(outcome, {
    applied: true,
    inverse: { type: 'listInsert', table: 'tasks', id: 't1', key: 'tags', value: { k: 1 }, position: 'prepend' },
  });
  assert.notStrictEqual(after?.meta, row.meta);
  assert.notStrictEqual(/** @type {any} */ (after).tags[1], op.type === 'listInsert' && op.value);

  const skipped = applyOp(row, parseOp({ type: 'set', table: 'tasks', id: 't1', key: 'meta.color', value: 'x', expect: 'blue' }), NOW);
  assert.deepStrictEqual(skipped.outcome, { skipped: 'changed' });
  assert.deepStrictEqual(skipped.row, given);
  assert.notStrictEqual(skipped.row, row);

  const deleted = applyOp(row, parseOp({ type: 'delete', table: 'tasks', id: 't1' }), NOW);
  assert.strictEqual(deleted.row, null);
  assert.deepStrictEqual(row, given);
});

test('applying the inverse restores the rows', () => {
  const rows = new Map([
    ['tasks:t1', { id: 't1', version: 1, title: 'A', tags: ['a', 'b', 'c'], meta: { color: 'red' } }],
  ]);
  const tx = parseTransaction({
    ops: [
      { type: 'set', table: 'tasks', id: 't1', key: 'meta.size', value: 3 },
      { type: 'set', table: 'tasks', id: 't1', key: 'title', remove: true },
      { type: 'listInsert', table: 'tasks', id: 't1', key: 'tags', value: 'c', position: { before: 'a' } },
      { type: 'listRemove', table: 'tasks', id: 't1', key: 'tags', value: 'b' },
      { type: 'create', table: 'tasks', id: 't2', value: { id: 't2', title: 'New' } },
    ],
  });
  const done = applyTransaction(rows, tx.ops, NOW);
  const undo = parseTransaction({ ops: done.inverse });
  const undone = applyTransaction(done.rows, undo.ops, NOW);
  assert.deepStrictEqual(undone.skipped, []);
  assert.deepStrictEqual(undone.rows.get('tasks:t1'), rows.get('tasks:t1'));
  assert.strictEqual(undone.rows.get('tasks:t2'), null);
});

test('names such as __proto__ and constructor are plain keys', () => {
  const row = JSON.parse('{"id": "t1", "version": 1, "meta": {"__proto__": {"x": 1}}}');
  const { row: after, outcome } = applyOp(
    row,
    parseOp({ type: 'set', table: 't', id: 't1', key: 'meta.__proto__.y', value: 2 }),
    NOW,
  );
  assert.deepStrictEqual(Object.keys(/** @type {any} */ (after).meta), ['__proto__']);
  assert.deepStrictEqual(
    JSON.parse(JSON.stringify(after)).meta,
    JSON.parse('{"__proto__": {"x": 1, "y": 2}}'),
  );
  assert.strictEqual(/** @type {any} */ (outcome).inverse.remove, true);
  // An inherited name is not a value: the guard sees null, the key is absent.
  const guarded = applyOp(
    { id: 't1', meta: {} },
    parseOp({ type: 'set', table: 't', id: 't1', key: 'meta.constructor', value: 1, expect: null }),
    NOW,
  );
  assert.deepStrictEqual(guarded.row, { id: 't1', meta: { constructor: 1 } });
  assert.throws(
    () => applyOp({ id: 't1', toString: 'x' }, parseOp({ type: 'listInsert', table: 't', id: 't1', key: 'toString', value: 1 }), NOW),
    (e) => e instanceof ApplyError && e.code === 'wrong_type' && e.key === 'toString',
  );
});
