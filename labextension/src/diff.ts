/**
 * "Compare": pick two rows of the server's list of state checkpoints, and see which
 * variables were added, removed or changed, with sizes, shapes and dtypes.
 *
 * The server compares the two checkpoints' signed records (`nbcheckpoint/api/diff`);
 * nothing is loaded into the kernel, so it works while a cell runs or with no kernel.
 * Laid out for a narrow sidebar: three columns, the details stacked in the third.
 */
import {
  diffEntryText,
  diffShownRows,
  diffSizeText,
  ICheckpointInfo,
  IDiffResult
} from './helpers';

/** How many rows can be picked: the two to compare. */
const PICKS = 2;

/** The checkboxes' state, the Compare button and the result, under the server's list. */
export class CompareBox {
  constructor(
    private readonly _compare: (
      before: string,
      after: string
    ) => Promise<IDiffResult>
  ) {
    this.node = document.createElement('div');
    this.node.className = 'nbc-compare';
    const bar = document.createElement('div');
    bar.className = 'nbc-compare-bar';
    this._hint = document.createElement('span');
    this._hint.className = 'nbc-compare-hint';
    this._button = document.createElement('button');
    this._button.className = 'jp-mod-styled jp-mod-accept nbc-compare-button';
    this._button.textContent = 'Compare';
    this._button.title =
      'Show the variables added, removed and changed between the two checked state checkpoints';
    this._button.addEventListener('click', () => void this.compare());
    bar.append(this._hint, this._button);
    this._result = document.createElement('div');
    this._result.className = 'nbc-compare-result';
    this.node.append(bar, this._result);
    this._update();
  }

  /** The checkbox for one row of the list: checking a third unchecks the first one checked. */
  pickBox(info: ICheckpointInfo): HTMLInputElement {
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.className = 'nbc-compare-pick';
    const ref = info.key ? `${info.key}:${info.id}` : '';
    box.disabled = !ref || info.problem !== null;
    box.title = box.disabled
      ? 'This checkpoint cannot be read, so it cannot be compared'
      : `Check two state checkpoints, then Compare (#${info.id})`;
    box.setAttribute('aria-label', `Compare state checkpoint #${info.id}`);
    box.dataset.ref = ref;
    box.checked = this._picks.some(p => p.ref === ref);
    box.addEventListener('change', () => {
      this._picks = this._picks.filter(p => p.ref !== ref);
      if (box.checked) {
        this._picks.push({ ref, id: info.id, created: info.created });
        while (this._picks.length > PICKS) {
          const dropped = this._picks.shift();
          const other = dropped ? this._boxes.get(dropped.ref) : undefined;
          if (other) {
            other.checked = false;
          }
        }
      }
      this._update();
    });
    this._boxes.set(ref, box);
    return box;
  }

  /** After the list was drawn again: forget rows that are gone. */
  keepOnly(infos: ICheckpointInfo[]): void {
    const refs = new Set(infos.map(info => `${info.key}:${info.id}`));
    this._picks = this._picks.filter(p => refs.has(p.ref));
    for (const ref of [...this._boxes.keys()]) {
      if (!refs.has(ref)) {
        this._boxes.delete(ref);
      }
    }
    this._update();
  }

  /** Ask the server to compare the two checked checkpoints, older first, and draw the result. */
  async compare(): Promise<void> {
    if (this._picks.length !== PICKS) {
      return;
    }
    const [older, newer] = [...this._picks].sort(
      (a, b) => a.created - b.created || a.id - b.id
    );
    this._result.textContent = 'Comparing…';
    try {
      this._draw(await this._compare(older.ref, newer.ref));
    } catch (reason) {
      const text = reason instanceof Error ? reason.message : String(reason);
      this._result.replaceChildren(note(`Could not compare: ${text}`, true));
    }
  }

  private _update(): void {
    const n = this._picks.length;
    this._button.disabled = n !== PICKS;
    this._hint.textContent =
      n === PICKS
        ? `#${this._picks[0].id} and #${this._picks[1].id}`
        : `Check ${PICKS - n} more to compare`;
  }

  private _draw(result: IDiffResult): void {
    const summary = document.createElement('div');
    summary.className = 'nbc-compare-summary';
    summary.textContent = result.summary;
    const parts: HTMLElement[] = [summary];
    if (!result.shapes_known) {
      parts.push(
        note(
          'shape unknown: the older checkpoint records no shapes or dtypes; content changes still show.'
        )
      );
    }
    const rows = diffShownRows(result);
    if (rows.length === 0) {
      parts.push(note('No variable differs.'));
    } else {
      const table = document.createElement('table');
      table.className = 'nbc-compare-table';
      const head = table.createTHead().insertRow();
      for (const label of ['variable', 'change', 'details']) {
        const th = document.createElement('th');
        th.textContent = label;
        head.append(th);
      }
      const body = table.createTBody();
      for (const row of rows) {
        const tr = body.insertRow();
        tr.dataset.name = row.name;
        tr.dataset.change = row.change;
        tr.className = `nbc-compare-${row.change.replace(' ', '-')}`;
        tr.insertCell().textContent = row.name;
        const change = tr.insertCell();
        change.textContent = row.certain ? row.change : `${row.change}?`;
        const details = tr.insertCell();
        const lines: string[] = [];
        const before = diffEntryText(row.before);
        const after = diffEntryText(row.after);
        if (before && after && before !== after) {
          lines.push(
            `${result.before}: ${before}`,
            `${result.after}: ${after}`
          );
        } else if (before || after) {
          lines.push(before || after);
        }
        const size = diffSizeText(row);
        if (size) {
          lines.push(size);
        }
        lines.push(...row.notes);
        for (const line of lines) {
          const div = document.createElement('div');
          div.textContent = line;
          details.append(div);
        }
      }
      parts.push(table);
    }
    this._result.replaceChildren(...parts);
  }

  readonly node: HTMLElement;
  private _picks: { ref: string; id: number; created: number }[] = [];
  private _boxes = new Map<string, HTMLInputElement>();
  private _hint: HTMLElement;
  private _button: HTMLButtonElement;
  private _result: HTMLElement;
}

function note(text: string, error = false): HTMLElement {
  const div = document.createElement('div');
  div.className = error
    ? 'nbc-compare-note nbc-compare-error'
    : 'nbc-compare-note';
  div.textContent = text;
  return div;
}
