import {
  alertSeverity,
  alertsToNotify,
  alertText,
  barWidth,
  formatPercent,
  formatUsd,
  levelOf,
  meterView
} from '../format';
import type { IAlert, IBudget, IStatus } from '../types';

function budget(overrides: Partial<IBudget> = {}): IBudget {
  return {
    budget: 'acme/churn',
    scope: 'project',
    mode: 'hard',
    period: 'month',
    timezone: 'UTC',
    period_start: '2025-06-01T00:00:00+00:00',
    period_end: '2025-07-01T00:00:00+00:00',
    limit_usd: '20',
    spent_usd: '12.4',
    reserved_usd: '0',
    remaining_usd: '7.6',
    projected_usd: '30',
    percent_used: 62,
    state: 'ok',
    calls: 12,
    inherited: false,
    ...overrides
  };
}

function status(headline: IBudget | null, todayUsd = '1.5'): IStatus {
  return {
    context: { org: 'acme', project: 'churn', user: 'ana' },
    generated_at: '2025-06-10T12:00:00+00:00',
    budgets: headline ? [headline] : [],
    headline,
    today: {
      since: '2025-06-10T00:00:00+00:00',
      until: null,
      spent_usd: todayUsd,
      calls: 3,
      unpriced_calls: 0
    },
    alerts: { unacknowledged: 0, latest_id: null }
  };
}

function alert(id: number, overrides: Partial<IAlert> = {}): IAlert {
  return {
    id,
    kind: 'threshold',
    ts: '2025-06-10T12:00:00+00:00',
    budget: 'acme/churn',
    scope: 'project',
    org: 'acme',
    project: 'churn',
    user: 'ana',
    threshold: 0.5,
    percent_used: 51,
    spent_usd: '10.2',
    limit_usd: '20',
    call_cost_usd: '0.3',
    period_start: '2025-06-01T00:00:00+00:00',
    acknowledged: false,
    metadata: {},
    ...overrides
  };
}

describe('formatUsd', () => {
  it('shows dollars and cents with thousands separators', () => {
    expect(formatUsd('12.4')).toBe('$12.40');
    expect(formatUsd('1234.5')).toBe('$1,234.50');
    expect(formatUsd('0')).toBe('$0.00');
    expect(formatUsd('100')).toBe('$100.00');
  });

  it('keeps the digits of small non-zero amounts', () => {
    expect(formatUsd('0.00021')).toBe('$0.00021');
    expect(formatUsd('0.00000015')).toBe('<$0.000001');
    expect(formatUsd('0.005')).toBe('$0.005');
  });

  it('says n/a for unknown money', () => {
    expect(formatUsd(null)).toBe('n/a');
    expect(formatUsd(undefined)).toBe('n/a');
    expect(formatUsd('not money')).toBe('n/a');
  });
});

describe('formatPercent', () => {
  it('rounds down to whole percent and marks a little spend', () => {
    expect(formatPercent(62.9)).toBe('62 %');
    expect(formatPercent(0)).toBe('0 %');
    expect(formatPercent(0.3)).toBe('<1 %');
    expect(formatPercent(150)).toBe('150 %');
  });
});

describe('meter states', () => {
  it('follows the budget state', () => {
    expect(levelOf('ok', 62)).toBe('ok');
    expect(levelOf('warning', 81)).toBe('warning');
    expect(levelOf('exceeded', 100)).toBe('danger');
  });

  it('is danger at 100 % even if the state lags', () => {
    expect(levelOf('ok', 100)).toBe('danger');
  });

  it('names the calls of a model with no known price instead of a silent $0', () => {
    const none = status(null, '0');
    none.today.unpriced_calls = 2;
    const view = meterView(none);
    expect(view.text).toBe('$0.00 today + 2 unpriced');
    expect(view.title).toContain(
      'today $0.00 in 3 calls (2 unpriced, not counted)'
    );
    const withBudget = status(budget());
    withBudget.today.unpriced_calls = 1;
    expect(meterView(withBudget).title).toContain('(1 unpriced, not counted)');
    expect(meterView(status(null)).text).toBe('$1.50 today');
  });

  it('shows the headline budget', () => {
    const view = meterView(status(budget()));
    expect(view.text).toBe('$12.40 · 62 % of acme/churn month');
    expect(view.level).toBe('ok');
    expect(view.title).toContain('$7.60 left');
  });

  it('turns warning and danger at the thresholds', () => {
    expect(
      meterView(status(budget({ percent_used: 80, state: 'warning' }))).level
    ).toBe('warning');
    const over = meterView(
      status(budget({ spent_usd: '21', percent_used: 105, state: 'exceeded' }))
    );
    expect(over.level).toBe('danger');
    expect(over.text).toBe('$21.00 · 105 % of acme/churn month');
  });

  it('names total budgets without a period', () => {
    const view = meterView(status(budget({ period: 'total', budget: 'acme' })));
    expect(view.text).toBe('$12.40 · 62 % of acme total');
  });

  it("shows today's spend when no budget applies", () => {
    const view = meterView(status(null, '0.42'));
    expect(view.text).toBe('$0.42 today');
    expect(view.level).toBe('ok');
  });

  it('is unknown while loading or failing', () => {
    expect(meterView(null).level).toBe('unknown');
    const failed = meterView(null, 'Forbidden');
    expect(failed.level).toBe('unknown');
    expect(failed.title).toContain('Forbidden');
  });

  it('keeps the last numbers when a refresh fails', () => {
    const view = meterView(status(budget()), 'Network error');
    expect(view.text).toBe('$12.40 · 62 % of acme/churn month');
    expect(view.title).toContain('not refreshed: Network error');
  });
});

describe('barWidth', () => {
  it('clamps to 0–100 %', () => {
    expect(barWidth(62)).toBe('62.0%');
    expect(barWidth(150)).toBe('100.0%');
    expect(barWidth(-1)).toBe('0.0%');
    expect(barWidth(NaN)).toBe('0.0%');
  });
});

describe('alerts', () => {
  it('describes thresholds and refusals', () => {
    expect(alertText(alert(1))).toBe(
      'llmspend: the project budget acme/churn reached 50 % ($10.20 of $20.00).'
    );
    expect(alertSeverity(alert(1))).toBe('warning');
    expect(alertSeverity(alert(2, { threshold: 1 }))).toBe('error');
    const refused = alert(3, { kind: 'refused', threshold: 0 });
    expect(alertText(refused)).toContain('refused a call');
    expect(alertSeverity(refused)).toBe('error');
  });

  it('notifies each new unacknowledged alert once, oldest first', () => {
    const now = Date.parse('2025-06-10T12:30:00Z');
    const list = [
      alert(7),
      alert(6, { acknowledged: true }),
      alert(5),
      alert(4)
    ];
    expect(alertsToNotify(list, 4, now).map(a => a.id)).toEqual([5, 7]);
    expect(alertsToNotify(list, 7, now)).toEqual([]);
  });

  it('on a first visit only shows recent alerts', () => {
    const now = Date.parse('2025-06-10T12:30:00Z');
    const old = alert(1, { ts: '2025-06-09T12:00:00+00:00' });
    expect(alertsToNotify([alert(2), old], null, now).map(a => a.id)).toEqual([
      2
    ]);
  });
});
