// The side panel's loss chart (src/chart.ts): which series, its axes, the rule of the
// receipt widget (jupyter_rapha/receipt_chart.py), and the note while nothing is released.
const test = require('node:test');
const assert = require('node:assert/strict');
const { RELEASED_AFTER_CHECKS, chartLayout, lossCurve, niceTicks, WIDTH, HEIGHT } = require('../test-build/chart.js');
const { jobRow, timingText, clock } = require('../test-build/model.js');

test('the released loss is drawn per epoch when it holds one value per epoch asked, else per step', () => {
  assert.deepEqual(lossCurve({ loss: [0.61, 0.42, 0.28], accuracy: [0.5, 0.6, 0.7] }, 3),
    { name: 'loss', values: [0.61, 0.42, 0.28], xLabel: 'epoch' });
  assert.equal(lossCurve({ loss: [0.61, 0.42, 0.28] }, 2).xLabel, 'step');
  assert.equal(lossCurve({ loss: [0.61, 0.42, 0.28] }, null).xLabel, 'step');
  assert.deepEqual(lossCurve({ val_loss: [1, 'x', null, 0.5] }), { name: 'val_loss', values: [1, 0.5], xLabel: 'step' });
  assert.equal(lossCurve({ accuracy: [0.5] }), null);
  assert.equal(lossCurve({ loss: [] }), null);
  assert.equal(lossCurve(null), null);
  assert.equal(lossCurve([1, 2]), null);
});

test('the layout has both axes, their titles and tick labels, and every point inside the plot', () => {
  const layout = chartLayout(lossCurve({ loss: [0.61, 0.42, 0.2816780209541321] }, 3));
  assert.equal(layout.xLabel, 'epoch');
  assert.equal(layout.yLabel, 'loss');
  assert.deepEqual(layout.xTicks.map(t => t.label), ['1', '2', '3']);
  assert.ok(layout.yTicks.length >= 3);
  assert.ok(layout.caption.startsWith('loss: 0.61 → 0.2817 over 3 epochs'));
  const points = layout.points.split(' ').map(p => p.split(',').map(Number));
  assert.equal(points.length, 3);
  for (const [x, y] of points) {
    assert.ok(x >= layout.left && x <= layout.right && y >= layout.top && y <= layout.bottom, `${x},${y}`);
  }
  assert.ok(points[0][1] < points[2][1]); // a falling loss is drawn falling
  assert.equal(layout.width, WIDTH);
  assert.equal(layout.height, HEIGHT);
  const one = chartLayout(lossCurve({ loss: [0.5] }));
  assert.deepEqual(one.xTicks.map(t => t.label), ['1']);
  assert.ok(one.yTicks.length >= 2 && one.caption.includes('over 1 step'));
});

test('ticks are round numbers covering the range, as the receipt widget draws them', () => {
  assert.deepEqual(niceTicks(0.2816780209541321, 0.61), [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
  assert.deepEqual(niceTicks(1, 3, 6), [1, 1.5, 2, 2.5, 3]);
  assert.deepEqual(niceTicks(NaN, 1), []);
});

test('while a job runs or is held the chart waits for the release; completed, it is drawn', () => {
  const id = 'a'.repeat(32);
  for (const state of ['submitted', 'running', 'held', 'awaiting_approval']) {
    assert.equal(jobRow({ job_id: id, state }).chart, 'pending', state);
  }
  assert.equal(jobRow({ job_id: id, state: 'completed', epochs_asked: 3 }).chart, 'released');
  assert.equal(jobRow({ job_id: id, state: 'completed', epochs_asked: 3 }).epochsAsked, 3);
  for (const state of ['denied', 'failed', 'cancelled', 'refused']) {
    assert.equal(jobRow({ job_id: id, state }).chart, 'none', state);
  }
  assert.equal(jobRow({ job_id: id, state: 'running', edge_unreachable: true }).chart, 'none');
  assert.equal(RELEASED_AFTER_CHECKS, 'loss is released after the output checks');
});

test('a running job shows elapsed and ETA from the counters the meter releases', () => {
  const submitted = '2026-12-02T17:00:00Z';
  const now = Date.parse(submitted) + 90_000;
  const running = { state: 'running', submitted, epochs_asked: 3,
    progress: { epochs: 2, records_used: 48, cohort_size: 48, batches: 20 } };
  assert.equal(timingText(running, now), '1:30 elapsed, ETA 3:00'); // 1 of 3 epochs done: 2 more at that pace
  const first = { ...running, progress: { epochs: 1, records_used: 12, cohort_size: 48 } };
  assert.equal(timingText(first, now), '1:30 elapsed, ETA 16:30'); // a quarter of epoch 1 of 3
  assert.equal(timingText({ ...running, progress: {} }, now), '1:30 elapsed, ETA ?');
  assert.equal(timingText({ ...running, state: 'held' }, now), '1:30 elapsed');
  assert.equal(timingText({ ...running, state: 'completed' }, now), '');
  assert.equal(timingText({ ...running, submitted: 'soon' }, now), '');
  const row = jobRow({ job_id: 'a'.repeat(32), ...running }, now);
  assert.equal(row.detail, '48 of 48 records, 20 batches, epoch 2/3; 1:30 elapsed, ETA 3:00');
  assert.deepEqual([0, 7.4, 750, 3723].map(clock), ['0:00', '0:07', '12:30', '1:02:03']);
});
