/**
 * Unit tests of the pure helpers, run by `jlpm test` with node's own test runner.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import {
  ageSeconds,
  cellLabel,
  checkpointRow,
  describeCheckpoint,
  humanBytes,
  ICheckpointInfo,
  INITIAL_RESTART_STATE,
  identityCode,
  IRestartState,
  latest,
  offerRestoreSetting,
  offerText,
  NOTIFICATION_MAX,
  plainText,
  plural,
  problemText,
  readNotebookMetadata,
  relativeTime,
  restoreCode,
  restoreSummary,
  statusFromInfo,
  statusFromMessage,
  statusText,
  statusTitle,
  trackRestart
} from '../src/helpers';

function info(overrides: Partial<ICheckpointInfo> = {}): ICheckpointInfo {
  return {
    id: 12,
    created: 1000,
    age: 180,
    status: 'running',
    verified: true,
    problem: null,
    pinned: false,
    cell: { execution_count: 5, first_line: 'for epoch in range(100):' },
    position: '`for epoch` at 57/100',
    variables: 3,
    size: 1234,
    ...overrides
  };
}

/** Feed statuses one by one (all at time `t`, or at the given times); count finished restarts. */
function restarts(
  statuses: Array<string | [string, number]>,
  quietMs = 2000
): number {
  let state: IRestartState = INITIAL_RESTART_STATE;
  let count = 0;
  for (const item of statuses) {
    const [status, t] = typeof item === 'string' ? [item, 0] : item;
    const [next, finished] = trackRestart(state, status, t, quietMs);
    state = next;
    count += finished ? 1 : 0;
  }
  return count;
}

describe('relativeTime', () => {
  it('says ages like the Python side', () => {
    assert.equal(relativeTime(0.4), 'just now');
    assert.equal(relativeTime(5), '5 s ago');
    assert.equal(relativeTime(180), '3 min ago');
    assert.equal(relativeTime(7200), '2 h ago');
    assert.equal(relativeTime(86400), '1 day ago');
    assert.equal(relativeTime(3 * 86400), '3 days ago');
    assert.equal(relativeTime(-120), 'in 2 min');
  });
});

describe('humanBytes', () => {
  it('uses decimal units', () => {
    assert.equal(humanBytes(512), '512 B');
    assert.equal(humanBytes(1_234_567), '1.2 MB');
    assert.equal(humanBytes(999_999), '1.0 MB');
    assert.equal(humanBytes(1500), '1.5 KB');
  });
});

describe('status', () => {
  it('ages messages from the kernel clock plus the time since receipt', () => {
    const status = statusFromMessage(
      {
        id: 3,
        last: 100,
        now: 130,
        status: 'running',
        position: '`for i` at 2/10',
        cell: 4
      },
      50_000
    );
    assert.equal(ageSeconds(status, 50_000), 30);
    assert.equal(ageSeconds(status, 60_000), 40);
    // A browser clock behind the receipt time never makes it younger.
    assert.equal(ageSeconds(status, 0), 30);
  });

  it('takes the server-measured age from the endpoint', () => {
    const status = statusFromInfo(info({ age: 65 }), 1000);
    assert.equal(ageSeconds(status, 2000), 66);
    assert.equal(status.cell, 5);
    assert.equal(statusFromInfo(info({ age: null }), 0).ageAtReceipt, 0);
  });

  it('shows the loop progress only while the cell runs', () => {
    const running = statusFromInfo(info({ age: 5 }), 0);
    assert.equal(
      statusText(running, 0),
      'State checkpoint #12 · 5 s ago · `for epoch` at 57/100'
    );
    const done = statusFromInfo(info({ age: 5, status: 'complete' }), 0);
    assert.equal(statusText(done, 0), 'State checkpoint #12 · 5 s ago');
  });

  it('never shows the word Idle', () => {
    const status = statusFromInfo(
      info({ position: '`for Idle` at 1/2', age: 1 }),
      0
    );
    assert.ok(!statusText(status, 0).includes('Idle'));
    assert.ok(!statusTitle(status).includes('Idle'));
    assert.ok(statusText(status, 0).includes('idle'));
  });
});

describe('offer after a restart', () => {
  it('says which checkpoint, where and when', () => {
    assert.equal(
      offerText(info()),
      'The kernel restarted. Bring its variables back from state checkpoint #12 ("for epoch in range(100):" [5], 3 min ago, `for epoch` at 57/100)?'
    );
    assert.equal(
      offerText(
        info({ cell: { execution_count: null, first_line: '' }, position: '' })
      ),
      'The kernel restarted. Bring its variables back from state checkpoint #12 (3 min ago)?'
    );
    assert.equal(
      describeCheckpoint(info({ age: null, position: '' })),
      '"for epoch in range(100):" [5]'
    );
  });

  it('picks the newest checkpoint', () => {
    assert.equal(latest([]), null);
    assert.equal(
      latest([info({ id: 2 }), info({ id: 7 }), info({ id: 5 })])?.id,
      7
    );
  });

  it('picks the newest by time across store keys, whose ids are counted apart', () => {
    const newest = latest([
      info({ id: 30, created: 100, key: 'Untitled-1a2b3c4d5e' }),
      info({ id: 2, created: 200, key: 'f00d' }),
      info({ id: 1, created: 150, key: 'f00d' })
    ]);
    assert.equal(newest?.key, 'f00d');
    assert.equal(newest?.id, 2);
  });

  it('restores in a fresh kernel', () => {
    assert.equal(restoreCode(), '%load_ext nbcheckpoint\n%checkpoint restore');
    assert.equal(
      restoreCode(12),
      '%load_ext nbcheckpoint\n%checkpoint restore 12'
    );
  });

  it('tells the fresh kernel its notebook before restoring', () => {
    const identity = { id: 'f00d', path: 'train.ipynb', root: '/srv/nb' };
    assert.equal(
      restoreCode(undefined, identity),
      '__nbc_notebook__ = {"id": "f00d", "path": "train.ipynb", "root": "/srv/nb"}\n' +
        '%load_ext nbcheckpoint\n%checkpoint restore'
    );
    assert.equal(
      identityCode({ ...identity, key: 'Untitled-1a2b3c4d5e' }),
      '__nbc_notebook__ = {"id": "f00d", "path": "train.ipynb", "root": "/srv/nb", "key": "Untitled-1a2b3c4d5e"}'
    );
  });

  it('quotes any path as a Python string', () => {
    const code = identityCode({
      id: 'f00d',
      path: 'a "b"\\c\n.ipynb',
      root: '/srv'
    });
    assert.equal(code.split('\n').length, 1);
    assert.ok(code.includes('"a \\"b\\"\\\\c\\n.ipynb"'), code);
  });

  it('reads the notebook id from its metadata', () => {
    assert.deepEqual(readNotebookMetadata({ id: 'f00d', path: 'a.ipynb' }), {
      id: 'f00d',
      path: 'a.ipynb'
    });
    assert.deepEqual(readNotebookMetadata({ id: 'f00d' }), {
      id: 'f00d',
      path: ''
    });
    assert.equal(readNotebookMetadata(undefined), null);
    assert.equal(readNotebookMetadata({ id: '../etc' }), null);
    assert.equal(readNotebookMetadata({ id: 3 }), null);
  });

  it('reports the restore line, not the load_ext announcement', () => {
    const out =
      '3 checkpoints from an earlier kernel; latest #3 (cell [2], 1 min ago). Run %checkpoint restore to bring the state back.\n' +
      'Restored checkpoint #3 (cell [2], 1 min ago): 2 variables (a, b).\n' +
      '  not saved: gen (generator): cannot pickle\n';
    assert.equal(
      restoreSummary(out),
      'Restored checkpoint #3 (cell [2], 1 min ago): 2 variables (a, b).'
    );
    assert.equal(restoreSummary('something else\n'), 'something else');
    assert.equal(restoreSummary(''), 'Restored.');
    assert.equal(
      plainText('\u001b[0;31mUsageError\u001b[0m: no'),
      'UsageError: no'
    );
  });

  it('reads the offerRestore setting', () => {
    assert.equal(offerRestoreSetting('always'), 'always');
    assert.equal(offerRestoreSetting('never'), 'never');
    assert.equal(offerRestoreSetting('ask'), 'ask');
    assert.equal(offerRestoreSetting(undefined), 'ask');
    assert.equal(offerRestoreSetting('bogus'), 'ask');
  });
});

describe('trackRestart: one notification per restart', () => {
  it('a crash: restarting then autorestarting is one restart', () => {
    assert.equal(
      restarts(['busy', 'restarting', 'autorestarting', 'starting', 'idle']),
      1
    );
  });

  it('a restart from the menu', () => {
    assert.equal(restarts(['idle', 'restarting', 'idle', 'busy', 'idle']), 1);
  });

  it('announces when the new kernel is ready, not before', () => {
    let state = INITIAL_RESTART_STATE;
    let finished: boolean;
    [state, finished] = trackRestart(state, 'autorestarting', 0);
    assert.equal(finished, false);
    [state, finished] = trackRestart(state, 'unknown', 1);
    assert.equal(finished, false);
    [state, finished] = trackRestart(state, 'starting', 2);
    assert.equal(finished, false);
    [, finished] = trackRestart(state, 'idle', 3);
    assert.equal(finished, true);
  });

  it('ignores a late echo of the same restart', () => {
    assert.equal(
      restarts([
        ['restarting', 0],
        ['idle', 100],
        ['autorestarting', 300],
        ['idle', 400]
      ]),
      1
    );
  });

  it('two restarts far apart are two', () => {
    assert.equal(
      restarts([
        ['restarting', 0],
        ['autorestarting', 1],
        ['idle', 1000],
        ['busy', 5000],
        ['restarting', 60_000],
        ['idle', 61_000]
      ]),
      2
    );
  });

  it('a failed restart announces nothing, and no status means no restart', () => {
    assert.equal(restarts(['restarting', 'dead']), 0);
    assert.equal(restarts(['idle', 'busy', 'idle', 'starting', 'idle']), 0);
  });
});

describe('rows of the server list', () => {
  it('stacks id, status, where and what', () => {
    const row = checkpointRow(info({ variables: 1, size: 1234 }));
    assert.equal(row.label, '#12');
    assert.equal(row.status, 'running');
    assert.equal(row.tone, 'running');
    assert.equal(
      row.where,
      '"for epoch in range(100):" [5], 3 min ago, `for epoch` at 57/100'
    );
    assert.equal(row.what, '1 variable · 1.2 KB');
    assert.ok(row.title.includes('cell: for epoch in range(100):'), row.title);
  });

  it('says when a checkpoint does not verify, and why', () => {
    const row = checkpointRow(
      info({ verified: false, problem: 'bad signature', pinned: true })
    );
    assert.equal(row.label, '#12 (pinned)');
    assert.equal(row.status, 'unverified');
    assert.equal(row.tone, 'warn');
    assert.ok(row.title.includes('not verified: bad signature'), row.title);
  });

  it('ages as time passes after the list was read', () => {
    // info() is 3 min old when read; two minutes later the row says so.
    assert.ok(checkpointRow(info(), 120).where.includes('5 min ago'));
    assert.ok(checkpointRow(info(), 0).where.includes('3 min ago'));
  });

  it('names a cell by its first line, then its id', () => {
    assert.equal(
      cellLabel(5, 'for epoch in range(100):'),
      '"for epoch in range(100):" [5]'
    );
    assert.equal(cellLabel(null, 'x = 1'), '"x = 1"');
    assert.equal(
      cellLabel(7, '', '0f3a9c2e-41d7-4b1e-9c3a-2b7d8e1f0a6c'),
      'cell 0f3a9c2e [7]'
    );
    assert.equal(cellLabel(7, ''), 'cell [7]');
    assert.equal(cellLabel(null, ''), '');
    assert.equal(
      cellLabel(1, 'a'.repeat(50), null, 10),
      `"${'a'.repeat(9)}…" [1]`
    );
    const status = statusFromMessage(
      {
        id: 3,
        last: 0,
        now: 0,
        status: 'manual',
        position: '',
        cell: 4,
        first_line: 'train()'
      },
      0
    );
    assert.ok(statusTitle(status).includes('in cell "train()" [4]'));
  });

  it('counts in words', () => {
    assert.equal(plural(1, 'variable'), '1 variable');
    assert.equal(plural(0, 'variable'), '0 variables');
    assert.equal(plural(3, 'variable'), '3 variables');
  });
});

describe('problem notifications', () => {
  const text =
    'nbcheckpoint: could not save a checkpoint (Could not write checkpoint data to /srv/.nbcheckpoint/blobs: Disk quota exceeded. ...)';

  it('name the notebook, the reason and the store path', () => {
    assert.equal(
      problemText('train.ipynb', {
        event: 'problem',
        text,
        path: '/srv/.nbcheckpoint/blobs',
        reason: 'Disk quota exceeded'
      }),
      'State checkpoints of train.ipynb not saved: Disk quota exceeded (/srv/.nbcheckpoint/blobs)'
    );
  });

  it('say a checkpoint is overdue, with the store path', () => {
    assert.equal(
      problemText('train.ipynb', {
        event: 'problem',
        kind: 'overdue',
        text,
        path: '/srv/.nbcheckpoint',
        reason: 'no safe point for 3 s, every 1 s'
      }),
      'State checkpoints of train.ipynb overdue: no safe point for 3 s, every 1 s (/srv/.nbcheckpoint)'
    );
  });

  it('keep the end of a long path within what JupyterLab shows', () => {
    const path = '/home/ann/' + 'deep/'.repeat(40) + '.nbcheckpoint/blobs';
    const message = problemText('train.ipynb', {
      event: 'problem',
      text,
      path,
      reason: 'Read-only file system'
    });
    assert.ok(message.length <= NOTIFICATION_MAX, message);
    assert.ok(message.endsWith('deep/.nbcheckpoint/blobs)'), message);
    assert.ok(message.includes('Read-only file system (…'), message);
  });

  it('show other warnings without the prefix', () => {
    assert.equal(
      problemText('a.ipynb', {
        event: 'problem',
        text: 'nbcheckpoint: could not mark checkpoint #3 interrupted (gone).\n'
      }),
      'State checkpoints of a.ipynb: could not mark checkpoint #3 interrupted (gone).'
    );
  });
});
