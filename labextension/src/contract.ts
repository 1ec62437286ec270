// Generated from jupyter_rapha/protocol/contract.py by labextension/scripts/gen_contract.py:
// do not edit; run the script again (tests/extension/test_contract_ts.py fails when this is stale).

export type JobState = 'submitted' | 'awaiting_approval' | 'running' | 'held' | 'completed' | 'refused' | 'denied' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = ['submitted', 'awaiting_approval', 'running', 'held', 'completed', 'refused', 'denied', 'failed', 'cancelled'];
/** States a job ends in; `held` is not one of them (its outputs are still to be decided). */
export const TERMINAL_STATES: readonly string[] = ['cancelled', 'completed', 'denied', 'failed', 'refused'];
export const ACTIVE_STATES: readonly string[] = ['awaiting_approval', 'held', 'running', 'submitted'];
export const CANCELLABLE_STATES: readonly string[] = ['awaiting_approval', 'running', 'submitted'];
export const METRIC_NAME_PATTERN = new RegExp("^[A-Za-z][A-Za-z0-9_]{0,47}$");
export const METRIC_NAME_RULE = "metric names are letters, digits and '_', start with a letter and are at most 48 characters";
export const METRIC_NAME_MAX_CHARS = 48;
/** A DP job's privacy counters in its progress: the budget while it runs, the spent once released. */
export const PRIVACY_PROGRESS: readonly string[] = ['epsilon_target', 'epsilon_spent', 'delta'];
