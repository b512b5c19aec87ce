import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { NotebookActions } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';

import { SpendMeter } from './meter';
import { SpendModel } from './model';
import { AlertNotifier } from './notify';
import { SpendPanel } from './panel';

const PLUGIN_ID = 'llmspend-jupyterlab:plugin';
const OPEN_PANEL = 'llmspend:open-panel';
const REFRESH = 'llmspend:refresh';
/** After a cell runs, ask again shortly: a call it made shows up at once. */
const AFTER_CELL_MS = 750;

/**
 * The llmspend spend meter (status bar), budget panel (right side bar) and alert
 * notifications, backed by the `/llmspend/` server routes.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'LLM spend meter, budget panel and alert notifications for llmspend.',
  autoStart: true,
  optional: [IStatusBar, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    labShell: ILabShell | null
  ) => {
    const model = new SpendModel();
    const panel = new SpendPanel(model);
    panel.title.label = labShell ? '' : 'LLM spend';
    app.shell.add(panel, 'right', { rank: 900 });

    app.commands.addCommand(OPEN_PANEL, {
      label: 'LLM Spend: Show Budgets',
      caption: 'Show the llmspend budget panel',
      describedBy: { args: { type: 'object', properties: {} } },
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(REFRESH, {
      label: 'LLM Spend: Refresh',
      caption: 'Ask the server for the current spend now',
      describedBy: { args: { type: 'object', properties: {} } },
      execute: () => model.refresh()
    });
    palette?.addItem({ command: OPEN_PANEL, category: 'LLM Spend' });
    palette?.addItem({ command: REFRESH, category: 'LLM Spend' });
    const openPanel = () => void app.commands.execute(OPEN_PANEL);

    if (statusBar) {
      const meter = new SpendMeter(model, openPanel);
      statusBar.registerStatusItem(PLUGIN_ID, {
        item: meter,
        align: 'left',
        rank: 900
      });
    }

    new AlertNotifier(model, {
      storageKey: `llmspend:last-alert:${ServerConnection.makeSettings().baseUrl}`,
      openPanel
    });

    let pending: number | undefined;
    NotebookActions.executed.connect(() => {
      window.clearTimeout(pending);
      pending = window.setTimeout(() => void model.refresh(), AFTER_CELL_MS);
    });

    void app.restored.then(() => model.start());
  }
};

export default plugin;
