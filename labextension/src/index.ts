import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

import { JobsPanel } from './panel';

const OPEN_COMMAND = 'jupyter-rapha:open-jobs';

/** The Rapha jobs side panel, and a command to open it. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-rapha:jobs',
  description: 'Edge training jobs, their progress and their receipts, in a side panel.',
  autoStart: true,
  optional: [ILayoutRestorer],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null) => {
    const panel = new JobsPanel();
    app.shell.add(panel, 'left', { rank: 800 });
    restorer?.add(panel, panel.id);
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show Rapha Jobs',
      execute: () => {
        app.shell.activateById(panel.id);
        return panel.refresh();
      }
    });
  }
};

export default plugin;
