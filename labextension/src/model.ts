/**
 * What the side panel shows, computed from the server extension's JSON (GET
 * /rapha/api/jobs and /rapha/api/jobs/ID/verify). No DOM here: these functions are the
 * panel's logic, tested on their own.
 */

import { CANCELLABLE_STATES, PRIVACY_PROGRESS, TERMINAL_STATES } from './contract';

/** The edge's final states, from the generated contract (src/contract.ts). */
export const FINAL_STATES: readonly string[] = TERMINAL_STATES;

export interface Progress {
  records_used?: number;
  batches?: number;
  epochs?: number;
  cohort_size?: number;
  /** A DP job: the trainer's epochs of fit_private's, its steps of the planned total. */
  epochs_total?: number;
  steps?: number;
  steps_total?: number;
  /** A DP job's privacy counters (contract PRIVACY_PROGRESS): the budget, and once released the spent. */
  epsilon_target?: number;
  epsilon_spent?: number;
  delta?: number;
  /** A held job's disclosure checks (the edge rounds the figures to two decimals). */
  checks_done?: number;
  checks_total?: number;
  review_needed?: number;
  approvals?: number;
  approvals_needed?: number;
  copies_records_matched?: number;
  copies_max_correlation?: number;
  mia_auc?: number;
  mia_checkable?: number;
  parameters_per_record?: number;
}

export interface JobStatus {
  job_id: string;
  state: string;
  site?: string;
  dataset?: string;
  submitted?: string;
  updated?: string;
  reasons?: string[];
  error?: { type?: string; line?: number } | null;
  progress?: Progress;
  /** The epochs the job asked for (from its spec, as the edge reports it). */
  epochs_asked?: number | null;
  /** A priced dataset's cost, as the edge reports it (decimal texts). */
  cost?: Cost;
}

export interface Cost {
  price_per_record?: string;
  currency?: string;
  /** price x the job's record budget: what is locked or could be charged. */
  max?: string;
  /** price x the records used so far; "0" for a job that ended without release (refunded). */
  charged?: string;
}

export interface Check {
  name: string;
  status: string;
  detail: string;
}

export interface Report {
  ok: boolean;
  outcome?: string;
  offline?: boolean;
  notes?: string[];
  checks: Check[];
}

export interface JobRow {
  id: string;
  short: string;
  /** The edge's state, or 'unreachable' when the edge (or the server) stopped answering. */
  state: string;
  /** The state in words: "running", "edge unreachable (last seen: running)". */
  stateText: string;
  title: string;
  detail: string;
  /** A DP job's privacy line: "DP: epsilon 7.99 spent of 8 (delta 0.001)"; '' for a standard job. */
  privacy: string;
  canCancel: boolean;
  canVerify: boolean;
  /** "cost 0.37 GBP (0.01 per record; at most 0.50)", or "" for a free dataset. */
  cost: string;
  /** The loss chart: 'pending' while no value may have left (running, held, queued),
   * 'released' once completed (the panel fetches the released metrics), else 'none'. */
  chart: 'pending' | 'released' | 'none';
  /** The epochs the job asked for, or null: the chart's x axis is "epoch" when they match. */
  epochsAsked: number | null;
}

export type VerdictKind = 'pass' | 'warn' | 'pending' | 'fail';

/** One check as the panel's table shows it: a status badge, the name, the detail. */
export interface CheckRow {
  name: string;
  status: string;
  badge: string;
  detail: string;
}

export interface Verdict {
  label: string;
  kind: VerdictKind;
  colour: string;
  notes: string[];
  checks: CheckRow[];
}

/** The receipt widget's colours (jupyter_rapha/verdict.py COLOURS): the same headline, the same colour. */
export const VERDICT_COLOURS: Record<VerdictKind, string> = {
  pass: '#1a7f37', warn: '#bc4c00', pending: '#9a6700', fail: '#cf222e'
};
const BADGES: Record<string, string> = { pass: 'PASS', fail: 'FAIL', pending: 'WAIT', warn: 'WARN', skipped: 'SKIP' };
const KNOWN: readonly string[] = ['pass', 'fail', 'skipped', 'pending', 'warn'];

/** Where the edge's word alone would mislead: a held job has run, its outputs wait for the release checks. */
/** The states in which no metric value may have left the edge yet: the chart waits for the release. */
const PENDING_STATES: readonly string[] = ['submitted', 'awaiting_approval', 'running', 'held'];
const STATE_WORDS: Record<string, string> = { refused: 'release refused', awaiting_approval: 'awaiting approval' };

function text(value: unknown, fallback = '?'): string {
  return typeof value === 'string' && value.length > 0 ? value : fallback;
}

function count(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : null;
}

/** "12 of 40 records, 6 batches, epoch 2/3": only the counters the edge reported. */
export function progressText(progress: unknown, epochsAsked: unknown = null): string {
  if (typeof progress !== 'object' || progress === null) {
    return '';
  }
  const p = progress as Progress;
  const parts: string[] = [];
  const used = count(p.records_used);
  const cohort = count(p.cohort_size);
  if (used !== null) {
    parts.push(cohort !== null ? `${used} of ${cohort} records` : `${used} records`);
  }
  const batches = count(p.batches);
  const stepsTotal = count(p.steps_total);
  if (stepsTotal !== null && stepsTotal > 0) {
    parts.push(`${count(p.steps) ?? 0}/${stepsTotal} steps`); // a DP job: its batches are the trainer's steps
  } else if (batches !== null) {
    parts.push(`${batches} batches`);
  }
  const epochs = count(p.epochs);
  if (epochs !== null && epochs > 0) {
    // a DP job's epochs are fit_private's (epochs_total), not the cell's --epochs
    const asked = count(p.epochs_total) ?? count(epochsAsked);
    parts.push(asked !== null && asked >= epochs ? `epoch ${epochs}/${asked}` : `epoch ${epochs}`);
  }
  return parts.join(', ');
}

/** "DP: epsilon budget 8 (delta 0.001)" while a DP job runs; "DP: epsilon 7.99 spent of 8
 * (delta 0.001)" once released; '' for a standard job. */
export function privacyText(progress: unknown): string {
  const p = (typeof progress === 'object' && progress !== null ? progress : {}) as Record<string, unknown>;
  const [target, spent, delta] = PRIVACY_PROGRESS.map(name => count(p[name]));
  if (target === null) {
    return '';
  }
  const shown = (value: number): string => String(Number(value.toPrecision(3)));
  // four digits for the spent: 7.9989 of 8 reads "7.999", never as if the whole budget or more were gone
  const said = spent !== null ? `epsilon ${Number(spent.toPrecision(4))} spent of ${shown(target)}`
    : `epsilon budget ${shown(target)}`;
  return `DP: ${said}${delta !== null ? ` (delta ${shown(delta)})` : ''}`;
}

/** 0:07, 12:30, 1:02:03, as tqdm (and the notebook's progress line) writes durations. */
export function clock(seconds: number): string {
  const whole = Math.max(Math.round(seconds), 0);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = String(whole % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${secs}` : `${minutes}:${secs}`;
}

/** How much of a running job is done, 0..1, from the counters the meter releases: the
 * epochs begun of those asked, and within the first epoch the records of the cohort. */
export function doneFraction(progress: unknown, epochsAsked: unknown): number | null {
  const p = (typeof progress === 'object' && progress !== null ? progress : {}) as Progress;
  const asked = count(epochsAsked);
  const epoch = count(p.epochs);
  if (!asked || !epoch) {
    return null;
  }
  const used = count(p.records_used);
  const cohort = count(p.cohort_size);
  const within = epoch === 1 && used !== null && cohort ? Math.min(used / cohort, 1) : 0;
  return Math.min((epoch - 1 + within) / asked, 1);
}

/** "1:23 elapsed, ETA 0:40" for a running job (elapsed since it was submitted); a held
 * job's training is over, so elapsed only; '' when the edge gave no time. */
export function timingText(job: unknown, now: number = Date.now()): string {
  const j = (typeof job === 'object' && job !== null ? job : {}) as Partial<JobStatus>;
  const since = typeof j.submitted === 'string' ? Date.parse(j.submitted) : NaN;
  if (!Number.isFinite(since) || (j.state !== 'running' && j.state !== 'held')) {
    return '';
  }
  const elapsed = Math.max((now - since) / 1000, 0);
  if (j.state === 'held') {
    return `${clock(elapsed)} elapsed`;
  }
  const done = doneFraction(j.progress, j.epochs_asked);
  const eta = done !== null && done >= 0.01 ? clock((elapsed * (1 - done)) / done) : '?';
  return `${clock(elapsed)} elapsed, ETA ${eta}`;
}

/** A held job's state in words: "held: checks running (1/3)", "held for review (0/2 approvals)". */
export function heldText(progress: unknown): string {
  const p = (typeof progress === 'object' && progress !== null ? progress : {}) as Progress;
  if (count(p.review_needed)) {
    return `held for review (${count(p.approvals) ?? 0}/${count(p.approvals_needed) ?? 1} approvals)`;
  }
  const done = count(p.checks_done);
  const total = count(p.checks_total);
  return total !== null && done !== null && done >= total ? 'held: release being decided'
    : `held: checks running${total !== null ? ` (${done ?? 0}/${total})` : ''}`;
}

/** The checks' figures so far: "record copies 0 (max r 0.21), MIA AUC 0.52, 20.8 params/record". */
export function checksText(progress: unknown): string {
  const p = (typeof progress === 'object' && progress !== null ? progress : {}) as Progress;
  const parts: string[] = [];
  const matched = count(p.copies_records_matched);
  if (matched !== null) {
    const r = count(p.copies_max_correlation);
    parts.push(`record copies ${matched}${r !== null ? ` (max r ${r.toFixed(2)})` : ''}`);
  }
  const auc = count(p.mia_auc);
  if (p.mia_checkable === 0) {
    parts.push('MIA not checkable');
  } else if (auc !== null) {
    parts.push(`MIA AUC ${auc.toFixed(2)}`);
  }
  const perRecord = count(p.parameters_per_record);
  if (perRecord !== null) {
    parts.push(`${Number(perRecord.toPrecision(4))} params/record`);
  }
  return parts.join(', ');
}

const DECIMAL = /^[0-9]+(\.[0-9]+)?$/;

function decimal(value: unknown): string | null {
  return typeof value === 'string' && DECIMAL.test(value) ? value : null;
}

/** What a job costs, from the edge's figures: charged so far (or in the end) and at most. */
export function costText(cost: unknown, state: string): string {
  if (typeof cost !== 'object' || cost === null) {
    return '';
  }
  const c = cost as Cost;
  const charged = decimal(c.charged);
  const most = decimal(c.max);
  const price = decimal(c.price_per_record);
  if (charged === null || most === null || price === null) {
    return '';
  }
  const currency = typeof c.currency === 'string' && c.currency.length > 0 ? ` ${c.currency}` : '';
  const ended = FINAL_STATES.includes(state);
  if (ended && state !== 'completed') {
    return `cost 0${currency}: refunded (at most ${most} was locked)`;
  }
  return `${ended ? 'cost' : 'cost so far'} ${charged}${currency} (${price} per record; at most ${most})`;
}

/** One job as the panel lists it; anything malformed in the JSON shows as "?". A job
 * whose edge stopped answering is shown as last seen, never as still "running". */
export function jobRow(job: unknown, now: number = Date.now()): JobRow {
  const j = (typeof job === 'object' && job !== null ? job : {}) as Partial<JobStatus> & { edge_unreachable?: unknown };
  const id = text(j.job_id);
  const edgeState = text(j.state, 'unknown');
  let detail = [progressText(j.progress, j.epochs_asked), timingText(j, now)].filter(p => p.length > 0).join('; ');
  const refusal = edgeState === 'denied' || edgeState === 'refused' || edgeState === 'cancelled';
  if (refusal && Array.isArray(j.reasons) && j.reasons.length > 0) {
    detail = j.reasons.filter(r => typeof r === 'string').join('; ');
  } else if (edgeState === 'failed' && j.error && typeof j.error === 'object') {
    const line = count(j.error.line);
    detail = `${text(j.error.type, 'error')}${line !== null ? ` at line ${line} of the cell` : ''}`;
  }
  if (edgeState === 'held') {
    detail = [detail, checksText(j.progress)].filter(part => part.length > 0).join('; ');
  }
  const row: JobRow = {
    id,
    short: id.slice(0, 8),
    state: edgeState,
    stateText: edgeState === 'held' ? heldText(j.progress) : STATE_WORDS[edgeState] ?? edgeState,
    title: `${text(j.dataset)} @ ${text(j.site)}`,
    detail,
    privacy: privacyText(j.progress),
    canCancel: CANCELLABLE_STATES.includes(edgeState),
    canVerify: edgeState === 'completed',
    cost: costText(j.cost, edgeState),
    chart: edgeState === 'completed' ? 'released' : PENDING_STATES.includes(edgeState) ? 'pending' : 'none',
    epochsAsked: count(j.epochs_asked)
  };
  return j.edge_unreachable === true ? unreachable(row, 'edge') : row;
}

/** A row whose edge (or the Jupyter server) no longer answers: its last known state, and
 * nothing to click that would need the edge. Final states stay what they were. */
export function unreachable(row: JobRow, who: 'edge' | 'server'): JobRow {
  if (FINAL_STATES.includes(row.state) || row.state === 'unreachable') {
    return row;
  }
  return { ...row, state: 'unreachable', stateText: `${who} unreachable (last seen: ${row.state})`,
    canCancel: false, canVerify: false, chart: 'none' };
}

/** Newest first, as the server sends them; jobs without an id are dropped. */
export function jobRows(body: unknown): JobRow[] {
  const jobs = typeof body === 'object' && body !== null ? (body as { jobs?: unknown }).jobs : undefined;
  if (!Array.isArray(jobs)) {
    throw new Error('the server answered without a job list');
  }
  return jobs.map(job => jobRow(job)).filter(row => row.id !== '?');
}

/** "edge north unreachable: cannot reach the edge at ...", for each edge the server could
 * not reach on this refresh (their jobs are listed as last seen). */
export function unreachableEdges(body: unknown): string[] {
  const lost = typeof body === 'object' && body !== null ? (body as { unreachable?: unknown }).unreachable : undefined;
  if (typeof lost !== 'object' || lost === null) {
    return [];
  }
  return Object.entries(lost as Record<string, unknown>).map(([site, why]) => `edge ${site} unreachable: ${text(why)}`);
}

/** The headline of a verification, by the receipt widget's rule (jupyter_rapha/verdict.py
 * ``decide``; labextension/test/verdict_cases.json holds both to the same cases): a failure
 * (or a skip where skips are not allowed: online) is "not verified", red; then a pending
 * anchor; then warnings (and offline skips), named, orange; only all-pass is green. */
export function verdict(report: unknown): Verdict {
  const r = (typeof report === 'object' && report !== null ? report : {}) as Partial<Report>;
  const raw = Array.isArray(r.checks) ? r.checks : [];
  const checks: CheckRow[] = raw.map(c => {
    const status = text(c?.status, '');
    return { name: text(c?.name, ''), status, badge: BADGES[status] ?? 'FAIL', detail: text(c?.detail, '') };
  });
  const notes = (Array.isArray(r.notes) ? r.notes : []).filter(n => typeof n === 'string');
  const make = (kind: VerdictKind, label: string): Verdict =>
    ({ kind, label, colour: VERDICT_COLOURS[kind], notes, checks });
  if (checks.length === 0) {
    return make('fail', 'not verified: nothing was checked');
  }
  const skipsAllowed = r.offline === true;
  const bad = checks.filter(c => c.status === 'fail' || !KNOWN.includes(c.status) ||
    (c.status === 'skipped' && !skipsAllowed));
  if (bad.length > 0) {
    return make('fail', `not verified: ${bad.map(checkItem).join(', ')}`);
  }
  if (checks.some(c => c.status === 'pending')) {
    return make('pending', 'signature verified, anchor pending');
  }
  const warned = checks.filter(c => c.status === 'warn' || c.status === 'skipped');
  if (warned.length > 0) {
    return make('warn', `verified, with warnings: ${warned.map(checkItem).join(', ')}`);
  }
  return make('pass', 'verified');
}

function checkItem(check: CheckRow): string {
  if (check.status === 'skipped') {
    return `${check.name} not checked`;
  }
  if (!KNOWN.includes(check.status)) {
    return `${check.name} (unknown status)`;
  }
  return check.detail.includes('UNSAFE') ? `${check.name} (UNSAFE)` : check.name;
}

/** The message of an error body ({"error": {"message"}}) or a generic one with the status. */
export function errorMessage(status: number, body: unknown): string {
  const error = typeof body === 'object' && body !== null ? (body as { error?: unknown }).error : undefined;
  if (typeof error === 'object' && error !== null) {
    const message = (error as { message?: unknown }).message;
    const reasons = (error as { reasons?: unknown }).reasons;
    if (typeof message === 'string') {
      const why = Array.isArray(reasons) && reasons.length > 0 ? `: ${reasons.join('; ')}` : '';
      return message + why;
    }
  }
  if (status === 404) {
    // Jupyter's own 404 (no error body): nothing serves /rapha/api on this server.
    return 'the jupyter_rapha server extension is not enabled: run `jupyter server extension enable jupyter_rapha` and restart JupyterLab';
  }
  return `the server answered HTTP ${status}`;
}
