/**
 * Unit tests of the comparison's pure helpers (the text of each diff row).
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import {
  diffEntryText,
  diffShownRows,
  diffSizeText,
  IDiffEntry,
  IDiffResult,
  IDiffRow,
  shapeText
} from '../src/helpers';

const array = (shape: number[], size: number): IDiffEntry => ({
  type: 'numpy.ndarray',
  size,
  shape,
  dtype: 'float64',
  saved: true,
  reason: null
});

describe('diff rows', () => {
  it('writes shapes as NumPy does', () => {
    assert.equal(shapeText([3]), '(3,)');
    assert.equal(shapeText([2, 4]), '(2, 4)');
    assert.equal(shapeText([]), '()');
  });

  it('describes a side with its shape and dtype, or nothing', () => {
    assert.equal(
      diffEntryText(array([2, 3], 48)),
      'numpy.ndarray (2, 3) float64'
    );
    assert.equal(
      diffEntryText({
        ...array([1], 8),
        shape: null,
        dtype: null,
        type: 'int'
      }),
      'int'
    );
    assert.equal(diffEntryText(null), '');
  });

  it('gives one size, or the change of size', () => {
    const row: IDiffRow = {
      name: 'w',
      change: 'changed',
      certain: true,
      before: array([10], 80),
      after: array([20], 160),
      notes: []
    };
    assert.equal(diffSizeText(row), '80 B → 160 B');
    assert.equal(diffSizeText({ ...row, after: array([10], 80) }), '80 B');
    assert.equal(
      diffSizeText({ ...row, change: 'added', before: null }),
      '160 B'
    );
    assert.equal(
      diffSizeText({
        ...row,
        change: 'not saved',
        before: { ...array([1], 0), saved: false },
        after: { ...array([1], 0), saved: false }
      }),
      ''
    );
  });

  it('leaves out the unchanged variables', () => {
    const result: IDiffResult = {
      before: '#1',
      after: '#2',
      summary: '#1 -> #2: 1 changed, 0 added, 0 removed, 1 same',
      shapes_known: true,
      rows: [
        {
          name: 'a',
          change: 'changed',
          certain: true,
          before: null,
          after: null,
          notes: []
        },
        {
          name: 'b',
          change: 'same',
          certain: true,
          before: null,
          after: null,
          notes: []
        }
      ]
    };
    assert.deepEqual(
      diffShownRows(result).map(r => r.name),
      ['a']
    );
  });
});
