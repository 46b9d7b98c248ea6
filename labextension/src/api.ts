/**
 * The server extension's REST endpoint: a notebook's checkpoints, read from its store without a kernel.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ICheckpointInfo, IDiffResult } from './helpers';

export const ROUTE = 'nbcheckpoint/api/checkpoints';

/** Where else to look, besides the store key of the notebook's current path. */
export interface IListOptions {
  /** The notebook's stable id (its metadata); the server reads it from the file when absent. */
  id?: string | null;
  /** Store keys its kernels reported (older names of the notebook). */
  keys?: Iterable<string>;
  /** Paths it had before a rename or move in this session (their stores and path keys). */
  also?: Iterable<string>;
}

export async function listCheckpoints(
  path: string,
  options: IListOptions = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<ICheckpointInfo[]> {
  const query = new URLSearchParams({ path });
  if (options.id) {
    query.append('id', options.id);
  }
  for (const key of options.keys ?? []) {
    query.append('key', key);
  }
  for (const other of options.also ?? []) {
    query.append('also', other);
  }
  return getJSON<ICheckpointInfo[]>(ROUTE, query, settings);
}

export const DIFF_ROUTE = 'nbcheckpoint/api/diff';

/**
 * Compare two checkpoints of the notebook at `path`, each named `key:id` as the list gives
 * them (`also`: its earlier paths, whose stores may hold them); the server reads both
 * manifests (nothing is loaded into a kernel).
 */
export async function diffCheckpoints(
  path: string,
  before: string,
  after: string,
  also: Iterable<string> = [],
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<IDiffResult> {
  const query = new URLSearchParams({ path, a: before, b: after });
  for (const other of also) {
    query.append('also', other);
  }
  return getJSON<IDiffResult>(DIFF_ROUTE, query, settings);
}

/** GET one of the server's routes; a failure raises with the server's own message. */
async function getJSON<T>(
  route: string,
  query: URLSearchParams,
  settings: ServerConnection.ISettings
): Promise<T> {
  const url = `${URLExt.join(settings.baseUrl, route)}?${query.toString()}`;
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    let message = response.statusText;
    try {
      const body = await response.json();
      message = body.message || message;
    } catch {
      // not JSON: keep the status text
    }
    throw new ServerConnection.ResponseError(response, message);
  }
  return (await response.json()) as T;
}
