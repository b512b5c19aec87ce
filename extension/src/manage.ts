import {
  checkBudgetForm,
  describeBudget,
  FormErrors,
  hasChanges,
  IBudgetFormValues,
  MODES,
  nameHint,
  PERIODS,
  Scope,
  SCOPES,
  thresholdsText
} from './budgetform';
import { h } from './dom';
import { formatUsd } from './format';
import type { SpendModel } from './model';
import type { IBudgetDef } from './types';

type Field = keyof IBudgetFormValues;

const LABELS: Record<Field, string> = {
  scope: 'Scope',
  name: 'Name',
  limit: 'Limit (USD)',
  period: 'Period',
  mode: 'Mode',
  thresholds: 'Alert at (% of limit)',
  timezone: 'Time zone',
  webhook: 'Webhook URL',
  removeWebhook: 'Remove the webhook'
};

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The panel's "Budget settings" section: every budget the server shows this user, and,
 * when the server says `can_manage`, a form to create one and edit/delete buttons on those
 * it may change (`can_change`: in team mode, an owner's own, not the org's). The
 * form is built once and kept (redraws replace only the list), so typing is never lost.
 */
export class BudgetManager {
  constructor(model: SpendModel) {
    this._model = model;
    this._form = this._buildForm();
    this.node = h(
      'section',
      { class: 'jp-LLMSpendPanel-manage', 'data-llmspend': 'manage' },
      h('h3', {}, 'Budget settings'),
      this._list
    );
  }

  readonly node: HTMLElement;

  /** Redraw the list (and show or drop the form) from the model. */
  update(): void {
    const listing = this._model.budgets;
    const canManage = listing?.can_manage ?? false;
    if (!canManage && this._editing) {
      this._reset();
    }
    const rows = (listing?.budgets ?? []).map(b => this._row(b, canManage));
    this._list.replaceChildren(
      ...(rows.length
        ? rows
        : [
            h(
              'div',
              { class: 'jp-LLMSpendPanel-empty' },
              listing ? 'No budget set.' : 'Loading…'
            )
          ]),
      ...(listing && !canManage
        ? [
            h(
              'div',
              {
                class: 'jp-LLMSpendPanel-details',
                'data-llmspend': 'read-only'
              },
              'Read-only: an owner or admin changes budgets.'
            )
          ]
        : [])
    );
    if (canManage && !this._form.isConnected) {
      this.node.append(this._form);
    } else if (!canManage && this._form.isConnected) {
      this._form.remove();
    }
  }

  private _row(b: IBudgetDef, canManage: boolean): HTMLElement {
    const key = `${b.scope}:${b.name}`;
    const buttons: HTMLElement[] = [];
    if (canManage && b.can_change) {
      const edit = h(
        'button',
        { type: 'button', 'data-llmspend': 'edit' },
        'Edit'
      );
      edit.addEventListener('click', () => this._edit(b));
      const confirming = this._confirming === key;
      const del = h(
        'button',
        {
          type: 'button',
          class: confirming ? 'jp-mod-warn' : '',
          'data-llmspend': confirming ? 'delete-confirm' : 'delete'
        },
        confirming ? 'Really delete?' : 'Delete'
      );
      del.addEventListener('click', () => void this._delete(b, key));
      buttons.push(edit, del);
    }
    return h(
      'div',
      {
        class: 'jp-LLMSpendPanel-def',
        'data-llmspend': 'budget-def',
        'data-def': key
      },
      h(
        'div',
        { class: 'jp-LLMSpendPanel-row' },
        h('span', { class: 'jp-LLMSpendPanel-name' }, `${b.scope} ${b.name}`),
        h(
          'span',
          { 'data-llmspend': 'def-limit' },
          `${formatUsd(b.limit_usd)} per ${b.period}`
        )
      ),
      h('div', { class: 'jp-LLMSpendPanel-details' }, describeBudget(b)),
      buttons.length
        ? h('div', { class: 'jp-LLMSpendPanel-actions' }, ...buttons)
        : null
    );
  }

  private async _delete(b: IBudgetDef, key: string): Promise<void> {
    if (this._confirming !== key) {
      this._confirming = key;
      this.update();
      return;
    }
    this._confirming = null;
    try {
      await this._model.deleteBudget(b.scope, b.name);
      if (this._editing?.scope === b.scope && this._editing?.name === b.name) {
        this._reset();
      }
    } catch (error) {
      this._showError(describe(error));
      this.update();
    }
  }

  // -- the form --------------------------------------------------------------------------
  private _buildForm(): HTMLFormElement {
    const form = h('form', {
      class: 'jp-LLMSpendPanel-form',
      'data-llmspend': 'budget-form',
      novalidate: ''
    }) as HTMLFormElement;
    const scope = this._select('scope', SCOPES);
    scope.addEventListener('change', () => {
      this._inputs.name?.setAttribute(
        'placeholder',
        nameHint(scope.value as Scope)
      );
    });
    const name = this._input('name', nameHint('org'));
    const fields: [Field, HTMLElement][] = [
      ['scope', scope],
      ['name', name],
      ['limit', this._input('limit', '100')],
      ['period', this._select('period', PERIODS, 'month')],
      ['mode', this._select('mode', MODES)],
      ['thresholds', this._input('thresholds', '50, 80, 100', '50, 80, 100')],
      ['timezone', this._input('timezone', 'UTC', 'UTC')],
      ['webhook', this._input('webhook', 'https://hooks.example.com/…')]
    ];
    const remove = h('input', {
      type: 'checkbox',
      'data-field': 'removeWebhook'
    }) as HTMLInputElement;
    this._inputs.removeWebhook = remove;
    this._removeRow = h(
      'label',
      { class: 'jp-LLMSpendPanel-check' },
      remove,
      LABELS.removeWebhook
    );
    this._removeRow.hidden = true;
    this._cancel.addEventListener('click', () => this._reset());
    this._cancel.hidden = true;
    form.addEventListener('submit', event => {
      event.preventDefault();
      void this._save();
    });
    form.append(
      this._title,
      ...fields.map(([field, control]) => this._labelled(field, control)),
      this._removeRow,
      this._formError,
      h(
        'div',
        { class: 'jp-LLMSpendPanel-actions' },
        this._submit,
        this._cancel
      )
    );
    this._formError.hidden = true;
    return form;
  }

  private _labelled(field: Field, control: HTMLElement): HTMLElement {
    const error = h('div', {
      class: 'jp-LLMSpendPanel-fieldError',
      role: 'alert',
      'data-error-for': field
    });
    error.hidden = true;
    this._errors[field] = error;
    const id = `llmspend-budget-${field}`;
    control.id = id;
    return h(
      'div',
      { class: 'jp-LLMSpendPanel-field' },
      h('label', { for: id }, LABELS[field]),
      control,
      error
    );
  }

  private _input(
    field: Field,
    placeholder: string,
    value = ''
  ): HTMLInputElement {
    const input = h('input', {
      type: 'text',
      placeholder,
      'data-field': field
    }) as HTMLInputElement;
    input.value = value;
    this._inputs[field] = input;
    return input;
  }

  private _select(
    field: Field,
    options: string[],
    value?: string
  ): HTMLSelectElement {
    const select = h(
      'select',
      { 'data-field': field },
      ...options.map(o => h('option', { value: o }, o))
    ) as HTMLSelectElement;
    select.value = value ?? options[0];
    this._inputs[field] = select;
    return select;
  }

  private _values(): IBudgetFormValues {
    const v = (f: Field) => (this._inputs[f] as HTMLInputElement).value;
    return {
      scope: v('scope') as Scope,
      name: v('name'),
      limit: v('limit'),
      period: v('period'),
      mode: v('mode'),
      thresholds: v('thresholds'),
      timezone: v('timezone'),
      webhook: v('webhook'),
      removeWebhook: (this._inputs.removeWebhook as HTMLInputElement).checked
    };
  }

  private _set(field: Field, value: string): void {
    (this._inputs[field] as HTMLInputElement).value = value;
  }

  private _showErrors(errors: FormErrors): void {
    for (const [field, el] of Object.entries(this._errors)) {
      const message = errors[field as Field];
      el.textContent = message ?? '';
      el.hidden = !message;
      this._inputs[field as Field]?.setAttribute(
        'aria-invalid',
        message ? 'true' : 'false'
      );
    }
  }

  private _showError(message: string | null): void {
    this._formError.textContent = message ?? '';
    this._formError.hidden = !message;
  }

  private _edit(b: IBudgetDef): void {
    this._editing = b;
    this._title.textContent = `Edit ${b.scope} ${b.name}`;
    this._set('scope', b.scope);
    this._set('name', b.name);
    this._set('limit', b.limit_usd);
    this._set('period', b.period);
    this._set('mode', b.mode);
    this._set('thresholds', thresholdsText(b.thresholds));
    this._set('timezone', b.timezone);
    this._set('webhook', '');
    this._inputs.webhook?.setAttribute(
      'placeholder',
      b.webhook_url ? `unchanged (${b.webhook_url})` : 'none'
    );
    (this._inputs.removeWebhook as HTMLInputElement).checked = false;
    this._removeRow.hidden = !b.has_webhook;
    this._inputs.scope!.setAttribute('disabled', '');
    this._inputs.name!.setAttribute('disabled', '');
    this._submit.textContent = 'Save changes';
    this._cancel.hidden = false;
    this._showErrors({});
    this._showError(null);
    this._inputs.limit?.focus();
  }

  private _reset(): void {
    this._editing = null;
    this._title.textContent = 'New budget';
    this._form.reset();
    this._set('scope', 'org');
    this._set('name', '');
    this._set('limit', '');
    this._set('period', 'month');
    this._set('mode', 'hard');
    this._set('thresholds', '50, 80, 100');
    this._set('timezone', 'UTC');
    this._set('webhook', '');
    this._inputs.webhook?.setAttribute(
      'placeholder',
      'https://hooks.example.com/…'
    );
    this._inputs.name?.setAttribute('placeholder', nameHint('org'));
    this._removeRow.hidden = true;
    this._inputs.scope!.removeAttribute('disabled');
    this._inputs.name!.removeAttribute('disabled');
    this._submit.textContent = 'Create budget';
    this._cancel.hidden = true;
    this._showErrors({});
    this._showError(null);
  }

  private async _save(): Promise<void> {
    if (this._saving) {
      return;
    }
    const editing = this._editing;
    const checked = checkBudgetForm(this._values(), editing);
    this._showErrors(checked.errors);
    this._showError(null);
    if (Object.keys(checked.errors).length) {
      return;
    }
    if (editing && !hasChanges(checked)) {
      this._showError('Nothing changed.');
      return;
    }
    this._saving = true;
    this._submit.setAttribute('disabled', '');
    try {
      await this._model.saveBudget(checked.body, editing !== null);
      this._reset();
      this._showError(null);
    } catch (error) {
      this._showError(describe(error)); // the library's own message
    } finally {
      this._saving = false;
      this._submit.removeAttribute('disabled');
    }
  }

  private _model: SpendModel;
  private _list = h('div', { class: 'jp-LLMSpendPanel-defs' });
  private _form: HTMLFormElement;
  private _inputs: Partial<Record<Field, HTMLElement>> = {};
  private _errors: Partial<Record<Field, HTMLElement>> = {};
  private _title = h('h4', { 'data-llmspend': 'form-title' }, 'New budget');
  private _formError = h('div', {
    class: 'jp-LLMSpendPanel-formError',
    role: 'alert',
    'data-llmspend': 'form-error'
  });
  private _submit = h(
    'button',
    { type: 'submit', class: 'jp-mod-accept', 'data-llmspend': 'save' },
    'Create budget'
  );
  private _cancel = h(
    'button',
    { type: 'button', 'data-llmspend': 'cancel' },
    'Cancel'
  );
  private _removeRow!: HTMLElement;
  private _editing: IBudgetDef | null = null;
  private _confirming: string | null = null;
  private _saving = false;
}
