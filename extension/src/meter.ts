import { Widget } from '@lumino/widgets';

import { meterView } from './format';
import type { SpendModel } from './model';

const LEVEL_CLASSES = ['ok', 'warning', 'danger', 'unknown'].map(
  level => `jp-LLMSpendMeter-${level}`
);

/**
 * The status-bar spend meter: `$12.40 · 62 % of acme/churn month`, coloured by the
 * headline budget's state; a click opens the budget panel.
 */
export class SpendMeter extends Widget {
  constructor(model: SpendModel, onOpen: () => void) {
    super({ node: document.createElement('button') });
    this._model = model;
    this.id = 'llmspend-meter';
    this.addClass('jp-LLMSpendMeter');
    const node = this.node as HTMLButtonElement;
    node.type = 'button';
    node.setAttribute('data-llmspend', 'meter');
    node.addEventListener('click', onOpen);
    model.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(): void {
    const view = meterView(this._model.status, this._model.error);
    this.node.textContent = view.text;
    this.node.title = view.title;
    this.node.setAttribute('aria-label', view.title);
    this.node.setAttribute('data-level', view.level);
    this.node.classList.remove(...LEVEL_CLASSES);
    this.node.classList.add(`jp-LLMSpendMeter-${view.level}`);
  }

  private _model: SpendModel;
}
