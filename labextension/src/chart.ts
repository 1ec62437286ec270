/**
 * The released loss curve of a completed job, laid out for the side panel: the series,
 * its axes, tick labels and axis titles, the same rule as the receipt widget
 * (jupyter_rapha/receipt_chart.py). No DOM here: the panel draws the layout as SVG.
 *
 * While a job runs or is held no metric value has left the edge (outputs are released
 * only once the output checks pass), so the panel shows RELEASED_AFTER_CHECKS instead.
 */

export const RELEASED_AFTER_CHECKS = 'loss is released after the output checks';
export const WIDTH = 260;
export const HEIGHT = 150;
const LEFT = 46;
const RIGHT = 8;
const TOP = 8;
const BOTTOM = 32;

export interface Curve {
  name: string;
  values: number[];
  /** "epoch" when the series holds one value per epoch the job asked for, else "step". */
  xLabel: string;
}

export interface Tick {
  at: number;
  label: string;
}

export interface ChartLayout {
  width: number;
  height: number;
  /** The plot's corners: the x axis runs along `bottom`, the y axis along `left`. */
  left: number;
  right: number;
  top: number;
  bottom: number;
  points: string;
  last: [number, number];
  xTicks: Tick[];
  yTicks: Tick[];
  xLabel: string;
  yLabel: string;
  caption: string;
}

function finite(series: unknown): number[] {
  if (!Array.isArray(series)) {
    return [];
  }
  return series.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
}

/** `loss` if the metrics hold it, else the first name holding "loss"; null when none. */
export function lossCurve(metrics: unknown, epochsAsked: unknown = null): Curve | null {
  if (typeof metrics !== 'object' || metrics === null || Array.isArray(metrics)) {
    return null;
  }
  const all = metrics as Record<string, unknown>;
  const names = Object.keys(all).filter(k => k.toLowerCase().includes('loss')).sort();
  for (const name of ('loss' in all ? ['loss'] : []).concat(names)) {
    const values = finite(all[name]);
    if (values.length > 0) {
      const asked = typeof epochsAsked === 'number' && Number.isInteger(epochsAsked) ? epochsAsked : 0;
      return { name, values, xLabel: asked > 0 && values.length === asked ? 'epoch' : 'step' };
    }
  }
  return null;
}

/** Round tick values (1, 2 or 5 times a power of ten) covering [low, high]. */
export function niceTicks(low: number, high: number, most = 5): number[] {
  if (!Number.isFinite(low) || !Number.isFinite(high)) {
    return [];
  }
  if (high <= low) {
    const pad = Math.abs(low) * 0.1 || 1;
    low -= pad;
    high += pad;
  }
  const raw = (high - low) / Math.max(most - 1, 1);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map(m => m * power).find(s => s >= raw) ?? 10 * power;
  const ticks: number[] = [];
  let value = Math.floor(low / step) * step;
  while (value <= high + step * 1e-9) {
    ticks.push(round(value));
    value += step;
  }
  if (ticks[ticks.length - 1] < high) {
    ticks.push(round(value));
  }
  return ticks;
}

function round(value: number): number {
  return Number(value.toPrecision(12));
}

function label(value: number): string {
  return value === 0 ? '0' : String(Number(value.toPrecision(3)));
}

/** Whole steps or epochs only, at most six. */
function xTicks(count: number): number[] {
  if (count <= 1) {
    return [1];
  }
  const whole = niceTicks(1, count, 6).filter(t => Number.isInteger(t) && t >= 1 && t <= count);
  return whole.length > 0 ? whole : [1, count];
}

export function chartLayout(curve: Curve): ChartLayout {
  const ys = curve.values;
  const yTicks = niceTicks(Math.min(...ys), Math.max(...ys));
  const xs = xTicks(ys.length);
  const [yLow, yHigh] = [yTicks[0], yTicks[yTicks.length - 1]];
  const [xLow, xHigh] = [Math.min(xs[0], 1), Math.max(xs[xs.length - 1], ys.length)];
  const right = WIDTH - RIGHT;
  const bottom = HEIGHT - BOTTOM;
  const px = (x: number) => LEFT + ((x - xLow) / (xHigh - xLow || 1)) * (right - LEFT);
  const py = (y: number) => TOP + ((yHigh - y) / (yHigh - yLow || 1)) * (bottom - TOP);
  const scaled = ys.map((y, i): [number, number] => [px(i + 1), py(y)]);
  const first = ys[0];
  const lastValue = ys[ys.length - 1];
  return {
    width: WIDTH, height: HEIGHT, left: LEFT, right, top: TOP, bottom,
    points: scaled.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '),
    last: scaled[scaled.length - 1],
    xTicks: xs.map(t => ({ at: px(t), label: label(t) })),
    yTicks: yTicks.map(t => ({ at: py(t), label: label(t) })),
    xLabel: curve.xLabel,
    yLabel: curve.name,
    caption: `${curve.name}: ${Number(first.toPrecision(4))} → ${Number(lastValue.toPrecision(4))} over ` +
      `${ys.length} ${curve.xLabel}${ys.length === 1 ? '' : 's'} (released)`
  };
}
