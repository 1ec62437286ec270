// The side panel's verdict against the receipt widget's rule: verdict_cases.json is written
// from jupyter_rapha/verdict.py (python -m tests.researcher.test_verdict) and replayed here.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { verdict } = require('../test-build/model.js');

const cases = JSON.parse(fs.readFileSync(path.join(__dirname, 'verdict_cases.json'), 'utf-8'));

test('there are cases for every verdict kind', () => {
  assert.deepEqual([...new Set(cases.map(c => c.verdict.kind))].sort(), ['fail', 'pass', 'pending', 'warn']);
});

for (const c of cases) {
  test(`verdict, same as the receipt widget: ${c.title}`, () => {
    const got = verdict(c.report);
    assert.deepEqual({ kind: got.kind, label: got.label, colour: got.colour }, c.verdict);
  });
}
