import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { errorMessage } from './model';

/** A call to the jupyter_rapha server extension under /rapha/api, with Jupyter's own auth. */
export async function requestAPI(path: string, init: RequestInit = {}): Promise<unknown> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'rapha', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new Error('the Jupyter server could not be reached');
  }
  const raw = await response.text();
  let body: unknown = null;
  if (raw.length > 0) {
    try {
      body = JSON.parse(raw);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    throw new Error(errorMessage(response.status, body));
  }
  return body;
}
