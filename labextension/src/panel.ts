import { Widget } from '@lumino/widgets';

import { requestAPI } from './api';
import { ChartLayout, RELEASED_AFTER_CHECKS, chartLayout, lossCurve } from './chart';
import { EdgeRow, edgeRows } from './edges';
import { JobRow, Verdict, jobRows, unreachable, unreachableEdges, verdict } from './model';

const POLL_MS = 5000;

/**
 * The "Rapha jobs" side panel: every job the server extension knows, across edges, with
 * its state and progress; cancel a running job; check a completed job's receipt against
 * the edge key pinned in the server's configuration. While a job runs or is held the
 * panel shows progress only (the counts the meter releases: epoch k/N, records, elapsed,
 * ETA): no metric value leaves the edge before the output checks release it. Once the job
 * completed, its released loss curve is drawn with labelled axes. Below, the configured
 * edges: what each attests with, offers and lets a job import (its environment listing).
 */
export class JobsPanel extends Widget {
  private edges: HTMLElement;
  private list: HTMLElement;
  private status: HTMLElement;
  private timer: number | null = null;
  private reports = new Map<string, HTMLElement>();
  private charts = new Map<string, HTMLElement>();
  private rows: JobRow[] = [];

  constructor() {
    super();
    this.id = 'jupyter-rapha-jobs';
    this.addClass('jp-RaphaJobs');
    this.title.label = 'Rapha';
    this.title.caption = 'Rapha jobs: edge training jobs and their receipts';
    const header = document.createElement('div');
    header.className = 'jp-RaphaJobs-header';
    const heading = document.createElement('h2');
    heading.textContent = 'Rapha jobs';
    const refresh = document.createElement('button');
    refresh.className = 'jp-RaphaJobs-refresh jp-mod-styled';
    refresh.textContent = 'Refresh';
    refresh.onclick = () => void Promise.all([this.refresh(), this.refreshEdges()]);
    header.append(heading, refresh);
    this.status = document.createElement('div');
    this.status.className = 'jp-RaphaJobs-status';
    this.list = document.createElement('ul');
    this.list.className = 'jp-RaphaJobs-list';
    const edgesHeading = document.createElement('h3');
    edgesHeading.textContent = 'Edges';
    this.edges = document.createElement('ul');
    this.edges.className = 'jp-RaphaJobs-edges';
    this.node.append(header, this.status, this.list, edgesHeading, this.edges);
  }

  /** The configured edges and what each offers, its environment included. Asked when the
   * panel is shown and on Refresh, not on every poll: each asks every edge for its catalog. */
  async refreshEdges(): Promise<void> {
    try {
      this.edges.replaceChildren(...edgeRows(await requestAPI('edges')).map(edgeItem));
    } catch (error) {
      const item = document.createElement('li');
      item.className = 'jp-RaphaJobs-edge jp-mod-error';
      item.textContent = `Edges not listed: ${(error as Error).message}`;
      this.edges.replaceChildren(item);
    }
  }

  /** Fetch the job list and draw it; an error is shown in the panel, never thrown. */
  async refresh(): Promise<void> {
    try {
      const body = await requestAPI('jobs');
      this.rows = jobRows(body);
      this.render(this.rows);
      const lost = unreachableEdges(body);
      this.status.textContent = lost.length > 0 ? lost.join('; ')
        : this.rows.length === 0 ? 'No jobs yet: run a %%rapha_train cell.' : '';
      this.status.classList.toggle('jp-mod-error', lost.length > 0);
    } catch (error) {
      // The server (or everything behind it) is gone: keep the jobs as last seen, marked so.
      this.render(this.rows.map(row => unreachable(row, 'server')));
      this.status.textContent = (error as Error).message;
      this.status.classList.add('jp-mod-error');
    }
  }

  protected onAfterShow(): void {
    void this.refresh();
    void this.refreshEdges();
    if (this.timer === null) {
      this.timer = window.setInterval(() => void this.refresh(), POLL_MS);
    }
  }

  protected onAfterHide(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  dispose(): void {
    this.onAfterHide();
    super.dispose();
  }

  private render(rows: JobRow[]): void {
    this.list.replaceChildren(...rows.map(row => this.item(row)));
  }

  private item(row: JobRow): HTMLElement {
    const item = document.createElement('li');
    item.className = 'jp-RaphaJobs-job';
    item.dataset.jobId = row.id;
    const title = document.createElement('div');
    title.className = 'jp-RaphaJobs-title';
    const name = document.createElement('span');
    name.textContent = `${row.title} `;
    const id = document.createElement('code');
    id.textContent = row.short;
    id.title = row.id;
    const state = document.createElement('span');
    state.className = `jp-RaphaJobs-state jp-RaphaJobs-state-${row.state}`;
    state.textContent = row.stateText;
    title.append(name, id, state);
    const detail = document.createElement('div');
    detail.className = 'jp-RaphaJobs-detail';
    detail.textContent = row.detail;
    const cost = document.createElement('div');
    cost.className = 'jp-RaphaJobs-cost';
    cost.textContent = row.cost;
    const privacy = document.createElement('div');
    privacy.className = 'jp-RaphaJobs-detail jp-RaphaJobs-privacy';
    privacy.textContent = row.privacy;
    const actions = document.createElement('div');
    actions.className = 'jp-RaphaJobs-actions';
    if (row.canCancel) {
      actions.append(this.button('Cancel', 'jp-RaphaJobs-cancel', () => this.cancel(row.id)));
    }
    if (row.canVerify) {
      actions.append(this.button('Verify receipt', 'jp-RaphaJobs-verify', () => this.verify(row.id)));
    }
    item.append(title, detail, ...(row.cost ? [cost] : []), ...(row.privacy ? [privacy] : []));
    if (row.chart === 'pending') {
      const pending = document.createElement('div');
      pending.className = 'jp-RaphaJobs-chart-pending';
      pending.textContent = RELEASED_AFTER_CHECKS;
      item.append(pending);
    } else if (row.chart === 'released') {
      item.append(this.chart(row));
    }
    item.append(actions);
    const kept = this.reports.get(row.id);
    if (kept) {
      item.append(kept); // a verification shown stays across refreshes
    }
    return item;
  }

  /** The released loss curve of a completed job, fetched once and kept across refreshes. */
  private chart(row: JobRow): HTMLElement {
    const kept = this.charts.get(row.id);
    if (kept) {
      return kept;
    }
    const block = document.createElement('div');
    block.className = 'jp-RaphaJobs-chart';
    this.charts.set(row.id, block);
    void requestAPI(`jobs/${row.id}/metrics`).then(
      metrics => {
        const curve = lossCurve(metrics, row.epochsAsked);
        if (curve) {
          block.append(...chartNodes(chartLayout(curve)));
        }
      },
      (error: Error) => {
        block.classList.add('jp-mod-error');
        block.textContent = `Loss not shown: ${error.message}`;
      });
    return block;
  }

  private button(label: string, className: string, action: () => Promise<void>): HTMLButtonElement {
    const button = document.createElement('button');
    button.className = `${className} jp-mod-styled`;
    button.textContent = label;
    button.onclick = async () => {
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
      }
    };
    return button;
  }

  private async cancel(jobId: string): Promise<void> {
    try {
      await requestAPI(`jobs/${jobId}`, { method: 'DELETE' });
    } catch (error) {
      this.status.textContent = (error as Error).message;
      this.status.classList.add('jp-mod-error');
    }
    await this.refresh();
  }

  private async verify(jobId: string): Promise<void> {
    const block = document.createElement('div');
    block.className = 'jp-RaphaJobs-report';
    try {
      block.append(...reportNodes(verdict(await requestAPI(`jobs/${jobId}/verify`))));
    } catch (error) {
      block.classList.add('jp-mod-error');
      block.textContent = `Receipt not checked: ${(error as Error).message}`;
    }
    this.reports.set(jobId, block);
    const item = this.list.querySelector(`[data-job-id="${CSS.escape(jobId)}"]`);
    item?.querySelector('.jp-RaphaJobs-report')?.remove();
    item?.append(block);
  }
}

/** One edge: its name, then a line each for its attestation, datasets and environment. */
function edgeItem(row: EdgeRow): HTMLElement {
  const item = document.createElement('li');
  item.className = `jp-RaphaJobs-edge${row.healthy ? '' : ' jp-mod-error'}`;
  item.dataset.edge = row.name;
  const title = document.createElement('div');
  title.className = 'jp-RaphaJobs-title';
  title.textContent = row.title;
  item.append(title);
  for (const line of row.lines) {
    const detail = document.createElement('div');
    detail.className = 'jp-RaphaJobs-detail';
    detail.textContent = line;
    item.append(detail);
  }
  return item;
}

/** The verdict as the receipt widget words and colours it, then one table row per check:
 * a PASS/WARN/FAIL/SKIP badge, the check's name, its detail. */
function reportNodes(result: Verdict): HTMLElement[] {
  const label = document.createElement('div');
  label.className = `jp-RaphaJobs-verdict jp-RaphaJobs-verdict-${result.kind}`;
  label.style.color = result.colour;
  label.textContent = `Receipt ${result.label}`;
  const nodes: HTMLElement[] = [label];
  for (const note of result.notes) {
    const line = document.createElement('div');
    line.className = 'jp-RaphaJobs-note';
    line.textContent = `note: ${note}`;
    nodes.push(line);
  }
  const table = document.createElement('table');
  table.className = 'jp-RaphaJobs-checks';
  for (const check of result.checks) {
    const row = table.insertRow();
    row.className = `jp-RaphaJobs-check jp-RaphaJobs-check-${check.badge.toLowerCase()}`;
    const badge = document.createElement('span');
    badge.className = `jp-RaphaJobs-badge jp-RaphaJobs-badge-${check.badge.toLowerCase()}`;
    badge.textContent = check.badge;
    row.insertCell().append(badge);
    const name = row.insertCell();
    name.className = 'jp-RaphaJobs-check-name';
    name.textContent = check.name;
    const detail = row.insertCell();
    detail.className = 'jp-RaphaJobs-check-detail';
    detail.textContent = check.detail;
  }
  nodes.push(table);
  return nodes;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const AXIS = '#57606a';

function svg(tag: string, attributes: Record<string, string | number>, text?: string): SVGElement {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, String(value));
  }
  if (text !== undefined) {
    element.textContent = text; // never markup: names and numbers come from the edge
  }
  return element;
}

/** The layout as an SVG chart (axes, ticks, titles, the curve) and its caption. */
function chartNodes(layout: ChartLayout): Element[] {
  const { width, height, left, right, top, bottom } = layout;
  const root = svg('svg', { class: 'jp-RaphaJobs-loss', width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': layout.caption, 'font-size': 10, 'font-family': 'sans-serif' });
  root.append(svg('line', { class: 'x-axis', x1: left, y1: bottom, x2: right, y2: bottom, stroke: AXIS }),
    svg('line', { class: 'y-axis', x1: left, y1: top, x2: left, y2: bottom, stroke: AXIS }));
  for (const tick of layout.xTicks) {
    root.append(svg('line', { x1: tick.at, y1: bottom, x2: tick.at, y2: bottom + 4, stroke: AXIS }),
      svg('text', { class: 'x-tick', x: tick.at, y: bottom + 14, 'text-anchor': 'middle', fill: AXIS }, tick.label));
  }
  for (const tick of layout.yTicks) {
    root.append(svg('line', { x1: left - 4, y1: tick.at, x2: left, y2: tick.at, stroke: AXIS }),
      svg('text', { class: 'y-tick', x: left - 6, y: tick.at + 3, 'text-anchor': 'end', fill: AXIS }, tick.label));
  }
  const middle = top + (bottom - top) / 2;
  root.append(
    svg('text', { class: 'x-label', x: left + (right - left) / 2, y: height - 4, 'text-anchor': 'middle', fill: AXIS },
      layout.xLabel),
    svg('text', { class: 'y-label', x: 10, y: middle, 'text-anchor': 'middle', fill: AXIS,
      transform: `rotate(-90 10 ${middle})` }, layout.yLabel),
    svg('polyline', { fill: 'none', stroke: '#0969da', 'stroke-width': 1.5, points: layout.points }),
    svg('circle', { cx: layout.last[0], cy: layout.last[1], r: 2.5, fill: '#0969da' }));
  const caption = document.createElement('div');
  caption.className = 'jp-RaphaJobs-chart-caption';
  caption.textContent = layout.caption;
  return [root, caption];
}
