import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  barWidth,
  budgetLabel,
  formatPercent,
  formatUsd,
  levelOf,
  plural
} from './format';
import { h } from './dom';
import { BudgetManager } from './manage';
import type { SpendModel } from './model';
import type { IAlert, IBudget, ISpend } from './types';

const COIN_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
  '<g class="jp-icon3" fill="#616161"><path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 ' +
  '18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.9-8.9c-1.8-.5-2.4-.9-2.4-1.7 0-.8.8-1.4 2-1.4 1.3 0 ' +
  '1.8.6 1.8 1.5h1.8c-.1-1.3-.9-2.5-2.5-2.9V5h-2.4v1.6C9.6 7 8.4 8 8.4 9.4c0 1.8 1.5 2.6 ' +
  '3.6 3.1 1.9.5 2.3 1.1 2.3 1.8 0 .5-.4 1.4-2.1 1.4-1.6 0-2.2-.7-2.3-1.5H8.1c.1 1.6 1.3 ' +
  '2.6 2.8 2.9V19h2.4v-1.6c1.5-.3 2.8-1.2 2.8-2.8 0-2.2-1.9-3-3.2-3.5z"/></g></svg>';

export const spendIcon = new LabIcon({
  name: 'llmspend:coin',
  svgstr: COIN_SVG
});

const LEVELS: { scope: IBudget['scope']; title: string }[] = [
  { scope: 'org', title: 'Organization' },
  { scope: 'project', title: 'Project' },
  { scope: 'user', title: 'User' }
];

function when(iso: string | null): string {
  if (!iso) {
    return 'never';
  }
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/**
 * The budget panel (right side bar): budgets per level with progress bars, today's and
 * this period's spend, recent alerts with acknowledge buttons, and the budgets' settings
 * (a form to create, edit and delete them for those the server lets manage budgets).
 */
export class SpendPanel extends Widget {
  constructor(model: SpendModel) {
    super();
    this._model = model;
    this.id = 'llmspend-panel';
    this.addClass('jp-LLMSpendPanel');
    this.title.icon = spendIcon;
    this.title.caption = 'LLM spend and budgets';
    this._manager = new BudgetManager(model);
    // the manager's form stays in place while the rest is redrawn: what is typed survives
    this.node.replaceChildren(this._content, this._manager.node);
    model.changed.connect(this._render, this);
    model.statusFetched.connect(this._onStatus, this);
    this._render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.changed.disconnect(this._render, this);
    this._model.statusFetched.disconnect(this._onStatus, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    void this._model.loadDetails();
  }

  private _onStatus(): void {
    if (this.isVisible) {
      void this._model.loadDetails();
    }
  }

  private _render(): void {
    const status = this._model.status;
    const summary = this._model.summary;
    const error = this._model.error;
    const ctx = status?.context ?? summary?.context;
    const refresh = h(
      'button',
      { class: 'jp-LLMSpendPanel-refresh', type: 'button' },
      'Refresh'
    );
    refresh.addEventListener('click', () => {
      void this._model.refresh();
      void this._model.loadDetails();
    });
    const body = h(
      'div',
      { class: 'jp-LLMSpendPanel-body' },
      h(
        'header',
        { class: 'jp-LLMSpendPanel-header' },
        h('h2', {}, 'LLM spend'),
        refresh
      ),
      ctx
        ? h(
            'div',
            { class: 'jp-LLMSpendPanel-context' },
            `${ctx.org} / ${ctx.project} / ${ctx.user}`
          )
        : null,
      error
        ? h('div', { class: 'jp-LLMSpendPanel-error', role: 'alert' }, error)
        : null,
      this._spendSection(),
      this._budgetSection(),
      this._alertSection()
    );
    this._content.replaceChildren(body);
    this._manager.update();
  }

  private _spendSection(): HTMLElement {
    const summary = this._model.summary;
    const status = this._model.status;
    const rows: HTMLElement[] = [];
    const today = summary?.today ?? status?.today;
    if (today) {
      rows.push(this._spendRow('Today', today, 'today'));
    }
    if (summary) {
      const p = summary.period;
      const label = p.budget
        ? `This ${p.period} (${p.budget})`
        : `This ${p.period}`;
      rows.push(this._spendRow(label, p, 'period'));
      if (summary.top_model) {
        const m = summary.top_model;
        rows.push(
          h(
            'div',
            { class: 'jp-LLMSpendPanel-row', 'data-llmspend': 'top-model' },
            h('span', {}, 'Top model'),
            h(
              'span',
              {},
              `${m.model} · ${formatUsd(m.spent_usd)} in ${plural(m.calls, 'call')}`
            )
          )
        );
      }
    }
    return h(
      'section',
      { class: 'jp-LLMSpendPanel-spend' },
      h('h3', {}, 'Your spend'),
      ...(rows.length ? rows : [h('div', {}, 'Loading…')])
    );
  }

  private _spendRow(label: string, spend: ISpend, key: string): HTMLElement {
    const unpriced =
      spend.unpriced_calls > 0 ? ` (${spend.unpriced_calls} unpriced)` : '';
    return h(
      'div',
      { class: 'jp-LLMSpendPanel-row', 'data-llmspend': key },
      h('span', {}, label),
      h(
        'span',
        {},
        `${formatUsd(spend.spent_usd)} in ${plural(spend.calls, 'call')}${unpriced}`
      )
    );
  }

  private _budgetSection(): HTMLElement {
    const budgets = this._model.status?.budgets ?? [];
    const groups = LEVELS.map(({ scope, title }) => {
      const mine = budgets.filter(b => b.scope === scope);
      if (mine.length === 0) {
        return null;
      }
      return h(
        'div',
        { class: 'jp-LLMSpendPanel-level' },
        h('h4', {}, title),
        ...mine.map(b => this._budget(b))
      );
    });
    return h(
      'section',
      { class: 'jp-LLMSpendPanel-budgets' },
      h('h3', {}, 'Budgets'),
      ...(budgets.length
        ? groups
        : [
            h(
              'div',
              { class: 'jp-LLMSpendPanel-empty' },
              'No budget applies here.'
            )
          ])
    );
  }

  private _budget(b: IBudget): HTMLElement {
    const level = levelOf(b.state, b.percent_used);
    const fill = h('div', { class: 'jp-LLMSpendPanel-barFill' });
    fill.style.width = barWidth(b.percent_used);
    const bar = h(
      'div',
      {
        class: `jp-LLMSpendPanel-bar jp-LLMSpendPanel-${level}`,
        role: 'progressbar',
        'aria-valuemin': '0',
        'aria-valuemax': '100',
        'aria-valuenow': String(Math.round(Math.min(b.percent_used, 100))),
        'aria-label': `${b.budget} ${formatPercent(b.percent_used)} used`
      },
      fill
    );
    const details = [
      `${formatUsd(b.remaining_usd)} left`,
      Number(b.reserved_usd) > 0 ? `${formatUsd(b.reserved_usd)} reserved` : '',
      b.projected_usd !== null
        ? `on pace for ${formatUsd(b.projected_usd)}`
        : '',
      b.period_end ? `resets ${when(b.period_end)}` : 'never resets'
    ].filter(Boolean);
    return h(
      'div',
      {
        class: 'jp-LLMSpendPanel-budget',
        'data-llmspend': 'budget',
        'data-budget': `${b.scope}:${b.budget}`,
        'data-level': level
      },
      h(
        'div',
        { class: 'jp-LLMSpendPanel-row' },
        h('span', { class: 'jp-LLMSpendPanel-name' }, budgetLabel(b)),
        h('span', { class: 'jp-LLMSpendPanel-mode' }, b.mode)
      ),
      bar,
      h(
        'div',
        { class: 'jp-LLMSpendPanel-row' },
        h(
          'span',
          { 'data-llmspend': 'budget-spent' },
          `${formatUsd(b.spent_usd)} of ${formatUsd(b.limit_usd)}`
        ),
        h('span', {}, formatPercent(b.percent_used))
      ),
      h('div', { class: 'jp-LLMSpendPanel-details' }, details.join(' · '))
    );
  }

  private _alertSection(): HTMLElement {
    const alerts = this._model.alerts;
    const open = alerts.filter(a => !a.acknowledged);
    const ackAll = h(
      'button',
      {
        class: 'jp-LLMSpendPanel-ackAll',
        type: 'button',
        'data-llmspend': 'ack-all'
      },
      'Acknowledge all'
    );
    ackAll.addEventListener('click', () =>
      this._acknowledge(open.map(a => a.id))
    );
    return h(
      'section',
      { class: 'jp-LLMSpendPanel-alerts' },
      h(
        'header',
        { class: 'jp-LLMSpendPanel-header' },
        h('h3', {}, 'Recent alerts'),
        open.length > 1 ? ackAll : null
      ),
      ...(alerts.length
        ? alerts.map(a => this._alert(a))
        : [h('div', { class: 'jp-LLMSpendPanel-empty' }, 'No alerts.')])
    );
  }

  private _alert(a: IAlert): HTMLElement {
    const what =
      a.kind === 'refused'
        ? `${a.budget} refused a call`
        : `${a.budget} reached ${Math.round(a.threshold * 100)} %`;
    let action: HTMLElement;
    if (a.acknowledged) {
      action = h('span', { class: 'jp-LLMSpendPanel-acked' }, 'acknowledged');
    } else {
      action = h(
        'button',
        {
          type: 'button',
          'data-llmspend': 'ack',
          'data-alert-id': String(a.id)
        },
        'Acknowledge'
      );
      action.addEventListener('click', () => this._acknowledge([a.id]));
    }
    return h(
      'div',
      {
        class: `jp-LLMSpendPanel-alert${a.acknowledged ? ' jp-mod-acknowledged' : ''}`,
        'data-llmspend': 'alert',
        'data-alert-id': String(a.id)
      },
      h(
        'div',
        { class: 'jp-LLMSpendPanel-row' },
        h('strong', {}, what),
        action
      ),
      h(
        'div',
        { class: 'jp-LLMSpendPanel-details' },
        `${a.scope} · ${formatUsd(a.spent_usd)} of ${formatUsd(a.limit_usd)} · ${when(a.ts)}`
      )
    );
  }

  private _acknowledge(ids: number[]): void {
    this._model.acknowledge(ids).catch(error => {
      console.error('llmspend: acknowledging failed', error);
      void this._model.loadDetails();
    });
  }

  private _model: SpendModel;
  private _manager: BudgetManager;
  private _content = h('div', { class: 'jp-LLMSpendPanel-content' });
}
