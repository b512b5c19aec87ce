/**
 * The JSON the `/llmspend/*` server routes answer (see `llmspend_jupyterlab/payloads.py`).
 *
 * Money (`*_usd`) arrives as exact decimal strings; times as ISO 8601 strings.
 */

export type BudgetState = 'ok' | 'warning' | 'exceeded';

export interface IContext {
  org: string;
  project: string;
  user: string;
}

export interface IBudget {
  budget: string;
  scope: 'org' | 'project' | 'user';
  mode: 'hard' | 'soft';
  period: string;
  timezone: string;
  period_start: string;
  period_end: string | null;
  limit_usd: string;
  spent_usd: string;
  reserved_usd: string;
  remaining_usd: string;
  projected_usd: string | null;
  percent_used: number;
  state: BudgetState;
  calls: number;
  inherited: boolean;
}

export interface ISpend {
  since: string;
  until: string | null;
  spent_usd: string;
  calls: number;
  unpriced_calls: number;
}

export interface IStatus {
  context: IContext;
  generated_at: string;
  budgets: IBudget[];
  headline: IBudget | null;
  today: ISpend;
  alerts: { unacknowledged: number; latest_id: number | null };
}

export interface ISummary {
  context: IContext;
  generated_at: string;
  today: ISpend;
  period: ISpend & {
    period: string;
    budget: string | null;
    scope: string | null;
  };
  top_model: {
    provider: string;
    model: string;
    spent_usd: string;
    calls: number;
  } | null;
}

export interface IAlert {
  id: number;
  kind: 'threshold' | 'refused';
  ts: string;
  budget: string;
  scope: string;
  org: string;
  project: string | null;
  user: string | null;
  threshold: number;
  percent_used: number;
  spent_usd: string;
  limit_usd: string;
  call_cost_usd: string | null;
  period_start: string;
  acknowledged: boolean;
  metadata: { [key: string]: unknown };
}

export interface IAlerts {
  context: IContext;
  alerts: IAlert[];
  unacknowledged: number;
}

/** A budget's definition, as `GET /llmspend/budgets` lists it. */
export interface IBudgetDef {
  scope: 'org' | 'project' | 'user';
  name: string;
  limit_usd: string;
  period: string;
  mode: 'hard' | 'soft';
  thresholds: string[];
  timezone: string;
  week_start: number;
  unpriced: string;
  /** Masked (`https://host/***`), and `null` for those who may not manage budgets. */
  webhook_url: string | null;
  has_webhook: boolean;
  is_default: boolean;
  inherited: boolean;
  updated_at: string;
  /** Whether this user may change (or delete) this budget: in team mode, what the
   * gateway's roles allow (an owner of a project, not of the org's budget). */
  can_change: boolean;
}

export interface IBudgetList {
  context: IContext;
  /** Whether the server lets this user create, change and delete (some) budgets. */
  can_manage: boolean;
  budgets: IBudgetDef[];
}
