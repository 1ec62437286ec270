/**
 * The side panel's edges view: each configured edge as the server extension verified it
 * (GET /rapha/api/edges), with what a job there can import. Pure, like model.ts, so
 * `npm test` checks it without a browser.
 */

/** Shown first, in this order (jupyter_rapha/protocol/environment.py KEY_PACKAGES). */
export const KEY_PACKAGES = ['torch', 'numpy', 'monai', 'pydicom', 'safetensors'];

export interface EdgeRow {
  name: string;
  /** "demo-edge (north)" when the edge calls itself otherwise than the configuration. */
  title: string;
  healthy: boolean;
  /** One line each: attestation, datasets, environment; or why the catalog is not trusted. */
  lines: string[];
}

function text(value: unknown, fallback = ''): string {
  return typeof value === 'string' ? value : fallback;
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : {};
}

/** PEP 503's normalised name, as the Python side compares distributions. */
function canonical(name: string): string {
  return name.replace(/[-_.]+/g, '-').toLowerCase();
}

/** "Python 3.11.7, 164 packages: torch 2.13.0, numpy 2.4.6, ...", the same words as
 * `rapha edges` (Environment.summary; labextension/test/edge_cases.json holds both to it). */
export function environmentSummary(environment: unknown): string {
  const env = record(environment);
  if (typeof env.python !== 'string') {
    return 'environment not listed by this edge';
  }
  const packages = Object.entries(record(env.packages)).filter(([, v]) => typeof v === 'string') as [string, string][];
  const versions = new Map(packages.map(([name, version]) => [canonical(name), version]));
  const keys = KEY_PACKAGES.filter(name => versions.has(name)).map(name => `${name} ${versions.get(name)}`);
  const count = `${packages.length} package${packages.length === 1 ? '' : 's'}` +
    (env.complete === true ? '' : ' listed (not all it has)');
  return `Python ${env.python}, ${count}` + (keys.length > 0 ? `: ${keys.join(', ')}` : '');
}

function attestationText(offer: unknown): string {
  const o = record(offer);
  const backend = text(o.backend);
  if (!backend) {
    return 'offers no attestation in its catalog';
  }
  if (backend === 'none') {
    return `cannot attest: ${text(o.summary)}`;
  }
  return `attests with ${backend}${o.unsafe === true ? ' (UNSAFE)' : ''}`;
}

export function edgeRow(entry: unknown): EdgeRow {
  const e = record(entry);
  const name = text(e.name, '?');
  const edgeId = text(e.edge_id);
  const title = edgeId && edgeId !== name ? `${edgeId} (${name})` : name;
  if (e.healthy !== true) {
    return { name, title, healthy: false, lines: [`catalog not trusted: ${text(e.problem, 'no verified catalog')}`] };
  }
  const datasets = (Array.isArray(e.datasets) ? e.datasets : []).filter(d => typeof d === 'string');
  return {
    name, title, healthy: true,
    lines: [attestationText(e.attestation), `datasets: ${datasets.join(', ') || 'none'}`,
      environmentSummary(e.environment)]
  };
}

export function edgeRows(body: unknown): EdgeRow[] {
  const edges = record(body).edges;
  if (!Array.isArray(edges)) {
    throw new Error('the server answered without an edge list');
  }
  return edges.map(edgeRow);
}
