/**
 * What the side panel shows, computed from the server extension's JSON (GET
 * /rapha/api/jobs and /rapha/api/jobs/ID/verify). No DOM here: these functions are the
 * panel's logic, tested on their own.
 */

export const FINAL_STATES: readonly string[] = ['completed', 'denied', 'failed', 'cancelled'];

export interface Progress {
  records_used?: number;
  batches?: number;
  epochs?: number;
  cohort_size?: number;
}

export interface JobStatus {
  job_id: string;
  state: string;
  site?: string;
  dataset?: string;
  submitted?: string;
  reasons?: string[];
  error?: { type?: string; line?: number } | null;
  progress?: Progress;
}

export interface Check {
  name: string;
  status: string;
  detail: string;
}

export interface Report {
  ok: boolean;
  outcome?: string;
  notes?: string[];
  checks: Check[];
}

export interface JobRow {
  id: string;
  short: string;
  state: string;
  title: string;
  detail: string;
  canCancel: boolean;
  canVerify: boolean;
}

export interface Verdict {
  label: string;
  kind: 'pass' | 'warn' | 'pending' | 'fail';
  lines: string[];
}

const MARKS: Record<string, string> = { pass: 'PASS', fail: 'FAIL', pending: 'WAIT', warn: 'WARN' };

function text(value: unknown, fallback = '?'): string {
  return typeof value === 'string' && value.length > 0 ? value : fallback;
}

function count(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : null;
}

/** "12 of 40 records, 6 batches, epoch 2": only the counters the edge reported. */
export function progressText(progress: unknown): string {
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
  if (batches !== null) {
    parts.push(`${batches} batches`);
  }
  const epochs = count(p.epochs);
  if (epochs !== null && epochs > 0) {
    parts.push(`epoch ${epochs}`);
  }
  return parts.join(', ');
}

/** One job as the panel lists it; anything malformed in the JSON shows as "?". */
export function jobRow(job: unknown): JobRow {
  const j = (typeof job === 'object' && job !== null ? job : {}) as Partial<JobStatus>;
  const id = text(j.job_id);
  const state = text(j.state, 'unknown');
  let detail = progressText(j.progress);
  if ((state === 'denied' || state === 'cancelled') && Array.isArray(j.reasons) && j.reasons.length > 0) {
    detail = j.reasons.filter(r => typeof r === 'string').join('; ');
  } else if (state === 'failed' && j.error && typeof j.error === 'object') {
    const line = count(j.error.line);
    detail = `${text(j.error.type, 'error')}${line !== null ? ` at line ${line} of the cell` : ''}`;
  }
  return {
    id,
    short: id.slice(0, 8),
    state,
    title: `${text(j.dataset)} @ ${text(j.site)}`,
    detail,
    canCancel: state === 'submitted' || state === 'running',
    canVerify: state === 'completed'
  };
}

/** Newest first, as the server sends them; jobs without an id are dropped. */
export function jobRows(body: unknown): JobRow[] {
  const jobs = typeof body === 'object' && body !== null ? (body as { jobs?: unknown }).jobs : undefined;
  if (!Array.isArray(jobs)) {
    throw new Error('the server answered without a job list');
  }
  return jobs.map(jobRow).filter(row => row.id !== '?');
}

/** The outcome of a verification, worst check first decides: fail, pending, warn, pass. */
export function verdict(report: unknown): Verdict {
  const r = (typeof report === 'object' && report !== null ? report : {}) as Partial<Report>;
  const checks = Array.isArray(r.checks) ? r.checks : [];
  const width = Math.max(0, ...checks.map(c => text(c?.name, '').length));
  const lines = (Array.isArray(r.notes) ? r.notes : []).map(note => `note: ${note}`);
  for (const check of checks) {
    const mark = MARKS[text(check?.status, '')] ?? 'SKIP';
    lines.push(`${mark} ${text(check?.name, '').padEnd(width)}  ${text(check?.detail, '')}`);
  }
  const statuses = checks.map(c => c?.status);
  if (checks.length === 0 || r.ok !== true || statuses.includes('fail')) {
    return { label: 'NOT verified', kind: 'fail', lines };
  }
  if (statuses.includes('pending')) {
    return { label: 'verified, anchor pending', kind: 'pending', lines };
  }
  if (statuses.includes('warn')) {
    return { label: 'verified, with warnings', kind: 'warn', lines };
  }
  return { label: 'verified', kind: 'pass', lines };
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
  return `the server answered HTTP ${status}`;
}
