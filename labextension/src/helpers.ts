/**
 * Pure helpers: words, ages, the restart de-duplication and the code sent to the kernel.
 *
 * Nothing here imports JupyterLab, so `jlpm test` compiles and runs these with plain
 * `node --test` (see test/helpers.test.ts).
 */

/** What the kernel sends (iopub message `nbcheckpoint_status`) after each checkpoint. */
export interface IStatusMessage {
  /** `checkpoint` (absent from older kernels). */
  event?: string;
  id: number;
  /** When the checkpoint was taken, in seconds since the epoch (kernel clock). */
  last: number;
  /** The kernel's clock when it sent the message. */
  now: number;
  status: string;
  /** Where in the cell, e.g. "`for epoch` at 57/100"; empty when not in a loop. */
  position: string;
  /** The execution count of the cell, when known. */
  cell: number | null;
  /** The cell's first line (absent from older kernels). */
  first_line?: string;
  /** The store key the kernel filed it under (absent from older kernels). */
  key?: string;
}

/** What the kernel sends when variables were restored from a checkpoint (by anyone). */
export interface IRestoredMessage {
  event: 'restored';
  id: number;
  key: string;
}

/** One checkpoint as `GET /nbcheckpoint/api/checkpoints` lists it. */
export interface ICheckpointInfo {
  id: number;
  created: number;
  /** Seconds since it was taken, measured on the server when answering. */
  age: number | null;
  status: string;
  verified: boolean;
  problem: string | null;
  pinned: boolean;
  cell: {
    execution_count: number | null;
    first_line: string;
    cell_id?: string | null;
  };
  position: string;
  variables: number;
  size: number;
  /** The store key it is filed under (the notebook's id, or a key from its path). */
  key?: string;
}

/** What the kernel sends when something went wrong that the user must see. */
export interface IProblemMessage {
  event: 'problem';
  /** The warning as printed under the cell: "nbcheckpoint: could not save a checkpoint (...)". */
  text: string;
  /**
   * What went wrong, when the kernel recognised it: a checkpoint that could not be
   * written, or one overdue by 3x `--every` (the cell reached no safe point).
   */
  kind?: 'write' | 'overdue' | null;
  /** The store path that could not be written (or whose checkpoint is late). */
  path?: string | null;
  /** Why, in the system's words: "Disk quota exceeded", "no safe point for 3 s, every 1 s". */
  reason?: string | null;
}

/** JupyterLab cuts a notification's message at this many characters. */
export const NOTIFICATION_MAX = 140;

/**
 * The notification for a problem, within {@link NOTIFICATION_MAX} characters: the
 * notebook, the store path (its end, if it has to be cut) and the reason. A warning
 * without a path is shown without its "nbcheckpoint:" prefix (the message says whose).
 *
 * ```
 * problemText('train.ipynb', {event: 'problem', text: '...', path: '/srv/.nbcheckpoint/blobs', reason: 'Disk quota exceeded'}) ===
 *   'State checkpoints of train.ipynb not saved: Disk quota exceeded (/srv/.nbcheckpoint/blobs)'
 * problemText('train.ipynb', {event: 'problem', kind: 'overdue', text: '...', path: '/srv/.nbcheckpoint', reason: 'no safe point for 3 s, every 1 s'}) ===
 *   'State checkpoints of train.ipynb overdue: no safe point for 3 s, every 1 s (/srv/.nbcheckpoint)'
 * ```
 */
export function problemText(
  notebook: string,
  problem: IProblemMessage
): string {
  if (problem.path && problem.reason) {
    const what = problem.kind === 'overdue' ? 'overdue' : 'not saved';
    const head = `State checkpoints of ${notebook} ${what}: ${problem.reason} (`;
    const room = NOTIFICATION_MAX - head.length - 1;
    const path =
      problem.path.length <= room
        ? problem.path
        : `…${problem.path.slice(problem.path.length - Math.max(room - 1, 8))}`;
    return `${head}${path})`;
  }
  const body = plainText(problem.text)
    .trim()
    .replace(/^nbcheckpoint:\s*/, '');
  return `State checkpoints of ${notebook}: ${body}`;
}

/**
 * The status bar's state. Ages are kept relative to when the browser received
 * them, so neither the kernel's nor the server's clock has to agree with ours.
 */
export interface ICheckpointStatus {
  id: number;
  status: string;
  position: string;
  cell: number | null;
  /** The cell's first line, '' when unknown. */
  firstLine: string;
  /** Age in seconds when received. */
  ageAtReceipt: number;
  /** `Date.now()` when received. */
  receivedAt: number;
}

export function statusFromMessage(
  msg: IStatusMessage,
  receivedAt: number
): ICheckpointStatus {
  return {
    id: msg.id,
    status: msg.status,
    position: msg.position || '',
    cell: msg.cell ?? null,
    firstLine: msg.first_line ?? '',
    ageAtReceipt: Math.max(0, msg.now - msg.last),
    receivedAt
  };
}

export function statusFromInfo(
  info: ICheckpointInfo,
  receivedAt: number
): ICheckpointStatus {
  return {
    id: info.id,
    status: info.status,
    position: info.position || '',
    cell: info.cell?.execution_count ?? null,
    firstLine: info.cell?.first_line ?? '',
    ageAtReceipt: Math.max(0, info.age ?? 0),
    receivedAt
  };
}

/** Seconds since the checkpoint was taken, at browser time `nowMs`. */
export function ageSeconds(status: ICheckpointStatus, nowMs: number): number {
  return status.ageAtReceipt + Math.max(0, nowMs - status.receivedAt) / 1000;
}

/**
 * An age in words, as the Python side's `relative_time` says it.
 *
 * ```
 * relativeTime(180) === '3 min ago'
 * ```
 */
export function relativeTime(seconds: number): string {
  const ahead = seconds < 0;
  const delta = Math.abs(seconds);
  let amount: string;
  if (delta < 1) {
    return 'just now';
  } else if (delta < 60) {
    amount = `${Math.floor(delta)} s`;
  } else if (delta < 3600) {
    amount = `${Math.floor(delta / 60)} min`;
  } else if (delta < 86400) {
    amount = `${Math.floor(delta / 3600)} h`;
  } else {
    const days = Math.floor(delta / 86400);
    amount = days === 1 ? '1 day' : `${days} days`;
  }
  return ahead ? `in ${amount}` : `${amount} ago`;
}

/** Byte counts in decimal units, like the Python side's `human_bytes`. */
export function humanBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let value = Math.abs(n);
  const sign = n < 0 ? '-' : '';
  if (value < 1000) {
    return `${sign}${Math.floor(value)} B`;
  }
  let unit = 0;
  while (value >= 999.95 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${sign}${value.toFixed(1)} ${units[unit]}`;
}

/**
 * Galata's `waitForRun`, and people, read the word "Idle" in the status bar as the
 * kernel's state: ours must never show it, even from a loop variable's name.
 */
function withoutIdleWord(text: string): string {
  return text.replace(/Idle/g, 'idle');
}

/** The status bar's text: `State checkpoint #12 · 5 s ago · `for epoch` at 57/100`. */
export function statusText(status: ICheckpointStatus, nowMs: number): string {
  const parts = [
    `State checkpoint #${status.id}`,
    relativeTime(ageSeconds(status, nowMs))
  ];
  if (status.status === 'running' && status.position) {
    parts.push(status.position);
  }
  return withoutIdleWord(parts.join(' · '));
}

/** Its tooltip, with the cell and the checkpoint's status. */
export function statusTitle(status: ICheckpointStatus): string {
  const label = cellLabel(status.cell, status.firstLine);
  const cell = label ? ` in cell ${label}` : '';
  const where = status.position ? `, ${status.position}` : '';
  return withoutIdleWord(
    `Last state checkpoint (saved kernel variables) #${status.id}${cell} (${status.status}${where}). Click to open the State checkpoints panel.`
  );
}

/**
 * A cell as a user recognises it across runs, as the Python side's `cell_label` says it:
 * its first line, then the run count (which changes at each run); its id when the
 * first line is empty.
 *
 * ```
 * cellLabel(5, 'for epoch in range(100):') === '"for epoch in range(100):" [5]'
 * ```
 */
export function cellLabel(
  count: number | null | undefined,
  firstLine: string,
  cellId?: string | null,
  width = 40
): string {
  let first = (firstLine || '').split(/\s+/).filter(Boolean).join(' ');
  if (first.length > width) {
    first = `${first.slice(0, width - 1)}…`;
  }
  const run = count !== null && count !== undefined ? `[${count}]` : '';
  if (first) {
    return `"${first}"${run ? ` ${run}` : ''}`;
  }
  if (cellId) {
    return `cell ${cellId.slice(0, 8)}${run ? ` ${run}` : ''}`;
  }
  return run ? `cell ${run}` : '';
}

/**
 * `"for epoch in range(100):" [5], 3 min ago, `for epoch` at 57/100`: where and when a
 * checkpoint was taken. `extraSeconds` ages it by the time since the list was read.
 */
export function describeCheckpoint(
  info: ICheckpointInfo,
  extraSeconds = 0
): string {
  const bits: string[] = [];
  const label = info.cell
    ? cellLabel(
        info.cell.execution_count,
        info.cell.first_line,
        info.cell.cell_id
      )
    : '';
  if (label) {
    bits.push(label);
  }
  if (info.age !== null && info.age !== undefined) {
    bits.push(relativeTime(info.age + Math.max(0, extraSeconds)));
  }
  if (info.position) {
    bits.push(info.position);
  }
  return bits.join(', ');
}

/** `1 variable`, `3 variables`. */
export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

/** What a row of the server's list shows, stacked so it fits a narrow sidebar. */
export interface ICheckpointRow {
  /** `#12`, `#12 (pinned)` */
  label: string;
  /** `running`, `complete`, `unverified` */
  status: string;
  tone: 'ok' | 'running' | 'warn';
  /** `cell [5], 3 min ago, `for epoch` at 57/100` */
  where: string;
  /** `3 variables · 1.2 KB` */
  what: string;
  /** The tooltip: the cell's first line and, for an unverified one, why. */
  title: string;
}

export function checkpointRow(
  info: ICheckpointInfo,
  extraSeconds = 0
): ICheckpointRow {
  const unverified = !info.verified;
  const firstLine = info.cell?.first_line ?? '';
  const title = [
    `State checkpoint #${info.id}`,
    firstLine ? `cell: ${firstLine}` : '',
    unverified ? `not verified: ${info.problem ?? 'unknown problem'}` : ''
  ]
    .filter(Boolean)
    .join('\n');
  return {
    label: `#${info.id}${info.pinned ? ' (pinned)' : ''}`,
    status: unverified ? 'unverified' : info.status,
    tone: unverified ? 'warn' : info.status === 'running' ? 'running' : 'ok',
    where: describeCheckpoint(info, extraSeconds),
    what: `${plural(info.variables, 'variable')} · ${humanBytes(info.size)}`,
    title: withoutIdleWord(title)
  };
}

/**
 * The newest checkpoint of a list. The list may merge several store keys (the
 * notebook's id and its older path keys), whose ids are counted apart: the time
 * taken decides, then the id.
 */
export function latest(
  checkpoints: readonly ICheckpointInfo[]
): ICheckpointInfo | null {
  let best: ICheckpointInfo | null = null;
  for (const ck of checkpoints) {
    if (
      best === null ||
      ck.created > best.created ||
      (ck.created === best.created && ck.id > best.id)
    ) {
      best = ck;
    }
  }
  return best;
}

/** The notification's question after a restart. */
export function offerText(info: ICheckpointInfo): string {
  const where = describeCheckpoint(info);
  return `The kernel restarted. Bring its variables back from state checkpoint #${info.id}${
    where ? ` (${where})` : ''
  }?`;
}

/**
 * Who a notebook is, as the extension tells its kernel: the stable id kept in the
 * notebook's metadata, its path relative to the server root, and that root.
 * `key` (optional) makes the kernel use an older store key, to restore from it.
 */
export interface INotebookIdentity {
  id: string;
  path: string;
  root: string;
  key?: string;
}

/** The user-namespace name the kernel reads the identity from (nbcheckpoint/ipython/identity.py). */
export const IDENTITY_NAME = '__nbc_notebook__';

/**
 * Python code that hands the identity to the kernel. JSON strings are valid Python
 * string literals, so nothing the user named can break out of them.
 *
 * ```
 * identityCode({id: 'a1', path: 'train.ipynb', root: '/srv'}) ===
 *   '__nbc_notebook__ = {"id": "a1", "path": "train.ipynb", "root": "/srv"}'
 * ```
 */
export function identityCode(identity: INotebookIdentity): string {
  const fields: Array<[string, string]> = [
    ['id', identity.id],
    ['path', identity.path],
    ['root', identity.root]
  ];
  if (identity.key) {
    fields.push(['key', identity.key]);
  }
  const body = fields
    .map(
      ([name, value]) =>
        `${JSON.stringify(name)}: ${JSON.stringify(String(value))}`
    )
    .join(', ');
  return `${IDENTITY_NAME} = {${body}}`;
}

/**
 * Code that restores checkpoint `id` (default: the latest that verifies) in a fresh
 * kernel. With `identity`, the kernel first learns which notebook it runs, so it finds
 * the checkpoints under the notebook's id even though it was started under another name.
 */
export function restoreCode(id?: number, identity?: INotebookIdentity): string {
  const which = id === undefined ? '' : ` ${Math.floor(id)}`;
  const first = identity ? `${identityCode(identity)}\n` : '';
  return `${first}%load_ext nbcheckpoint\n%checkpoint restore${which}`;
}

/** What the extension keeps in `metadata.nbcheckpoint`. */
export interface INotebookMetadata {
  id: string;
  /** The path the notebook had when the id was last written, to tell a copy from a rename. */
  path: string;
}

/** The `nbcheckpoint` metadata of a notebook, or null when it is missing or malformed. */
export function readNotebookMetadata(value: unknown): INotebookMetadata | null {
  if (!value || typeof value !== 'object') {
    return null;
  }
  const { id, path } = value as { id?: unknown; path?: unknown };
  if (
    typeof id !== 'string' ||
    !/^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,80}$/.test(id)
  ) {
    return null;
  }
  return { id, path: typeof path === 'string' ? path : '' };
}

/**
 * What the user-visible labels call our checkpoints, so they are never confused
 * with JupyterLab's own file checkpoints ("Revert Notebook to Checkpoint").
 */
export const SIDEBAR_TITLE = 'State checkpoints';

/** Code that shows the ipywidgets panel. */
export const PANEL_CODE = '%load_ext nbcheckpoint\n%checkpoint panel';

/**
 * The line of a restore's output worth a notification: "Restored checkpoint #3 (...)".
 * `%load_ext` may print a line about earlier checkpoints first; that one is dropped.
 */
export function restoreSummary(stdout: string): string {
  const lines = stdout
    .split('\n')
    .map(line => line.trim())
    .filter(line => line.length > 0);
  const restored = lines.find(line => line.startsWith('Restored checkpoint'));
  return restored ?? lines[lines.length - 1] ?? 'Restored.';
}

/** Strip ANSI colour codes from a kernel's error text. */
export function plainText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, '');
}

/** Kernel statuses that mean "this kernel is being restarted". */
const RESTARTING = new Set(['restarting', 'autorestarting']);
/** Statuses a running kernel reports. */
const ALIVE = new Set(['idle', 'busy']);

/** Where a notebook's kernel is in a restart, for {@link trackRestart}. */
export interface IRestartState {
  restarting: boolean;
  /** `Date.now()` when the last restart finished, or null. */
  lastRestartEnd: number | null;
}

export const INITIAL_RESTART_STATE: IRestartState = {
  restarting: false,
  lastRestartEnd: null
};

/**
 * Follow a kernel's status changes and say when one restart has finished.
 *
 * JupyterLab reports an automatic restart (after a crash) as `restarting` and then
 * `autorestarting`, and a restart from the menu as `restarting`: all the restart
 * statuses up to the kernel's next `idle` or `busy` are one restart, announced once,
 * when the new kernel is ready to run the restore. A restart status within `quietMs`
 * of the end of the previous restart is taken as a late echo of it.
 *
 * Returns the next state and whether a restart has just finished.
 */
export function trackRestart(
  state: IRestartState,
  status: string,
  nowMs: number,
  quietMs = 2000
): [IRestartState, boolean] {
  if (RESTARTING.has(status)) {
    if (state.restarting) {
      return [state, false];
    }
    if (
      state.lastRestartEnd !== null &&
      nowMs - state.lastRestartEnd < quietMs
    ) {
      return [state, false];
    }
    return [{ ...state, restarting: true }, false];
  }
  if (ALIVE.has(status) && state.restarting) {
    return [{ restarting: false, lastRestartEnd: nowMs }, true];
  }
  if (status === 'dead' && state.restarting) {
    // The restart failed: there is no kernel to restore into.
    return [{ ...state, restarting: false }, false];
  }
  return [state, false];
}

/** The `offerRestore` setting. */
export type OfferRestore = 'ask' | 'always' | 'never';

export function offerRestoreSetting(value: unknown): OfferRestore {
  return value === 'always' || value === 'never' ? value : 'ask';
}

/** One variable on one side of a comparison, as the server's diff endpoint sends it. */
export interface IDiffEntry {
  type: string;
  size: number;
  shape: number[] | null;
  dtype: string | null;
  saved: boolean;
  reason: string | null;
}

/** One variable's change between two checkpoints. */
export interface IDiffRow {
  name: string;
  change: 'changed' | 'added' | 'removed' | 'not saved' | 'same';
  /** False when variables pickled together changed and which one cannot be told. */
  certain: boolean;
  before: IDiffEntry | null;
  after: IDiffEntry | null;
  notes: string[];
}

/** Two checkpoints compared (`GET nbcheckpoint/api/diff`). */
export interface IDiffResult {
  before: string;
  after: string;
  summary: string;
  shapes_known: boolean;
  rows: IDiffRow[];
}

/** `(2, 3)`, as NumPy writes a shape. */
export function shapeText(shape: number[]): string {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
}

/** `numpy.ndarray (2, 3) float64`; empty for a missing side. */
export function diffEntryText(entry: IDiffEntry | null): string {
  if (!entry) {
    return '';
  }
  const parts = [entry.type];
  if (entry.shape) {
    parts.push(shapeText(entry.shape));
  }
  if (entry.dtype) {
    parts.push(entry.dtype);
  }
  return parts.join(' ');
}

/** `80 B → 160 B`, or the one size of a variable on one side only. */
export function diffSizeText(row: IDiffRow): string {
  const { before, after } = row;
  if (before?.saved && after?.saved) {
    return before.size === after.size
      ? humanBytes(before.size)
      : `${humanBytes(before.size)} → ${humanBytes(after.size)}`;
  }
  const one = after?.saved ? after : before?.saved ? before : null;
  return one ? humanBytes(one.size) : '';
}

/** The rows worth a line: every one but the unchanged, changes first (the server's order). */
export function diffShownRows(result: IDiffResult): IDiffRow[] {
  return result.rows.filter(row => row.change !== 'same');
}
