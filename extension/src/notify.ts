import { Notification } from '@jupyterlab/apputils';

import { alertSeverity, alertsToNotify, alertText } from './format';
import type { SpendModel } from './model';
import type { IStatus } from './types';

const MAX_SHOWN = 3;

/**
 * Shows each new alert once as a JupyterLab notification.
 *
 * The id of the newest alert notified is kept in `localStorage` (per server), so a
 * reload or a second tab does not show the same alert again.
 */
export class AlertNotifier {
  constructor(
    model: SpendModel,
    options: { storageKey: string; openPanel: () => void }
  ) {
    this._model = model;
    this._key = options.storageKey;
    this._openPanel = options.openPanel;
    model.statusFetched.connect(this._onStatus, this);
    model.changed.connect(this._dismissAcknowledged, this);
  }

  dispose(): void {
    this._model.statusFetched.disconnect(this._onStatus, this);
    this._model.changed.disconnect(this._dismissAcknowledged, this);
  }

  /** Close the notification of an alert acknowledged meanwhile (e.g. in the panel). */
  private _dismissAcknowledged(): void {
    for (const alert of this._model.alerts) {
      const shown = this._shown.get(alert.id);
      if (alert.acknowledged && shown !== undefined) {
        Notification.dismiss(shown);
        this._shown.delete(alert.id);
      }
    }
  }

  private _onStatus(_: SpendModel, status: IStatus): void {
    const latest = status.alerts.latest_id;
    const seen = this._lastSeen();
    if (latest === null || (seen !== null && latest <= seen) || this._busy) {
      return;
    }
    this._busy = true;
    void this._notifyNew(latest).finally(() => {
      this._busy = false;
    });
  }

  private async _notifyNew(latest: number): Promise<void> {
    let reply;
    try {
      reply = await this._model.fetchAlerts(50);
    } catch {
      return; // the next poll tries again
    }
    const seen = this._lastSeen(); // another tab may have shown them meanwhile
    const fresh = alertsToNotify(reply.alerts, seen, Date.now());
    this._setLastSeen(
      Math.max(latest, seen ?? 0, ...reply.alerts.map(a => a.id))
    );
    for (const alert of fresh.slice(-MAX_SHOWN)) {
      const show =
        alertSeverity(alert) === 'error'
          ? Notification.error
          : Notification.warning;
      const id = show(alertText(alert), {
        autoClose: false,
        actions: [
          {
            label: 'Open budgets',
            caption: 'Show the llmspend budget panel',
            callback: () => this._openPanel()
          },
          {
            label: 'Acknowledge',
            caption: 'Acknowledge this alert',
            callback: () => {
              void this._model.acknowledge([alert.id]);
            }
          }
        ]
      });
      this._shown.set(alert.id, id);
    }
    if (fresh.length > MAX_SHOWN) {
      Notification.warning(
        `llmspend: ${fresh.length - MAX_SHOWN} more budget alerts; see the budget panel.`,
        {
          autoClose: false,
          actions: [
            { label: 'Open budgets', callback: () => this._openPanel() }
          ]
        }
      );
    }
  }

  private _lastSeen(): number | null {
    try {
      const raw = window.localStorage.getItem(this._key);
      const value = raw === null ? NaN : Number(raw);
      return Number.isInteger(value) ? value : null;
    } catch {
      return this._memory;
    }
  }

  private _setLastSeen(id: number): void {
    this._memory = id;
    try {
      window.localStorage.setItem(this._key, String(id));
    } catch {
      // storage disabled: remember for this page only
    }
  }

  private _model: SpendModel;
  private _key: string;
  private _openPanel: () => void;
  private _busy = false;
  private _shown = new Map<number, string>();
  private _memory: number | null = null;
}
