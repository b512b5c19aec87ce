import {
  checkBudgetForm,
  checkName,
  describeBudget,
  hasChanges,
  IBudgetFormValues,
  parseLimit,
  parseThresholds,
  percentToFraction,
  thresholdsText
} from '../budgetform';
import type { IBudgetDef } from '../types';

function values(overrides: Partial<IBudgetFormValues> = {}): IBudgetFormValues {
  return {
    scope: 'project',
    name: 'acme/churn',
    limit: '25',
    period: 'month',
    mode: 'hard',
    thresholds: '50, 80, 100',
    timezone: 'UTC',
    webhook: '',
    removeWebhook: false,
    ...overrides
  };
}

function def(overrides: Partial<IBudgetDef> = {}): IBudgetDef {
  return {
    scope: 'project',
    name: 'acme/churn',
    limit_usd: '25',
    period: 'month',
    mode: 'hard',
    thresholds: ['0.5', '0.8', '1'],
    timezone: 'UTC',
    week_start: 0,
    unpriced: 'refuse',
    webhook_url: null,
    has_webhook: false,
    is_default: false,
    inherited: false,
    updated_at: '2026-12-05T10:00:00',
    can_change: true,
    ...overrides
  };
}

describe('parseLimit', () => {
  it('accepts amounts as people type them', () => {
    expect(parseLimit('100')).toEqual({ value: '100' });
    expect(parseLimit(' $1,250.50 ')).toEqual({ value: '1250.50' });
    expect(parseLimit('.5')).toEqual({ value: '.5' });
  });
  it('refuses empty, non-numbers, zero and negatives with a clear message', () => {
    expect(parseLimit('').error).toMatch('required');
    expect(parseLimit('lots').error).toMatch('amount of USD');
    expect(parseLimit('1e3').error).toMatch('amount of USD');
    expect(parseLimit('0').error).toMatch('greater than $0');
    expect(parseLimit('-5').error).toMatch('greater than $0');
  });
});

describe('thresholds', () => {
  it('turns percentages into exact fractions', () => {
    expect(parseThresholds('50, 80, 100')).toEqual({
      value: ['0.5', '0.8', '1']
    });
    expect(parseThresholds('12.5% 99.9')).toEqual({
      value: ['0.125', '0.999']
    });
    expect(parseThresholds('')).toEqual({ value: [] });
    expect(percentToFraction('5')).toBe('0.05');
    expect(percentToFraction('0.5')).toBe('0.005');
    expect(percentToFraction('100')).toBe('1');
  });
  it('refuses what the library would', () => {
    expect(parseThresholds('50, 150').error).toMatch('(0, 100]');
    expect(parseThresholds('80, 50').error).toMatch('increase');
    expect(parseThresholds('half').error).toMatch('"half"');
    expect(parseThresholds('0').error).toMatch('(0, 100]');
  });
  it('shows fractions back as percentages', () => {
    expect(thresholdsText(['0.5', '0.8', '1'])).toBe('50, 80, 100');
    expect(thresholdsText(['0.125'])).toBe('12.5');
  });
});

describe('checkName', () => {
  it('knows how each scope is named', () => {
    expect(checkName('org', 'acme')).toBeNull();
    expect(checkName('project', 'acme/churn')).toBeNull();
    expect(checkName('project', 'acme/*')).toBeNull();
    expect(checkName('user', 'acme/ana')).toBeNull();
    expect(checkName('user', 'acme/churn/ana')).toBeNull();
    expect(checkName('org', '')).toMatch('required');
    expect(checkName('project', 'acme')).toMatch('acme/churn');
    expect(checkName('org', 'acme/churn')).toMatch('named like acme');
    expect(checkName('user', 'acme//ana')).toMatch('named like');
  });
});

describe('checkBudgetForm', () => {
  it('builds the create body', () => {
    const checked = checkBudgetForm(
      values({
        mode: 'soft',
        timezone: 'Europe/Berlin',
        webhook: 'https://h.example/x'
      })
    );
    expect(checked.errors).toEqual({});
    expect(checked.body).toEqual({
      scope: 'project',
      name: 'acme/churn',
      limit: '25',
      period: 'month',
      mode: 'soft',
      thresholds: ['0.5', '0.8', '1'],
      timezone: 'Europe/Berlin',
      webhook_url: 'https://h.example/x'
    });
  });
  it('names every bad field', () => {
    const checked = checkBudgetForm(
      values({
        name: 'acme',
        limit: '-1',
        thresholds: '90, 10',
        webhook: 'ftp://x'
      })
    );
    expect(Object.keys(checked.errors).sort()).toEqual([
      'limit',
      'name',
      'thresholds',
      'webhook'
    ]);
  });
  it('sends only what changed when editing, and keeps the webhook unless removed', () => {
    const original = def({
      has_webhook: true,
      webhook_url: 'https://h.example/***'
    });
    const same = checkBudgetForm(values(), original);
    expect(same.errors).toEqual({});
    expect(hasChanges(same)).toBe(false);
    const changed = checkBudgetForm(
      values({ limit: '40.00', mode: 'soft' }),
      original
    );
    expect(changed.body).toEqual({
      scope: 'project',
      name: 'acme/churn',
      limit: '40.00',
      mode: 'soft'
    });
    const removed = checkBudgetForm(values({ removeWebhook: true }), original);
    expect(removed.body).toEqual({
      scope: 'project',
      name: 'acme/churn',
      webhook_url: null
    });
  });
});

describe('describeBudget', () => {
  it('summarizes a definition on one line', () => {
    expect(describeBudget(def())).toBe(
      'hard · per month · alerts at 50, 80, 100 %'
    );
    expect(
      describeBudget(
        def({
          mode: 'soft',
          timezone: 'Asia/Tokyo',
          thresholds: [],
          has_webhook: true,
          webhook_url: 'https://h.example/***'
        })
      )
    ).toBe(
      'soft · per month · Asia/Tokyo · no alerts · webhook https://h.example/***'
    );
    expect(describeBudget(def({ has_webhook: true }))).toContain('· webhook');
  });
});
