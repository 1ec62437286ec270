// The side panel's logic (src/model.ts, compiled to test-build/ by `npm test`).
const test = require('node:test');
const assert = require('node:assert/strict');
const {
  FINAL_STATES, VERDICT_COLOURS, jobRow, jobRows, progressText, verdict, errorMessage, unreachable, unreachableEdges,
  costText
} = require('../test-build/model.js');

test('a running job shows its counters and can be cancelled, not verified', () => {
  const row = jobRow({
    job_id: 'a'.repeat(32), state: 'running', site: 'north', dataset: 'cxr',
    progress: { records_used: 12, cohort_size: 40, batches: 6, epochs: 2 }
  });
  assert.equal(row.title, 'cxr @ north');
  assert.equal(row.short, 'aaaaaaaa');
  assert.equal(row.detail, '12 of 40 records, 6 batches, epoch 2');
  assert.equal(row.canCancel, true);
  assert.equal(row.canVerify, false);
});

test('a denied job shows the gates\' reasons; a failed one its error type and cell line only', () => {
  const denied = jobRow({ job_id: 'b'.repeat(32), state: 'denied', reasons: ['field PatientName not granted', 7] });
  assert.equal(denied.detail, 'field PatientName not granted');
  assert.equal(denied.canCancel || denied.canVerify, false);
  const failed = jobRow({ job_id: 'c'.repeat(32), state: 'failed', error: { type: 'KeyError', line: 3 } });
  assert.equal(failed.detail, 'KeyError at line 3 of the cell');
  const completed = jobRow({ job_id: 'd'.repeat(32), state: 'completed', progress: {} });
  assert.equal(completed.canVerify, true);
  assert.equal(completed.detail, '');
});

test('malformed job JSON shows as "?" and a list without ids drops them', () => {
  const row = jobRow({ job_id: 5, state: null, progress: { records_used: -1, batches: 'x' } });
  assert.equal(row.id, '?');
  assert.equal(row.state, 'unknown');
  assert.equal(row.detail, '');
  assert.deepEqual(jobRows({ jobs: [null, { job_id: 'e'.repeat(32), state: 'submitted' }] }).map(r => r.state),
    ['submitted']);
  assert.throws(() => jobRows({ nope: [] }), /without a job list/);
  assert.equal(progressText(null), '');
});

test('the verdict is decided by the worst check, and an empty report is never verified', () => {
  const check = (name, status) => ({ name, status, detail: `${name} detail` });
  const pass = verdict({ checks: [check('signature', 'pass'), check('anchor', 'pass')] });
  assert.equal(pass.kind, 'pass');
  assert.equal(pass.colour, VERDICT_COLOURS.pass);
  assert.deepEqual(pass.checks.map(c => [c.badge, c.name, c.detail]),
    [['PASS', 'signature', 'signature detail'], ['PASS', 'anchor', 'anchor detail']]);
  assert.equal(verdict({ checks: [check('attestation', 'warn'), check('anchor', 'pass')] }).kind, 'warn');
  assert.equal(verdict({ checks: [check('anchor', 'pending'), check('x', 'warn')] }).kind, 'pending');
  assert.equal(verdict({ checks: [check('weights', 'fail')] }).label, 'not verified: weights');
  assert.equal(verdict({ checks: [] }).kind, 'fail');
  assert.equal(verdict('garbage').kind, 'fail');
  const skipped = verdict({ offline: true, checks: [check('s', 'pass'), check('anchor', 'skipped'), check('q', 7)] });
  assert.deepEqual(skipped.checks.map(c => c.badge), ['PASS', 'SKIP', 'FAIL']);
  assert.deepEqual(verdict({ notes: ['no weights beside it'], checks: [check('s', 'pass')] }).notes,
    ['no weights beside it']);
});

test('server errors read as their message and reasons, or as the HTTP status', () => {
  assert.equal(errorMessage(403, { error: { message: 'denied', reasons: ['budget', 'purpose'] } }),
    'denied: budget; purpose');
  assert.equal(errorMessage(404, { error: { message: 'no job x' } }), 'no job x');
  assert.equal(errorMessage(502, 'x'), 'the server answered HTTP 502');
  assert.match(errorMessage(404, '<html>404: Not Found</html>'),
    /server extension is not enabled: run `jupyter server extension enable jupyter_rapha`/);
});

test('a cancelled job is final and shows as cancelled, with nothing to cancel or verify', () => {
  const row = jobRow({ job_id: 'f'.repeat(32), state: 'cancelled', reasons: ['cancelled by the researcher'],
    progress: { records_used: 12, cohort_size: 32 } });
  assert.equal(row.state, 'cancelled');
  assert.equal(row.detail, 'cancelled by the researcher');
  assert.equal(row.canCancel || row.canVerify, false);
  assert.ok(FINAL_STATES.includes('cancelled'));
});

test('a job whose edge stopped answering shows as last seen, not as running', () => {
  const row = jobRow({ job_id: 'a'.repeat(32), state: 'running', site: 'north', dataset: 'cxr', edge_unreachable: true,
    progress: { records_used: 12, cohort_size: 40 } });
  assert.equal(row.state, 'unreachable');
  assert.equal(row.stateText, 'edge unreachable (last seen: running)');
  assert.equal(row.detail, '12 of 40 records');
  assert.equal(row.canCancel || row.canVerify, false);
  const done = jobRow({ job_id: 'b'.repeat(32), state: 'completed', edge_unreachable: true });
  assert.equal(done.stateText, 'completed'); // a final state stays true however the edge is now
  const reachable = jobRow({ job_id: 'c'.repeat(32), state: 'running' });
  assert.equal(reachable.stateText, 'running');
  assert.equal(unreachable(reachable, 'server').stateText, 'server unreachable (last seen: running)');
  assert.deepEqual(unreachableEdges({ jobs: [], unreachable: { north: 'cannot reach the edge' } }),
    ['edge north unreachable: cannot reach the edge']);
  assert.deepEqual(unreachableEdges({ jobs: [] }), []);
});

test('a held job is neither final nor cancellable; a refused one shows why its release was refused', () => {
  const { JOB_STATES, TERMINAL_STATES, CANCELLABLE_STATES } = require('../test-build/contract.js');
  assert.deepEqual(FINAL_STATES, TERMINAL_STATES);
  assert.ok(JOB_STATES.includes('held') && !FINAL_STATES.includes('held') && !CANCELLABLE_STATES.includes('held'));
  const held = jobRow({ job_id: 'f'.repeat(32), state: 'held' });
  assert.equal(held.canCancel || held.canVerify, false);
  assert.equal(held.stateText, 'held: checks running');
  assert.equal(unreachable(held, 'edge').stateText, 'edge unreachable (last seen: held)');
  const refused = jobRow({ job_id: 'f'.repeat(32), state: 'refused', reasons: ['copies: a record in the weights'] });
  assert.equal(refused.detail, 'copies: a record in the weights');
  assert.equal(refused.stateText, 'release refused');
  assert.equal(unreachable(refused, 'edge'), refused);
});

test('a job that says how many epochs it asked for shows epoch k/N', () => {
  const row = jobRow({ job_id: 'a'.repeat(32), state: 'running', epochs_asked: 3,
    progress: { records_used: 12, cohort_size: 40, batches: 6, epochs: 2 } });
  assert.equal(row.detail, '12 of 40 records, 6 batches, epoch 2/3');
  assert.equal(progressText({ epochs: 2 }, 'x'), 'epoch 2');
});

test('a held job says whether its checks run or it waits for review, with the figures so far', () => {
  const running = jobRow({
    job_id: 'f'.repeat(32), state: 'held', progress: {
      records_used: 48, cohort_size: 48, checks_total: 3, checks_done: 2,
      copies_records_matched: 0, copies_max_correlation: 0.21, parameters_per_record: 20.8333
    }
  });
  assert.equal(running.stateText, 'held: checks running (2/3)');
  assert.equal(running.detail, '48 of 48 records; record copies 0 (max r 0.21), 20.83 params/record');
  assert.equal(running.canCancel || running.canVerify, false);
  assert.equal(FINAL_STATES.includes('held'), false);
  const review = jobRow({
    job_id: 'f'.repeat(32), state: 'held',
    progress: { checks_total: 3, checks_done: 3, review_needed: 1, approvals: 1, approvals_needed: 2, mia_checkable: 0 }
  });
  assert.equal(review.stateText, 'held for review (1/2 approvals)');
  assert.equal(review.detail, 'MIA not checkable');
  const refused = jobRow({ job_id: 'f'.repeat(32), state: 'refused', reasons: ['release: 48 of the records copied'] });
  assert.equal(refused.detail, 'release: 48 of the records copied');
});

test('a job awaiting approval is active and cancellable, worded for the researcher', () => {
  const { CANCELLABLE_STATES, ACTIVE_STATES } = require('../test-build/contract.js');
  assert.ok(CANCELLABLE_STATES.includes('awaiting_approval') && ACTIVE_STATES.includes('awaiting_approval'));
  const waiting = jobRow({ job_id: 'f'.repeat(32), state: 'awaiting_approval' });
  assert.equal(waiting.stateText, 'awaiting approval');
  assert.equal(waiting.canCancel, true);
});

test('a job on a priced dataset shows its cost: so far, in the end, or refunded', () => {
  const cost = { price_per_record: '0.01', currency: 'GBP', max: '0.50', charged: '0.37' };
  assert.equal(jobRow({ job_id: 'e'.repeat(32), state: 'running', cost }).cost,
    'cost so far 0.37 GBP (0.01 per record; at most 0.50)');
  assert.equal(jobRow({ job_id: 'e'.repeat(32), state: 'completed', cost }).cost,
    'cost 0.37 GBP (0.01 per record; at most 0.50)');
  assert.equal(jobRow({ job_id: 'e'.repeat(32), state: 'denied', cost: { ...cost, charged: '0' } }).cost,
    'cost 0 GBP: refunded (at most 0.50 was locked)');
  assert.equal(jobRow({ job_id: 'e'.repeat(32), state: 'running' }).cost, '');
  assert.equal(costText({ ...cost, charged: '1e9' }, 'running'), '');
});

test('a DP job shows the trainer\'s steps and epochs and a privacy line: the budget, then the spent', () => {
  const running = jobRow({
    job_id: 'a'.repeat(32), state: 'running', epochs_asked: 1,
    progress: { records_used: 47, cohort_size: 48, batches: 9, epochs: 2, epochs_total: 2, steps: 9, steps_total: 12,
      epsilon_target: 8, delta: 0.001 }
  });
  assert.equal(running.detail, '47 of 48 records, 9/12 steps, epoch 2/2');
  assert.equal(running.privacy, 'DP: epsilon budget 8 (delta 0.001)');
  const done = jobRow({
    job_id: 'b'.repeat(32), state: 'completed',
    progress: { epochs: 2, epochs_total: 2, steps: 12, steps_total: 12, epsilon_target: 8, epsilon_spent: 7.99885,
      delta: 0.001 }
  });
  assert.equal(done.privacy, 'DP: epsilon 7.999 spent of 8 (delta 0.001)');
  assert.equal(jobRow({ job_id: 'c'.repeat(32), state: 'running', progress: { epsilon_target: 'x' } }).privacy, '');
});
