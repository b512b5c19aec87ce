/**
 * The budget form's values, checked before they are sent, and turned into the JSON body of
 * `POST` / `PATCH /llmspend/budgets`. Pure (no JupyterLab imports): unit-tested.
 *
 * The checks here catch typing mistakes early and say where; the server (the llmspend
 * library) stays the judge, and its message is shown the same way when it refuses.
 */
import type { IBudgetDef } from './types';

export type Scope = IBudgetDef['scope'];

export const SCOPES: Scope[] = ['org', 'project', 'user'];
export const PERIODS = ['day', 'week', 'month', 'quarter', 'year', 'total'];
export const MODES: IBudgetDef['mode'][] = ['hard', 'soft'];

/** What the form holds: all text, as typed. */
export interface IBudgetFormValues {
  scope: Scope;
  /** `acme`, `acme/churn`, `acme/ana`, `acme/churn/ana` (`*` last: a default). */
  name: string;
  /** USD, e.g. `100` or `12.50` (a `$` and thousands commas are allowed). */
  limit: string;
  period: string;
  mode: string;
  /** Percentages of the limit, e.g. `50, 80, 100`. */
  thresholds: string;
  timezone: string;
  /** Empty: no webhook (when creating) or unchanged (when editing). */
  webhook: string;
  /** Editing only: remove the budget's webhook. */
  removeWebhook: boolean;
}

/** Field name → what is wrong with it. */
export type FormErrors = Partial<Record<keyof IBudgetFormValues, string>>;

export interface IChecked {
  errors: FormErrors;
  body: Record<string, unknown>;
}

const NAME_PART = /^[^/\s]+$/;

/** How a budget of `scope` is named. */
export function nameHint(scope: Scope): string {
  switch (scope) {
    case 'org':
      return 'acme';
    case 'project':
      return 'acme/churn or acme/*';
    default:
      return 'acme/ana or acme/churn/ana';
  }
}

/** Why `name` is not a `scope` budget's name, or `null`. */
export function checkName(scope: Scope, name: string): string | null {
  const text = name.trim();
  if (!text) {
    return 'Name is required.';
  }
  const parts = text.split('/');
  const allowed = scope === 'org' ? [1] : scope === 'project' ? [2] : [2, 3];
  if (!allowed.includes(parts.length) || !parts.every(p => NAME_PART.test(p))) {
    return `A ${scope} budget is named like ${nameHint(scope)}.`;
  }
  if (scope === 'org' && parts[0] === '*') {
    return 'An org budget cannot be a default (*).';
  }
  return null;
}

/** A limit as typed → the decimal string sent, or the problem. */
export function parseLimit(text: string): { value?: string; error?: string } {
  const cleaned = text.trim().replace(/^\$/, '').replace(/,/g, '');
  if (!cleaned) {
    return { error: 'Limit is required (USD, e.g. 100 or 12.50).' };
  }
  if (!/^[-+]?(\d+\.?\d*|\.\d+)$/.test(cleaned)) {
    return {
      error: `Limit must be an amount of USD such as 100 or 12.50, not "${text.trim()}".`
    };
  }
  if (Number(cleaned) <= 0) {
    return { error: 'Limit must be greater than $0.' };
  }
  return { value: cleaned.replace(/^\+/, '') };
}

/** `50, 80, 100` (percent) → `["0.5", "0.8", "1"]`, or the problem. Empty: no alerts. */
export function parseThresholds(text: string): {
  value?: string[];
  error?: string;
} {
  const parts = text
    .split(/[,\s]+/)
    .map(p => p.trim().replace(/%$/, ''))
    .filter(Boolean);
  const out: string[] = [];
  let last = 0;
  for (const part of parts) {
    if (!/^(\d+\.?\d*|\.\d+)$/.test(part)) {
      return {
        error: `Thresholds are percentages such as 50, 80, 100; "${part}" is not.`
      };
    }
    const percent = Number(part);
    if (percent <= 0 || percent > 100) {
      return {
        error: `Each threshold is a percentage in (0, 100]; ${part} is not.`
      };
    }
    if (percent <= last) {
      return { error: 'Thresholds must increase, e.g. 50, 80, 100.' };
    }
    last = percent;
    out.push(percentToFraction(part));
  }
  return { value: out };
}

/** `"80"` → `"0.8"`, `"12.5"` → `"0.125"`, exactly (decimal text, no float rounding). */
export function percentToFraction(percent: string): string {
  const [whole, frac = ''] = percent.split('.');
  const digits = (whole.replace(/^0+/, '') || '0').padStart(3, '0') + frac;
  const point = digits.length - frac.length - 2;
  const fraction = `${digits.slice(0, point)}.${digits.slice(point)}`;
  return fraction.replace(/^0+(?=\d)/, '').replace(/\.?0+$/, '') || '0';
}

/** `["0.5", "0.8", "1"]` → `50, 80, 100` (what the form shows when editing). */
export function thresholdsText(fractions: string[]): string {
  return fractions
    .map(f => String(Number((Number(f) * 100).toPrecision(12))))
    .join(', ');
}

/**
 * Check the form and build the request body. Editing sends only what changed from
 * `original` (scope and name identify the budget; an empty webhook leaves it as it is).
 */
export function checkBudgetForm(
  values: IBudgetFormValues,
  original: IBudgetDef | null = null
): IChecked {
  const errors: FormErrors = {};
  const body: Record<string, unknown> = {
    scope: original?.scope ?? values.scope,
    name: original?.name ?? values.name.trim()
  };
  if (!original) {
    const nameError = checkName(values.scope, values.name);
    if (nameError) {
      errors.name = nameError;
    }
  }
  const limit = parseLimit(values.limit);
  if (limit.error) {
    errors.limit = limit.error;
  } else if (!original || Number(limit.value) !== Number(original.limit_usd)) {
    body.limit = limit.value;
  }
  const thresholds = parseThresholds(values.thresholds);
  if (thresholds.error) {
    errors.thresholds = thresholds.error;
  } else if (
    !original ||
    thresholds.value!.map(Number).join() !==
      original.thresholds.map(Number).join()
  ) {
    body.thresholds = thresholds.value;
  }
  if (!PERIODS.includes(values.period)) {
    errors.period = `Period is one of ${PERIODS.join(', ')}.`;
  } else if (!original || values.period !== original.period) {
    body.period = values.period;
  }
  if (!(MODES as string[]).includes(values.mode)) {
    errors.mode = 'Mode is hard or soft.';
  } else if (!original || values.mode !== original.mode) {
    body.mode = values.mode;
  }
  const tz = values.timezone.trim() || 'UTC';
  if (/\s/.test(tz)) {
    errors.timezone = 'A time zone is an IANA name such as Europe/Berlin.';
  } else if (!original || tz !== original.timezone) {
    body.timezone = tz;
  }
  const webhook = values.webhook.trim();
  if (webhook && !/^https?:\/\/[^\s/]+/.test(webhook)) {
    errors.webhook = 'A webhook is an http(s) URL.';
  } else if (original && values.removeWebhook) {
    body.webhook_url = null;
  } else if (webhook) {
    body.webhook_url = webhook;
  }
  return { errors, body };
}

/** Whether a checked form has anything to send. */
export function hasChanges(checked: IChecked): boolean {
  return Object.keys(checked.body).some(k => k !== 'scope' && k !== 'name');
}

/** One line describing a budget's definition, as the panel lists it. */
export function describeBudget(b: IBudgetDef): string {
  const alerts = b.thresholds.length
    ? `alerts at ${thresholdsText(b.thresholds)} %`
    : 'no alerts';
  const parts = [
    `${b.mode} · per ${b.period}`,
    b.timezone !== 'UTC' ? b.timezone : '',
    alerts,
    b.webhook_url ? `webhook ${b.webhook_url}` : b.has_webhook ? 'webhook' : '',
    b.is_default ? 'default for each child' : ''
  ];
  return parts.filter(Boolean).join(' · ');
}
