// The differential test's JavaScript half (differential.rs, beside it, writes the cases):
// reads {"now", "cases": [{"rows": {"table:id": row}, "tx"}]} on stdin and prints, per
// case, what ops.js makes of it: a parse error, an apply error, or the rows, inverse and
// skipped ops, and the rows after applying that inverse.

import { readFileSync } from 'node:fs';
import { applyTransaction, parseTransaction, OpError, ApplyError } from '../../client/src/ops.js';

const input = JSON.parse(readFileSync(0, 'utf8'));
const results = input.cases.map(({ rows, tx }) => {
  let parsed;
  try {
    parsed = parseTransaction(tx, 1000);
  } catch (error) {
    if (!(error instanceof OpError)) throw error;
    return { parse_error: { index: error.index, field: error.field } };
  }
  const before = new Map(Object.entries(rows));
  let outcome;
  try {
    outcome = applyTransaction(before, parsed.ops, input.now);
  } catch (error) {
    if (!(error instanceof ApplyError)) throw error;
    return { error: { code: error.code, index: error.index } };
  }
  const undone = applyTransaction(outcome.rows, parseTransaction({ ops: outcome.inverse }).ops, input.now);
  return {
    rows: Object.fromEntries(outcome.rows),
    inverse: outcome.inverse,
    skipped: outcome.skipped,
    undone: Object.fromEntries(undone.rows),
  };
});
process.stdout.write(JSON.stringify(results));
