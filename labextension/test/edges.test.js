// The side panel's edges view (src/edges.ts): the environment summary against the Python
// rule (edge_cases.json, written by python -m tests.researcher.test_edges_view), and rows.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { edgeRow, edgeRows, environmentSummary } = require('../test-build/edges.js');

const cases = JSON.parse(fs.readFileSync(path.join(__dirname, 'edge_cases.json'), 'utf-8'));

for (const c of cases) {
  test(`environment summary, same as rapha edges: ${c.title}`, () => {
    assert.equal(environmentSummary(c.environment), c.summary);
  });
}

test('a verified edge shows its attestation, datasets and environment', () => {
  const row = edgeRow({
    name: 'north', edge_id: 'demo-edge', healthy: true, catalog: 'verified',
    attestation: { backend: 'unsafe_software', unsafe: true, summary: 'software stand-in' },
    datasets: ['synthetic-cxr', 'cxr-north'], environment: cases[0].environment
  });
  assert.equal(row.title, 'demo-edge (north)');
  assert.deepEqual(row.lines, ['attests with unsafe_software (UNSAFE)', 'datasets: synthetic-cxr, cxr-north',
    cases[0].summary]);
});

test('an edge without a listing says so; a refused catalog shows only why', () => {
  const unlisted = edgeRow({ name: 'south', edge_id: 'south', healthy: true, attestation: { backend: 'tdx' },
    datasets: [] });
  assert.deepEqual(unlisted.lines, ['attests with tdx', 'datasets: none', 'environment not listed by this edge']);
  const refused = edgeRow({ name: 'east', healthy: false, catalog: 'refused', problem: 'not signed by its pinned key',
    environment: cases[0].environment });
  assert.equal(refused.healthy, false);
  assert.deepEqual(refused.lines, ['catalog not trusted: not signed by its pinned key']);
});

test('an answer without an edge list is an error, not an empty view', () => {
  assert.throws(() => edgeRows({}), /without an edge list/);
  assert.equal(edgeRows({ edges: [{ name: 'a', healthy: false }] }).length, 1);
});
