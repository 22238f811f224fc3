// rowsync's operation semantics for the browser client: a dependency-free port of the Rust
// core (core/src/). The shared vectors in tests/vectors/ pin both to the same behaviour.
//
// A row is a plain object of column name to JSON value. Ops are parsed from the wire format
// (parseOp, parseTransaction), applied to rows one at a time (applyOp, applyTransaction),
// and each applied op yields the op that undoes it, computed from the row as it was.
//
// Nothing here mutates its arguments: rows and ops come back as new objects that share
// nothing with the inputs.
//
// Where JavaScript cannot follow Rust exactly (numbers are doubles once JSON.parse has read
// them):
// - `1` and `1.0` are the same JS number, so an integer field written `1.0` on the wire
//   (an `id`, a `version`) is accepted here while the Rust core refuses it, and a
//   listInsert that swaps `1.0` for `1` at the same place is a no-op here (no inverse).
// - integer ids, `version` and `expect_version` must be safe integers (|n| < 2^53): past
//   that JSON.parse has already rounded them, so they are refused instead of being used
//   with the wrong digits. Send such ids as strings.
// - values must be JSON (null, booleans, finite numbers, strings, arrays, plain objects);
//   an op field whose value is `undefined` counts as absent, as JSON.stringify would drop it.

/** @typedef {null | boolean | number | string | JsonArray | JsonObject} Json */
/** @typedef {Json[]} JsonArray */
/** @typedef {{[name: string]: Json}} JsonObject */
/** @typedef {{[column: string]: Json}} Row  A row: column name to value. */

/**
 * A column, or a path into a json/jsonb column.
 * @typedef {{column: string, path: string[]}} Key
 */

/**
 * Where listInsert puts its value: the wire form, with a missing position read as "append".
 * @typedef {'append' | 'prepend' | {before: Json} | {after: Json}} Position
 */

/**
 * Fields every op has. `id` is the primary key's text form; `version` (null: none) is the
 * version the client based the op on, another version fails the transaction.
 * @typedef {{table: string, id: string, version: number | null}} OpBase
 */

/**
 * Writes `value` at `key`, or removes the key when `remove` is true (`value` is then
 * undefined). `expect` (undefined: no guard) skips the op unless the key still holds that
 * value, an absent key counting as null.
 * @typedef {OpBase & {type: 'set', key: Key, remove: boolean, value?: Json, expect?: Json}} SetOp
 */
/** @typedef {OpBase & {type: 'set-now', key: Key}} SetNowOp */
/** @typedef {OpBase & {type: 'listInsert', key: Key, value: Json, position: Position}} ListInsertOp */
/** @typedef {OpBase & {type: 'listRemove', key: Key, value: Json}} ListRemoveOp */
/**
 * `expectAbsent` (undo of a delete) skips instead of failing when the id is taken.
 * @typedef {OpBase & {type: 'create', value: Row, expectAbsent: boolean}} CreateOp
 */
/**
 * `expectVersion` (undo of a create; null: none) skips unless the row is still at that version.
 * @typedef {OpBase & {type: 'delete', expectVersion: number | null}} DeleteOp
 */
/** @typedef {SetOp | SetNowOp | ListInsertOp | ListRemoveOp | CreateOp | DeleteOp} Op */

/** @typedef {{[field: string]: Json}} OpJson  An op in its wire form. */

/**
 * A key as apps write it: a dotted path into the column (`"meta.color"`), or the path as
 * an array when a name holds a dot (`["meta", "size.px"]`).
 * @typedef {string | string[]} KeyInput
 */

/**
 * An op as apps write it (docs/sql/operations.md), before parsing.
 * @typedef {{type: 'set', table: string, id: string | number, key: KeyInput, value?: Json, remove?: boolean, expect?: Json, version?: number}
 *   | {type: 'set-now', table: string, id: string | number, key: KeyInput, version?: number}
 *   | {type: 'listInsert', table: string, id: string | number, key: KeyInput, value: Json, position?: Position, version?: number}
 *   | {type: 'listRemove', table: string, id: string | number, key: KeyInput, value: Json, version?: number}
 *   | {type: 'create', table: string, id: string | number, value: Row, expect_absent?: boolean}
 *   | {type: 'delete', table: string, id: string | number, expect_version?: number, version?: number}} WriteOp
 */

/** @typedef {'changed' | 'gone' | 'exists'} SkipReason */

/**
 * What applying one op did: applied (with the op that undoes it, null when nothing changed),
 * or skipped by its guard.
 * @typedef {{applied: true, inverse: OpJson | null} | {skipped: SkipReason}} Outcome
 */

/**
 * A skipped op as reported to the caller; `key` only for ops that have one.
 * @typedef {{index: number, table: string, id: string, key?: Json, reason: SkipReason}} Skip
 */

/** @typedef {{id: string | null, ops: Op[]}} Transaction */

/** @typedef {'not_found' | 'already_exists' | 'conflict' | 'wrong_type'} ApplyErrorCode */

/** The column every synced table carries; rowsync manages it, ops never set it. */
const VERSION_COLUMN = 'version';

/** The fields every op may have. */
const COMMON_FIELDS = ['type', 'table', 'id', 'version'];

/** @type {Map<string, string[]>} the fields each op type allows besides the common ones */
const ALLOWED_FIELDS = new Map([
  ['set', ['key', 'value', 'remove', 'expect']],
  ['set-now', ['key']],
  ['listInsert', ['key', 'value', 'position']],
  ['listRemove', ['key', 'value']],
  ['create', ['value', 'expect_absent']],
  ['delete', ['expect_version']],
]);

/** Key ops: the types whose ops carry a `key`. */
const KEY_TYPES = new Set(['set', 'set-now', 'listInsert', 'listRemove']);

// ---------------------------------------------------------------------------------------
// Errors

/** A malformed transaction or op: which op (if any), which field, and what is wrong. */
export class OpError extends Error {
  /**
   * @param {string} field the field at fault ("op" or "transaction" for the whole thing)
   * @param {string} message what is wrong with it
   * @param {number | null} [index] the op's index in its transaction
   */
  constructor(field, message, index = null) {
    super(message);
    this.name = 'OpError';
    /** @type {string} */
    this.field = field;
    /** @type {number | null} */
    this.index = index;
  }

  /** @returns {string} the Rust core's rendering: `op 1, field "key": missing` */
  toString() {
    const where = this.index === null ? '' : `op ${this.index}, `;
    return `${where}field "${this.field}": ${this.message}`;
  }
}

/** A well-formed op that cannot apply to the row as it is. */
export class ApplyError extends Error {
  /**
   * @param {ApplyErrorCode} code stable name, as in the shared vectors and on the wire
   * @param {string} message
   * @param {{expected?: number, current?: number | null, key?: string}} [details]
   *   `expected` and `current` for a conflict, `key` (dotted) for wrong_type
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'ApplyError';
    /** @type {ApplyErrorCode} */
    this.code = code;
    /** @type {number | null} the op's index, set by applyTransaction */
    this.index = null;
    if (details.expected !== undefined) {
      /** @type {number | undefined} the version the op was based on (conflict) */
      this.expected = details.expected;
      /** @type {number | null | undefined} the row's version, null if it has none (conflict) */
      this.current = details.current ?? null;
    }
    if (details.key !== undefined) {
      /** @type {string | undefined} the key at fault (wrong_type) */
      this.key = details.key;
    }
  }
}

/** @returns {ApplyError} */
function notFound() {
  return new ApplyError('not_found', 'row not found or not visible');
}

/** @returns {ApplyError} */
function alreadyExists() {
  return new ApplyError('already_exists', 'a row with this id already exists');
}

/**
 * @param {number} expected
 * @param {number | null} current
 * @returns {ApplyError}
 */
function conflict(expected, current) {
  const message =
    current === null
      ? `version conflict: expected ${expected}, row has no version`
      : `version conflict: expected ${expected}, row is at ${current}`;
  return new ApplyError('conflict', message, { expected, current });
}

/**
 * @param {Key} key
 * @returns {ApplyError}
 */
function notAList(key) {
  const name = keyToString(key);
  return new ApplyError('wrong_type', `"${name}" does not hold a list`, { key: name });
}

/**
 * @param {Key} key
 * @returns {ApplyError}
 */
function notAnObject(key) {
  const name = keyToString(key);
  return new ApplyError('wrong_type', `"${name}" runs through a value that is not an object`, {
    key: name,
  });
}

// ---------------------------------------------------------------------------------------
// JSON values

/**
 * Whether `object` has its own property `name` (not one inherited, like "constructor").
 * @param {object} object
 * @param {string} name
 * @returns {boolean}
 */
function hasOwn(object, name) {
  return Object.prototype.hasOwnProperty.call(object, name);
}

/**
 * Sets own property `name`, even "__proto__" (which plain assignment would not create).
 * @param {{[name: string]: any}} object
 * @param {string} name
 * @param {any} value
 */
function setOwn(object, name, value) {
  if (name === '__proto__') {
    Object.defineProperty(object, name, {
      value,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  } else {
    object[name] = value;
  }
}

/**
 * Whether `value` is a JSON object (not null, not an array).
 * @param {unknown} value
 * @returns {value is JsonObject}
 */
function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Whether `value` is a plain object: what JSON.parse makes of `{...}`.
 * @param {unknown} value
 * @returns {value is {[name: string]: unknown}}
 */
function isPlainObject(value) {
  if (!isObject(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Whether `value` is a JSON value all the way down.
 * @param {unknown} value
 * @param {Set<object>} [ancestors] the containers above `value` (to refuse cycles)
 * @returns {value is Json}
 */
function isJson(value, ancestors = new Set()) {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value);
    case 'object': {
      if (value === null) return true;
      if (ancestors.has(value)) return false;
      let items;
      if (Array.isArray(value)) {
        items = [];
        for (let i = 0; i < value.length; i++) {
          if (!(i in value)) return false;
          items.push(value[i]);
        }
      } else if (isPlainObject(value)) {
        items = Object.values(value);
      } else {
        return false;
      }
      ancestors.add(value);
      const ok = items.every((item) => isJson(item, ancestors));
      ancestors.delete(value);
      return ok;
    }
    default:
      return false;
  }
}

/**
 * A deep copy of a JSON value.
 * @template {Json} T
 * @param {T} value
 * @returns {T}
 */
function cloneJson(value) {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return /** @type {T} */ (value.map(cloneJson));
  /** @type {JsonObject} */
  const copy = {};
  for (const name of Object.keys(value)) setOwn(copy, name, cloneJson(value[name]));
  return /** @type {T} */ (copy);
}

/**
 * Equal as JSON values: numbers by value (`1` equals `1.0`, as in jsonb), objects by
 * content regardless of key order, arrays element by element. The one equality rowsync
 * uses (list dedupe, anchors, removal, guards).
 * @param {Json} a
 * @param {Json} b
 * @returns {boolean}
 */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return (
      Array.isArray(b) && a.length === b.length && a.every((item, i) => deepEqual(item, b[i]))
    );
  }
  if (isObject(a)) {
    if (!isObject(b) || Array.isArray(b)) return false;
    const names = Object.keys(a);
    return (
      names.length === Object.keys(b).length &&
      names.every((name) => hasOwn(b, name) && deepEqual(a[name], b[name]))
    );
  }
  return false;
}

/**
 * Orders strings by code point, as Rust orders `String`s (serde_json's maps are sorted so).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
function compareCodePoints(a, b) {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = /** @type {number} */ (a.codePointAt(i));
    const y = /** @type {number} */ (b.codePointAt(j));
    if (x !== y) return x < y ? -1 : 1;
    i += x > 0xffff ? 2 : 1;
    j += y > 0xffff ? 2 : 1;
  }
  return Number(i < a.length) - Number(j < b.length);
}

/**
 * The fields of a wire object that are present (an `undefined` value counts as absent), in
 * the order the Rust core visits them.
 * @param {{[name: string]: unknown}} object
 * @returns {string[]}
 */
function presentFields(object) {
  return Object.keys(object)
    .filter((name) => object[name] !== undefined)
    .sort(compareCodePoints);
}

/**
 * A field of a wire object; undefined when absent.
 * @param {{[name: string]: unknown}} object
 * @param {string} name
 * @returns {unknown}
 */
function field(object, name) {
  return hasOwn(object, name) ? object[name] : undefined;
}

/**
 * An integer version as the Rust core reads one from a row (`Value::as_i64`); null if the
 * value is not one.
 * @param {Json | undefined} value
 * @returns {number | null}
 */
function asVersion(value) {
  return typeof value === 'number' && Number.isInteger(value) && Math.abs(value) < 2 ** 63
    ? value
    : null;
}

// ---------------------------------------------------------------------------------------
// Keys

/**
 * Parses a key: `"meta.color"` or `["meta", "color"]` (the array form allows dots inside
 * names). The first name is the column, the rest a path into it.
 * @param {unknown} value
 * @returns {Key}
 * @throws {OpError} with field "key"
 */
export function parseKey(value) {
  /** @type {string[]} */
  let names;
  if (typeof value === 'string') {
    names = value.split('.');
  } else if (Array.isArray(value)) {
    names = [];
    for (let i = 0; i < value.length; i++) {
      const name = value[i];
      if (typeof name !== 'string') throw new OpError('key', 'path segments must be strings');
      names.push(name);
    }
  } else {
    throw new OpError('key', 'must be a column name, a dotted path or an array of names');
  }
  if (names.length === 0 || names.some((name) => name === '')) {
    throw new OpError('key', 'names in a key cannot be empty');
  }
  return { column: names[0], path: names.slice(1) };
}

/**
 * The wire form of a key: a dotted string when no name contains a dot, else an array.
 * @param {Key} key
 * @returns {string | string[]}
 */
export function keyToJson(key) {
  const names = [key.column, ...key.path];
  return names.some((name) => name.includes('.')) ? names : names.join('.');
}

/**
 * The dotted form of a key, as error messages name it.
 * @param {Key} key
 * @returns {string}
 */
function keyToString(key) {
  return [key.column, ...key.path].join('.');
}

/**
 * The value at `key`; undefined when a path leads nowhere.
 * @param {Row} row
 * @param {Key} key
 * @returns {Json | undefined}
 */
function keyGet(row, key) {
  if (!hasOwn(row, key.column)) return undefined;
  /** @type {Json} */
  let current = row[key.column];
  for (const name of key.path) {
    if (!isObject(current) || !hasOwn(current, name)) return undefined;
    current = current[name];
  }
  return current;
}

/**
 * The object held at `holder[name]`, a null there becoming an empty object.
 * @param {JsonObject} holder
 * @param {string} name
 * @param {Key} key the key being written (for the error)
 * @returns {JsonObject}
 * @throws {ApplyError} wrong_type when the value there is not an object
 */
function objectAt(holder, name, key) {
  const value = holder[name];
  if (value === null) {
    /** @type {JsonObject} */
    const created = {};
    setOwn(holder, name, created);
    return created;
  }
  if (!isObject(value)) throw notAnObject(key);
  return value;
}

/**
 * Writes `value` at `key` in `row` (mutated), creating missing objects along a path.
 * @param {Row} row
 * @param {Key} key
 * @param {Json} value
 * @throws {ApplyError} wrong_type when a path runs through a value that is not an object
 */
function keySet(row, key, value) {
  if (key.path.length === 0) {
    setOwn(row, key.column, value);
    return;
  }
  if (!hasOwn(row, key.column)) setOwn(row, key.column, null);
  /** @type {JsonObject} */
  let holder = row;
  let name = key.column;
  for (const next of key.path.slice(0, -1)) {
    const object = objectAt(holder, name, key);
    if (!hasOwn(object, next)) setOwn(object, next, null);
    holder = object;
    name = next;
  }
  setOwn(objectAt(holder, name, key), key.path[key.path.length - 1], value);
}

/**
 * Removes the value at `key` from `row` (mutated): a column becomes null, a path's last
 * name is dropped.
 * @param {Row} row
 * @param {Key} key
 * @throws {ApplyError} wrong_type when a path runs through a value that is not an object
 */
function keyRemove(row, key) {
  if (key.path.length === 0) {
    setOwn(row, key.column, null);
    return;
  }
  if (!hasOwn(row, key.column)) return;
  /** @type {Json} */
  let current = row[key.column];
  for (const name of key.path.slice(0, -1)) {
    if (current === null) return;
    if (!isObject(current)) throw notAnObject(key);
    if (!hasOwn(current, name)) return;
    current = current[name];
  }
  if (current === null) return;
  if (!isObject(current)) throw notAnObject(key);
  delete current[key.path[key.path.length - 1]];
}

// ---------------------------------------------------------------------------------------
// Lists: ordered sets, inserting a value that is there already moves it.

/**
 * @param {Json[]} list
 * @param {Json} value
 * @returns {number} the index of the first copy of `value`, -1 if none
 */
function indexOf(list, value) {
  return list.findIndex((item) => deepEqual(item, value));
}

/**
 * Removes every copy of `value` from `list` (plain SQL may have written duplicates).
 * @param {Json[]} list
 * @param {Json} value
 * @returns {{items: Json[], first: number}} the list without it, and the index of the first
 *   copy (-1 if none)
 */
function listWithout(list, value) {
  const first = indexOf(list, value);
  if (first < 0) return { items: list.slice(), first };
  return { items: list.filter((item) => !deepEqual(item, value)), first };
}

/**
 * Inserts `value` at `position`, moving it if present. A missing anchor falls back to
 * prepend (`before`) or append (`after`).
 * @param {Json[]} list
 * @param {Json} value
 * @param {Position} position
 * @returns {{items: Json[], old: number}} the new list and the index `value` was at (-1 if none)
 */
function listInsert(list, value, position) {
  const { items, first: old } = listWithout(list, value);
  let at;
  if (position === 'append') {
    at = items.length;
  } else if (position === 'prepend') {
    at = 0;
  } else if (hasOwn(position, 'before')) {
    at = Math.max(indexOf(items, /** @type {{before: Json}} */ (position).before), 0);
  } else {
    const i = indexOf(items, /** @type {{after: Json}} */ (position).after);
    at = i < 0 ? items.length : i + 1;
  }
  items.splice(at, 0, value);
  return { items, old };
}

/**
 * The position that puts a value back at `index` of `list` (the list it was in).
 * @param {Json[]} list
 * @param {number} index
 * @returns {Position}
 */
function positionOf(list, index) {
  return index >= 1 && index - 1 < list.length ? { after: list[index - 1] } : 'prepend';
}

/**
 * @param {unknown} value
 * @returns {Position}
 * @throws {OpError} with field "position"
 */
function parsePosition(value) {
  if (value === undefined || value === 'append') return 'append';
  if (value === 'prepend') return 'prepend';
  if (isPlainObject(value) && Object.keys(value).length === 1) {
    if (hasOwn(value, 'before')) return { before: cloneJson(/** @type {Json} */ (value.before)) };
    if (hasOwn(value, 'after')) return { after: cloneJson(/** @type {Json} */ (value.after)) };
  }
  throw new OpError(
    'position',
    'must be "append", "prepend", {"before": v} or {"after": v}',
  );
}

/**
 * @param {Position} position
 * @returns {Json}
 */
function positionToJson(position) {
  if (typeof position === 'string') return position;
  if (hasOwn(position, 'before')) {
    return { before: cloneJson(/** @type {{before: Json}} */ (position).before) };
  }
  return { after: cloneJson(/** @type {{after: Json}} */ (position).after) };
}

// ---------------------------------------------------------------------------------------
// Ops and their wire format

/**
 * An optional non-negative integer field.
 * @param {{[name: string]: unknown}} object
 * @param {string} name
 * @returns {number | null}
 * @throws {OpError}
 */
function optionalInt(object, name) {
  const value = field(object, name);
  if (value === undefined) return null;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) {
    if (!Number.isSafeInteger(value)) {
      throw new OpError(name, 'must be a non-negative integer below 2^53 in JavaScript');
    }
    return value;
  }
  throw new OpError(name, 'must be a non-negative integer');
}

/**
 * Parses one op from its wire form, naming the field of the first error.
 * @param {unknown} value
 * @returns {Op}
 * @throws {OpError} (its `index` is null: parseTransaction sets it)
 */
export function parseOp(value) {
  if (!isPlainObject(value)) throw new OpError('op', 'an op must be a JSON object');
  const type = field(value, 'type');
  if (typeof type !== 'string') throw new OpError('type', 'missing or not a string');
  const allowed = ALLOWED_FIELDS.get(type);
  if (allowed === undefined) {
    throw new OpError(
      'type',
      `unknown op type "${type}" (set, set-now, listInsert, listRemove, create, delete)`,
    );
  }
  const fields = presentFields(value);
  for (const name of fields) {
    if (!COMMON_FIELDS.includes(name) && !allowed.includes(name)) {
      throw new OpError(name, `not a field of a "${type}" op`);
    }
  }
  for (const name of fields) {
    if (!isJson(value[name])) {
      throw new OpError(
        name,
        'must be a JSON value (null, boolean, finite number, string, array or plain object)',
      );
    }
  }

  const table = field(value, 'table');
  if (typeof table !== 'string' || table === '') {
    throw new OpError('table', 'missing or not a non-empty string');
  }
  const rawId = field(value, 'id');
  /** @type {string} */
  let id;
  if (typeof rawId === 'string' && rawId !== '') {
    id = rawId;
  } else if (typeof rawId === 'number' && Number.isInteger(rawId)) {
    if (!Number.isSafeInteger(rawId)) {
      throw new OpError('id', 'an integer id must be below 2^53 in JavaScript: send it as a string');
    }
    id = String(rawId);
  } else {
    throw new OpError('id', 'missing, or not a non-empty string or an integer');
  }
  const version = optionalInt(value, 'version');
  const base = { table, id, version };

  const key = () => {
    const raw = field(value, 'key');
    if (raw === undefined) throw new OpError('key', 'missing');
    return parseKey(raw);
  };
  const required = () => {
    const raw = field(value, 'value');
    if (raw === undefined) throw new OpError('value', 'missing');
    return cloneJson(/** @type {Json} */ (raw));
  };

  /** @type {Op} */
  let op;
  switch (type) {
    case 'set': {
      const k = key();
      const remove = field(value, 'remove');
      if (remove !== undefined && typeof remove !== 'boolean') {
        throw new OpError('remove', 'must be a boolean');
      }
      const raw = field(value, 'value');
      const expect = field(value, 'expect');
      /** @type {SetOp} */
      const set = { type, ...base, key: k, remove: remove === true };
      if (remove === true) {
        if (raw !== undefined) throw new OpError('value', 'a removing set takes no value');
      } else {
        if (raw === undefined) throw new OpError('value', 'missing');
        set.value = cloneJson(/** @type {Json} */ (raw));
      }
      if (expect !== undefined) set.expect = cloneJson(/** @type {Json} */ (expect));
      op = set;
      break;
    }
    case 'set-now':
      op = { type, ...base, key: key() };
      break;
    case 'listInsert': {
      const k = key();
      const v = required();
      op = { type, ...base, key: k, value: v, position: parsePosition(field(value, 'position')) };
      break;
    }
    case 'listRemove': {
      const k = key();
      op = { type, ...base, key: k, value: required() };
      break;
    }
    case 'create': {
      if (version !== null) throw new OpError('version', 'a create has no version to check');
      const row = field(value, 'value');
      if (!isPlainObject(row)) throw new OpError('value', 'must be an object of columns');
      const expectAbsent = field(value, 'expect_absent');
      if (expectAbsent !== undefined && typeof expectAbsent !== 'boolean') {
        throw new OpError('expect_absent', 'must be a boolean');
      }
      op = {
        type,
        ...base,
        value: cloneJson(/** @type {Row} */ (row)),
        expectAbsent: expectAbsent === true,
      };
      break;
    }
    default:
      op = { type: 'delete', ...base, expectVersion: optionalInt(value, 'expect_version') };
  }
  if ('key' in op && op.key.column === VERSION_COLUMN) {
    throw new OpError('key', 'version is managed by rowsync');
  }
  return op;
}

/**
 * The wire form of an op, with the same fields as the Rust core's `Op::to_json`: `version`
 * only when set, `remove: true` instead of `value` for a removing set, `expect` only when
 * guarded, `position` always on a listInsert, `expect_absent` only when true,
 * `expect_version` only when set.
 * @param {Op} op
 * @returns {OpJson}
 */
export function opToJson(op) {
  /** @type {OpJson} */
  const json = { type: op.type, table: op.table, id: op.id };
  if (op.version !== null && op.version !== undefined) json.version = op.version;
  if ('key' in op && KEY_TYPES.has(op.type)) json.key = keyToJson(op.key);
  switch (op.type) {
    case 'set':
      if (op.remove) json.remove = true;
      else json.value = cloneJson(/** @type {Json} */ (op.value));
      if (op.expect !== undefined) json.expect = cloneJson(op.expect);
      break;
    case 'set-now':
      break;
    case 'listInsert':
      json.value = cloneJson(op.value);
      json.position = positionToJson(op.position);
      break;
    case 'listRemove':
      json.value = cloneJson(op.value);
      break;
    case 'create':
      json.value = cloneJson(op.value);
      if (op.expectAbsent) json.expect_absent = true;
      break;
    case 'delete':
      if (op.expectVersion !== null && op.expectVersion !== undefined) {
        json.expect_version = op.expectVersion;
      }
      break;
  }
  return json;
}

// ---------------------------------------------------------------------------------------
// Transactions

/**
 * Whether `s` is a UUID in its hyphenated text form (any case).
 * @param {string} s
 * @returns {boolean}
 */
function isUuid(s) {
  const groups = s.split('-');
  const lengths = [8, 4, 4, 4, 12];
  return (
    groups.length === 5 &&
    groups.every((group, i) => group.length === lengths[i] && /^[0-9a-fA-F]*$/.test(group))
  );
}

/**
 * Parses `{"id": "<uuid>", "ops": [...]}`, naming the op and field of the first error. The
 * id (optional, null allowed) is a client-chosen UUID, returned lower-cased.
 * @param {unknown} value
 * @param {number} [maxOps] the most ops a transaction may have
 * @returns {Transaction}
 * @throws {OpError}
 */
export function parseTransaction(value, maxOps = 1000) {
  if (!isPlainObject(value)) throw new OpError('transaction', 'must be a JSON object');
  const extra = presentFields(value).find((name) => name !== 'id' && name !== 'ops');
  if (extra !== undefined) throw new OpError(extra, 'not a field of a transaction');
  const rawId = field(value, 'id');
  /** @type {string | null} */
  let id = null;
  if (typeof rawId === 'string' && isUuid(rawId)) {
    id = rawId.toLowerCase();
  } else if (rawId !== undefined && rawId !== null) {
    throw new OpError('id', 'must be a UUID');
  }
  const ops = field(value, 'ops');
  // An empty list applies nothing: it is the inverse of a transaction that changed
  // nothing, and an inverse must always be appliable.
  if (!Array.isArray(ops)) {
    throw new OpError('ops', 'must be an array');
  }
  if (ops.length > maxOps) {
    throw new OpError('ops', `${ops.length} ops, the limit is ${maxOps}`);
  }
  const parsed = [];
  for (let i = 0; i < ops.length; i++) {
    try {
      parsed.push(parseOp(ops[i]));
    } catch (error) {
      if (error instanceof OpError) error.index = i;
      throw error;
    }
  }
  return { id, ops: parsed };
}

// ---------------------------------------------------------------------------------------
// Applying ops

/**
 * The shortest prefix of `key` that writing at `key` would create: the first object on its
 * path that is missing or null; null when every object on the path exists.
 * @param {Row} row
 * @param {Key} key
 * @returns {Key | null}
 */
function createdAt(row, key) {
  /** @type {Key} */
  const prefix = { column: key.column, path: [] };
  for (const name of key.path) {
    if (!isObject(keyGet(row, prefix))) return prefix;
    prefix.path = [...prefix.path, name];
  }
  return null;
}

/**
 * Writes or removes (`value` undefined) the value at `key` in `row` (mutated); returns the
 * op that restores the old value, guarded by the new one, or null when nothing changed. A
 * write through objects that did not exist (`meta.new.x` with no `meta.new`) is restored
 * at the first of them, so that undoing it removes what it created, not only its last name.
 * @param {Row} row
 * @param {Key} key
 * @param {Json | undefined} value
 * @param {OpBase} base table and id of the inverse
 * @returns {SetOp | null}
 */
function writeKey(row, key, value, base) {
  const old = keyGet(row, key);
  let unchanged;
  if (old === undefined) unchanged = value === undefined;
  else if (value === undefined) unchanged = key.path.length === 0 && old === null;
  else unchanged = deepEqual(old, value);
  if (unchanged) return null;
  const first = value === undefined ? null : createdAt(row, key);
  const restored = first ?? key;
  const previous = first === null ? old : keyGet(row, first);
  if (value === undefined) keyRemove(row, key);
  else keySet(row, key, cloneJson(value));
  const written = keyGet(row, restored);
  const restore = previous !== undefined ? previous : restored.path.length === 0 ? null : undefined;
  /** @type {SetOp} */
  const inverse = { type: 'set', ...base, key: restored, remove: restore === undefined };
  if (restore !== undefined) inverse.value = restore;
  inverse.expect = written === undefined ? null : written;
  return inverse;
}

/**
 * The listInsert that puts `before[index]` back where it was, spelled as it was.
 * @param {OpBase} base
 * @param {Key} key
 * @param {Json[]} before
 * @param {number} index
 * @returns {Op}
 */
function reinsert(base, key, before, index) {
  return { type: 'listInsert', ...base, key, value: cloneJson(before[index]), position: positionOf(before, index) };
}

/**
 * Writes a list op's result `items` and returns `inverse`, the list op that undoes it,
 * when that restores `before` exactly. It does not when the list held equal copies (plain
 * SQL can write them): an anchor or a removed value then names more than one place, and
 * the whole list is restored instead.
 * @param {Row} row
 * @param {Key} key
 * @param {Json[]} before
 * @param {Json[]} items
 * @param {Op} inverse a listInsert or listRemove
 * @param {OpBase} base table and id of the inverse
 * @returns {Op | null}
 */
function listInverse(row, key, before, items, inverse, base) {
  const trial =
    inverse.type === 'listRemove'
      ? listWithout(items, inverse.value).items
      : inverse.type === 'listInsert'
        ? listInsert(items, inverse.value, inverse.position).items
        : null;
  if (trial === null) throw new TypeError('a list op is undone by a list op');
  if (!deepEqual(trial, before)) return writeKey(row, key, items, base);
  keySet(row, key, items);
  return inverse;
}

/**
 * The list at `key`: a missing or null value is an empty list.
 * @param {Row} row
 * @param {Key} key
 * @returns {Json[]}
 * @throws {ApplyError} wrong_type when the value is not a list
 */
function listAt(row, key) {
  const value = keyGet(row, key);
  if (value === undefined || value === null) return [];
  if (Array.isArray(value)) return value;
  throw notAList(key);
}

/**
 * Applies `op` to `row`, which this function owns and may change in place.
 * @param {Row | null} row
 * @param {Op} op
 * @param {Json} now
 * @returns {{row: Row | null, outcome: {applied: true, inverse: Op | null} | {skipped: SkipReason}}}
 * @throws {ApplyError}
 */
function applyOwned(row, op, now) {
  if (op.version !== null && op.version !== undefined) {
    if (row === null) throw notFound();
    const current = asVersion(row[VERSION_COLUMN]);
    if (current !== op.version) throw conflict(op.version, current);
  }
  const base = { table: op.table, id: op.id, version: null };
  /** @param {Op | null} inverse */
  const applied = (inverse) => ({ applied: /** @type {true} */ (true), inverse });
  /** @param {SkipReason} reason */
  const skip = (reason) => ({ row, outcome: { skipped: reason } });

  switch (op.type) {
    case 'create': {
      if (row !== null) {
        if (op.expectAbsent) return skip('exists');
        throw alreadyExists();
      }
      // A row created by one transaction is written once, so it starts at version 1; the
      // inverse deletes it only while nobody else has changed it since.
      const created = cloneJson(op.value);
      setOwn(created, VERSION_COLUMN, 1);
      return {
        row: created,
        outcome: applied({ type: 'delete', ...base, expectVersion: 1 }),
      };
    }
    case 'delete': {
      if (row === null) {
        if (op.expectVersion !== null && op.expectVersion !== undefined) return skip('gone');
        throw notFound();
      }
      if (op.expectVersion !== null && op.expectVersion !== undefined) {
        if (asVersion(row[VERSION_COLUMN]) !== op.expectVersion) return skip('changed');
      }
      const old = row;
      delete old[VERSION_COLUMN];
      return {
        row: null,
        outcome: applied({ type: 'create', ...base, value: old, expectAbsent: true }),
      };
    }
    case 'set': {
      if (row === null) {
        if (op.expect !== undefined) return skip('gone');
        throw notFound();
      }
      if (op.expect !== undefined) {
        const current = keyGet(row, op.key);
        if (!deepEqual(current === undefined ? null : current, op.expect)) return skip('changed');
      }
      const value = op.remove ? undefined : op.value;
      return { row, outcome: applied(writeKey(row, op.key, value, base)) };
    }
    case 'set-now': {
      if (row === null) throw notFound();
      if (now === undefined) throw new TypeError('set-now needs the transaction timestamp `now`');
      return { row, outcome: applied(writeKey(row, op.key, now, base)) };
    }
    case 'listInsert': {
      if (row === null) throw notFound();
      const before = listAt(row, op.key);
      const { items, old } = listInsert(before, cloneJson(op.value), op.position);
      if (deepEqual(items, before)) return { row, outcome: applied(null) };
      // A list that was null or missing is restored as it was, not as [].
      const current = keyGet(row, op.key);
      if (current === undefined || current === null) {
        return { row, outcome: applied(writeKey(row, op.key, items, base)) };
      }
      // A moved value goes back as it was spelled (2.0, not the op's 2).
      /** @type {Op} */
      const inverse =
        old < 0 ? { type: 'listRemove', ...base, key: op.key, value: op.value } : reinsert(base, op.key, before, old);
      return { row, outcome: applied(listInverse(row, op.key, before, items, inverse, base)) };
    }
    case 'listRemove': {
      if (row === null) throw notFound();
      const before = listAt(row, op.key);
      const { items, first } = listWithout(before, op.value);
      if (first < 0) return { row, outcome: applied(null) };
      const inverse = reinsert(base, op.key, before, first);
      return { row, outcome: applied(listInverse(row, op.key, before, items, inverse, base)) };
    }
    default:
      throw new TypeError(`not a parsed op: ${JSON.stringify(/** @type {any} */ (op).type)}`);
  }
}

/**
 * Applies a parsed op to a row (null: no such row). Neither argument is changed: the row
 * returned is a new object (null once deleted), even when the op changed nothing.
 * @param {Row | null | undefined} row
 * @param {Op} op from parseOp or parseTransaction
 * @param {Json} now the transaction's timestamp, written by set-now
 * @returns {{row: Row | null, outcome: Outcome}}
 * @throws {ApplyError} not_found, already_exists, conflict or wrong_type (its index null)
 */
export function applyOp(row, op, now) {
  const owned = row === null || row === undefined ? null : cloneJson(row);
  const result = applyOwned(owned, op, now);
  const outcome = result.outcome;
  if ('skipped' in outcome) return { row: result.row, outcome };
  return {
    row: result.row,
    outcome: { applied: true, inverse: outcome.inverse === null ? null : opToJson(outcome.inverse) },
  };
}

/**
 * The key of a row in the maps applyTransaction reads and returns: "table:id".
 * @param {string} table
 * @param {string} id
 * @returns {string}
 */
export function rowKey(table, id) {
  return `${table}:${id}`;
}

/**
 * Applies parsed ops in order, all or none. `rows` maps "table:id" (see rowKey) to the row
 * or null; a row missing from the map is taken not to exist. The map given is never changed:
 * on success a new map comes back, holding every row an op touched (null when it does not
 * exist); on error nothing is returned.
 * @param {Map<string, Row | null>} rows
 * @param {Op[]} ops from parseTransaction
 * @param {Json} now the transaction's timestamp, written by set-now
 * @returns {{rows: Map<string, Row | null>, inverse: OpJson[], skipped: Skip[]}} `inverse`
 *   undoes the transaction (the ops' inverses, last op first); `skipped` lists the guarded
 *   ops that found the row changed and left it alone
 * @throws {ApplyError} with `index` the op that failed
 */
export function applyTransaction(rows, ops, now) {
  /** @type {Map<string, Row | null>} rows this transaction owns (copies) */
  const touched = new Map();
  /** @type {OpJson[]} */
  const inverse = [];
  /** @type {Skip[]} */
  const skipped = [];
  ops.forEach((op, index) => {
    const k = rowKey(op.table, op.id);
    let row;
    if (touched.has(k)) {
      row = /** @type {Row | null} */ (touched.get(k));
    } else {
      const given = rows.get(k);
      row = given === null || given === undefined ? null : cloneJson(given);
    }
    let result;
    try {
      result = applyOwned(row, op, now);
    } catch (error) {
      if (error instanceof ApplyError) error.index = index;
      throw error;
    }
    touched.set(k, result.row);
    const outcome = result.outcome;
    if ('skipped' in outcome) {
      skipped.push({
        index,
        table: op.table,
        id: op.id,
        ...('key' in op && KEY_TYPES.has(op.type) ? { key: keyToJson(op.key) } : {}),
        reason: outcome.skipped,
      });
    } else if (outcome.inverse !== null) {
      inverse.push(opToJson(outcome.inverse));
    }
  });
  inverse.reverse();
  const next = new Map(rows);
  for (const [k, row] of touched) next.set(k, row);
  return { rows: next, inverse, skipped };
}
