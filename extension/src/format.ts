/**
 * Pure formatting of what the meter, the panel and the notifications show.
 * No JupyterLab imports here, so that the unit tests run without a browser.
 */
import type { BudgetState, IAlert, IBudget, IStatus } from './types';

/** The meter's colour: `warning` and `danger` follow the budget's own thresholds. */
export type MeterLevel = 'ok' | 'warning' | 'danger' | 'unknown';

const USD = new Intl.NumberFormat('en-US', {
  style: 'currency',
  currency: 'USD',
  minimumFractionDigits: 2,
  maximumFractionDigits: 2
});

/**
 * Money for people: `$1,234.56`; small non-zero amounts keep up to six decimals
 * (`$0.00021`) and anything below a millionth reads `<$0.000001`.
 */
export function formatUsd(amount: string | null | undefined): string {
  if (amount === null || amount === undefined || amount === '') {
    return 'n/a';
  }
  const value = Number(amount);
  if (!Number.isFinite(value)) {
    return 'n/a';
  }
  if (value !== 0 && Math.abs(value) < 0.01) {
    const sign = value < 0 ? '-' : '';
    if (Math.abs(value) < 0.000001) {
      return `${sign}<$0.000001`;
    }
    const digits = Math.abs(value).toFixed(6).replace(/0+$/, '');
    return `${sign}$${digits}`;
  }
  return USD.format(value);
}

/** A percentage as the meter shows it: whole numbers, `<1 %` for a little spend. */
export function formatPercent(percent: number): string {
  if (!Number.isFinite(percent)) {
    return '– %';
  }
  if (percent > 0 && percent < 1) {
    return '<1 %';
  }
  return `${Math.floor(percent)} %`;
}

/** Map a budget state (and its percentage, as a safety net) to the meter level. */
export function levelOf(state: BudgetState, percent: number): MeterLevel {
  if (state === 'exceeded' || percent >= 100) {
    return 'danger';
  }
  if (state === 'warning') {
    return 'warning';
  }
  return 'ok';
}

/** `acme/churn month` */
export function budgetLabel(
  budget: Pick<IBudget, 'budget' | 'period'>
): string {
  return budget.period === 'total'
    ? `${budget.budget} total`
    : `${budget.budget} ${budget.period}`;
}

export interface IMeterView {
  text: string;
  level: MeterLevel;
  title: string;
}

/**
 * What the status bar shows for a status: `$12.40 · 62 % of acme/churn month`, or
 * today's spend when no budget applies, or a short error.
 */
export function meterView(
  status: IStatus | null,
  error?: string | null
): IMeterView {
  if (status === null) {
    return error
      ? { text: 'llmspend: –', level: 'unknown', title: `llmspend: ${error}` }
      : { text: 'llmspend…', level: 'unknown', title: 'llmspend: loading' };
  }
  const ctx = `${status.context.org}/${status.context.project}/${status.context.user}`;
  // calls of a model with no known price are never shown as a silent $0
  const unpriced = status.today.unpriced_calls ?? 0;
  const today =
    `today ${formatUsd(status.today.spent_usd)} in ${plural(status.today.calls, 'call')}` +
    (unpriced > 0 ? ` (${unpriced} unpriced, not counted)` : '');
  const b = status.headline;
  if (b === null) {
    return {
      text:
        `${formatUsd(status.today.spent_usd)} today` +
        (unpriced > 0 ? ` + ${unpriced} unpriced` : ''),
      level: 'ok',
      title: `llmspend (${ctx}): no budget applies; ${today}. Click for details.`
    };
  }
  const text = `${formatUsd(b.spent_usd)} · ${formatPercent(b.percent_used)} of ${budgetLabel(b)}`;
  const stale = error ? ` (not refreshed: ${error})` : '';
  return {
    text,
    level: levelOf(b.state, b.percent_used),
    title:
      `llmspend (${ctx}): ${b.scope} budget ${b.budget}: ${formatUsd(b.spent_usd)} of ` +
      `${formatUsd(b.limit_usd)} this ${b.period === 'total' ? 'budget' : b.period}` +
      `, ${formatUsd(b.remaining_usd)} left; ${today}${stale}. Click for details.`
  };
}

/** Width of a progress bar, clamped to 0–100 %. */
export function barWidth(percent: number): string {
  const clamped = Math.max(
    0,
    Math.min(100, Number.isFinite(percent) ? percent : 0)
  );
  return `${clamped.toFixed(1)}%`;
}

/** The notification text of an alert. */
export function alertText(alert: IAlert): string {
  if (alert.kind === 'refused') {
    return (
      `llmspend: the ${alert.scope} budget ${alert.budget} refused a call ` +
      `(${formatUsd(alert.spent_usd)} of ${formatUsd(alert.limit_usd)} spent).`
    );
  }
  return (
    `llmspend: the ${alert.scope} budget ${alert.budget} reached ` +
    `${Math.round(alert.threshold * 100)} % (${formatUsd(alert.spent_usd)} of ` +
    `${formatUsd(alert.limit_usd)}).`
  );
}

/** Notification type of an alert: over the limit or refused is an error. */
export function alertSeverity(alert: IAlert): 'warning' | 'error' {
  return alert.kind === 'refused' || alert.threshold >= 1 ? 'error' : 'warning';
}

/**
 * The alerts to notify: newer than the last one notified (`lastSeen`), unacknowledged,
 * oldest first. On the very first run (`lastSeen === null`) only the unacknowledged
 * alerts of the last `freshMs` are shown, so an old backlog does not flood a new browser.
 */
export function alertsToNotify(
  alerts: IAlert[],
  lastSeen: number | null,
  now: number,
  freshMs = 60 * 60 * 1000
): IAlert[] {
  return alerts
    .filter(a => !a.acknowledged)
    .filter(a =>
      lastSeen === null ? now - Date.parse(a.ts) <= freshMs : a.id > lastSeen
    )
    .sort((a, b) => a.id - b.id);
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
