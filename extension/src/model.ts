import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { IDisposable } from '@lumino/disposable';

import { requestAPI } from './request';
import type {
  IAlert,
  IAlerts,
  IBudgetDef,
  IBudgetList,
  IStatus,
  ISummary
} from './types';

/** How often the meter asks the server, and how far it backs off on errors. */
export const POLL_INTERVAL_MS = 15 * 1000;
export const POLL_MAX_MS = 5 * 60 * 1000;

/**
 * The client side of the `/llmspend/` routes: polls the status (with backoff, and on
 * standby while the page is hidden), loads the summary and alerts on demand, and
 * acknowledges alerts. Views listen to `changed`.
 */
export class SpendModel implements IDisposable {
  constructor() {
    this._poll = new Poll({
      auto: false,
      factory: () => this._refreshStatus(),
      frequency: {
        interval: POLL_INTERVAL_MS,
        backoff: true,
        max: POLL_MAX_MS
      },
      name: 'llmspend:status',
      standby: 'when-hidden'
    });
  }

  /** Emitted whenever status, summary, alerts or the error changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted after every successful status poll, with the status. */
  get statusFetched(): ISignal<this, IStatus> {
    return this._statusFetched;
  }

  get status(): IStatus | null {
    return this._status;
  }
  get summary(): ISummary | null {
    return this._summary;
  }
  get alerts(): IAlert[] {
    return this._alerts;
  }
  /** The budget definitions the user may see, and whether they may change them. */
  get budgets(): IBudgetList | null {
    return this._budgets;
  }
  /** The last error, or `null` after a success. */
  get error(): string | null {
    return this._error;
  }
  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Start polling. */
  start(): Promise<void> {
    return this._poll.start();
  }

  /** Poll now (e.g. right after a cell ran), resetting any backoff. */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  /** The browser's time zone, so that "today" is the user's day. */
  private get _query(): Record<string, string> {
    try {
      const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      return tz ? { tz } : {};
    } catch {
      return {};
    }
  }

  /** Load the summary and the recent alerts (what the panel shows). */
  async loadDetails(): Promise<void> {
    try {
      const [summary, alerts, budgets] = await Promise.all([
        requestAPI<ISummary>('summary', {}, this._query),
        this.fetchAlerts(),
        requestAPI<IBudgetList>('budgets')
      ]);
      this._summary = summary;
      this._alerts = alerts.alerts;
      this._budgets = budgets;
      this._error = null;
    } catch (error) {
      this._error = describe(error);
    }
    this._changed.emit();
  }

  /** The newest alerts of the context's budgets, newest first. */
  fetchAlerts(limit = 20): Promise<IAlerts> {
    return requestAPI<IAlerts>('alerts', {}, { limit: String(limit) });
  }

  /** Acknowledge alerts of the context's budgets. */
  async acknowledge(ids: number[]): Promise<number> {
    if (ids.length === 0) {
      return 0;
    }
    const reply = await requestAPI<{ acknowledged: number }>(
      'alerts/acknowledge',
      {
        method: 'POST',
        body: JSON.stringify({ ids })
      }
    );
    await Promise.all([this.loadDetails(), this.refresh()]);
    return reply.acknowledged;
  }

  /**
   * Create (`POST`) or change (`PATCH`) a budget with a body from `checkBudgetForm`; a
   * refusal throws with the server's message. Reloads what the panel shows.
   */
  async saveBudget(
    body: Record<string, unknown>,
    editing: boolean
  ): Promise<IBudgetDef> {
    const reply = await requestAPI<{ budget: IBudgetDef }>('budgets', {
      method: editing ? 'PATCH' : 'POST',
      body: JSON.stringify(body)
    });
    await Promise.all([this.loadDetails(), this.refresh()]);
    return reply.budget;
  }

  /** Delete a budget; a refusal throws with the server's message. */
  async deleteBudget(scope: string, name: string): Promise<void> {
    await requestAPI('budgets', { method: 'DELETE' }, { scope, name });
    await Promise.all([this.loadDetails(), this.refresh()]);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _refreshStatus(): Promise<void> {
    try {
      const status = await requestAPI<IStatus>('status', {}, this._query);
      this._status = status;
      this._error = null;
      this._changed.emit();
      this._statusFetched.emit(status);
    } catch (error) {
      this._error = describe(error);
      this._changed.emit();
      throw error; // the poll backs off
    }
  }

  private _poll: Poll;
  private _status: IStatus | null = null;
  private _summary: ISummary | null = null;
  private _alerts: IAlert[] = [];
  private _budgets: IBudgetList | null = null;
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
  private _statusFetched = new Signal<this, IStatus>(this);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
