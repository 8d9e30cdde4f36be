"""Sliding windows over raw sensor rows.

A sensor delivers rows (one time step of ``C`` channels); models and features
work on windows of ``length`` consecutive rows, a new window every ``hop`` rows.
Offline, two pure functions:

* :func:`sliding_windows` — windows over one continuous signal, as a read-only
  strided view (no copy).
* :func:`windows_by_segment` — windows over concatenated recordings that never
  cross a recording boundary, each labelled by the majority (default) or the
  last-row label, with the subject and recording of every window.

Online, for the daemon:

* :class:`StreamWindower` — rows pushed one at a time into a preallocated ring;
  every ``hop`` rows (once ``length`` have arrived) a window completes and gets
  the next ``seq`` number; its label follows the same rule as above.
* :class:`SeqMemory` — the embeddings of the last ``capacity`` windows by
  ``seq``, so a label that arrives later still reaches its window.

>>> import numpy as np
>>> rows = np.arange(12, dtype=np.float32).reshape(6, 2)
>>> sliding_windows(rows, length=4, hop=2).shape
(2, 4, 2)
>>> w = windows_by_segment(rows, labels=np.zeros(6, int), groups=np.array([0, 0, 0, 1, 1, 1]),
...                        length=2, hop=1)
>>> w.x.shape, w.group.tolist()
((4, 2, 2), [0, 0, 1, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SeqMemory",
    "StreamWindower",
    "Windows",
    "n_windows",
    "sliding_windows",
    "windows_by_segment",
]

LABEL_RULES = ("majority", "last")


def n_windows(n_rows: int, length: int, hop: int) -> int:
    """Number of full windows of ``length`` rows, ``hop`` apart, in ``n_rows`` rows.

    >>> [n_windows(n, 100, 50) for n in (99, 100, 149, 150)]
    [0, 1, 1, 2]
    """
    _check_length_hop(length, hop)
    return 0 if n_rows < length else (n_rows - length) // hop + 1


def sliding_windows(rows: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Windows of ``length`` rows every ``hop`` rows; a trailing partial window is dropped.

    Parameters
    ----------
    rows : ndarray, shape (n_rows, n_channels)
        One continuous signal.
    length, hop : int
        Window length and step, in rows (both >= 1).

    Returns
    -------
    ndarray, shape (n_windows, length, n_channels)
        A read-only strided view into ``rows`` (overlapping windows share memory);
        ``np.array(...)`` it before writing.

    >>> sliding_windows(np.arange(5.0)[:, None], length=2, hop=2)[:, :, 0].tolist()
    [[0.0, 1.0], [2.0, 3.0]]
    """
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D (n_rows, n_channels), got shape {rows.shape}")
    n = n_windows(rows.shape[0], length, hop)
    if n == 0:
        return np.empty((0, length, rows.shape[1]), dtype=rows.dtype)
    # sliding_window_view puts the window axis last: (n_rows-length+1, C, length).
    view = np.lib.stride_tricks.sliding_window_view(rows, length, axis=0)[::hop]
    return view.transpose(0, 2, 1)


@dataclass(frozen=True, eq=False)
class Windows:
    """Windows cut from a row stream, with per-window metadata.

    Attributes
    ----------
    x : ndarray, shape (n, length, n_channels)
        Window contents (a copy, not a view of the rows).
    y : ndarray, shape (n,), int64
        Window label (see ``label`` of :func:`windows_by_segment`).
    group : ndarray, shape (n,)
        Recording (group) id of each window.
    subject : ndarray, shape (n,) or None
        Subject id of each window, when subjects were given.
    start : ndarray, shape (n,), int64
        Index of each window's first row in the input rows.
    """

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    subject: np.ndarray | None
    start: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


def windows_by_segment(
    rows: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    length: int,
    hop: int,
    *,
    subjects: np.ndarray | None = None,
    label: str = "majority",
) -> Windows:
    """Cut windows that never cross a recording boundary.

    A segment is a maximal run of consecutive rows with the same ``groups``
    value; a group id that reappears later starts a new segment, so no window
    ever mixes two recordings. Windows restart at each segment's first row.

    Parameters
    ----------
    rows : ndarray, shape (n_rows, n_channels)
    labels : ndarray, shape (n_rows,)
        Integer label of every row (may be negative, e.g. -1 for "unlabelled").
    groups : ndarray, shape (n_rows,)
        Recording id of every row.
    length, hop : int
        Window length and step, in rows.
    subjects : ndarray, shape (n_rows,), optional
        Subject id of every row; the window takes its first row's subject.
    label : {"majority", "last"}
        ``"majority"``: the most frequent row label in the window (ties go to the
        smaller label) — robust near label changes, used for evaluation.
        ``"last"``: the newest row's label — what a causal, streaming labeller sees.

    Returns
    -------
    Windows

    >>> rows = np.zeros((7, 1))
    >>> w = windows_by_segment(rows, np.array([0, 1, 1, 1, 2, 2, 0]), np.zeros(7, int), 3, 2)
    >>> w.y.tolist(), w.start.tolist()
    ([1, 1, 2], [0, 2, 4])
    >>> windows_by_segment(rows, np.array([0, 1, 1, 1, 2, 2, 0]), np.zeros(7, int), 3, 2,
    ...                    label="last").y.tolist()
    [1, 2, 0]
    """
    rows = np.asarray(rows)
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D (n_rows, n_channels), got shape {rows.shape}")
    n_rows = rows.shape[0]
    for name, arr in (("labels", labels), ("groups", groups), ("subjects", subjects)):
        if arr is not None and np.shape(arr) != (n_rows,):
            raise ValueError(f"{name} must have shape ({n_rows},), got {np.shape(arr)}")
    if label not in LABEL_RULES:
        raise ValueError(f"label = {label!r}: must be one of {', '.join(LABEL_RULES)}")
    _check_length_hop(length, hop)

    # Segment starts/ends from the points where the group id changes.
    change = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    seg_start = np.concatenate([[0], change]).astype(np.int64) if n_rows else np.empty(0, np.int64)
    seg_end = np.concatenate([change, [n_rows]]).astype(np.int64) if n_rows else seg_start
    counts = np.maximum(0, (seg_end - seg_start - length) // hop + 1)
    # Window starts: seg_start + hop * k for k < counts, built without a Python loop.
    seg_of = np.repeat(np.arange(seg_start.size), counts)
    first = np.cumsum(counts) - counts
    k = np.arange(seg_of.size) - np.repeat(first, counts)
    start = seg_start[seg_of] + hop * k

    idx = start[:, None] + np.arange(length)[None, :]
    x = rows[idx] if start.size else np.empty((0, length, rows.shape[1]), rows.dtype)
    if label == "last":
        y = labels[start + length - 1] if start.size else np.empty(0, np.int64)
    else:
        y = _majority(labels[idx]) if start.size else np.empty(0, np.int64)
    return Windows(
        x=x,
        y=np.asarray(y, dtype=np.int64),
        group=groups[start],
        subject=None if subjects is None else np.asarray(subjects)[start],
        start=start.astype(np.int64),
    )


def _majority(window_labels: np.ndarray) -> np.ndarray:
    """Row-wise mode of an (n, length) integer array; ties go to the smaller value."""
    values, codes = np.unique(window_labels, return_inverse=True)
    codes = codes.reshape(window_labels.shape)
    n, k = codes.shape[0], values.size
    # One bincount over (window, code) pairs counts every window at once.
    counts = np.bincount((np.arange(n)[:, None] * k + codes).ravel(), minlength=n * k)
    return values[np.argmax(counts.reshape(n, k), axis=1)]


def _check_length_hop(length: int, hop: int) -> None:
    for name, v in (("length", length), ("hop", hop)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} = {v!r}: must be an integer >= 1")


class StreamWindower:
    """Sliding windows over a live row stream, without allocating per row.

    The ring holds every row twice (at ``i`` and ``i + length``), so the newest
    ``length`` rows are always one contiguous slice: :meth:`window` is a view,
    not a copy. Windows match :func:`sliding_windows` over the same rows, and
    their labels match :func:`windows_by_segment` with the same ``label`` rule
    (rows pushed without a label count as ``-1``; a window whose label comes out
    ``-1`` is unlabelled).

    Parameters
    ----------
    length, hop : int
        Window length and step, in rows.
    channels : int
        Values per row.
    label : {"majority", "last"}
    dtype : numpy dtype
        Of the ring and so of the windows (float32: what the extractor takes).

    >>> w = StreamWindower(length=3, hop=2, channels=1)
    >>> [w.push([float(i)], label=i // 3) for i in range(7)]
    [None, None, 0, None, 1, None, 2]
    >>> w.window()[:, 0].tolist(), w.window_label()
    ([4.0, 5.0, 6.0], 1)
    """

    def __init__(
        self,
        length: int,
        hop: int,
        channels: int,
        *,
        label: str = "majority",
        dtype: np.dtype | type = np.float32,
    ) -> None:
        _check_length_hop(length, hop)
        _check_length_hop(channels, 1)
        if label not in LABEL_RULES:
            raise ValueError(f"label = {label!r}: must be one of {', '.join(LABEL_RULES)}")
        self.length, self.hop, self.channels, self.label_rule = length, hop, channels, label
        self._ring = np.zeros((2 * length, channels), dtype=dtype)
        self._labels = np.full(2 * length, -1, dtype=np.int64)
        self._pos = 0  # where the next row goes, in [0, length)
        self.rows = 0  # rows since the last reset
        self.seq = 0  # the next window's number

    def push(self, row: np.ndarray | list[float], label: int | None = None) -> int | None:
        """Add one row; return the new window's ``seq`` when this row completes one."""
        p = self._pos
        self._ring[p] = row
        self._ring[p + self.length] = row
        lab = -1 if label is None else label
        self._labels[p] = lab
        self._labels[p + self.length] = lab
        self._pos = p + 1 if p + 1 < self.length else 0
        self.rows += 1
        if self.rows < self.length or (self.rows - self.length) % self.hop:
            return None
        seq = self.seq
        self.seq += 1
        return seq

    def window(self) -> np.ndarray:
        """The newest ``length`` rows, oldest first: a view valid until the next push."""
        return self._ring[self._pos : self._pos + self.length]

    def window_label(self) -> int:
        """The current window's label by the ``label`` rule, or -1 if unlabelled."""
        labels = self._labels[self._pos : self._pos + self.length]
        if self.label_rule == "last":
            return int(labels[-1])
        if labels.max() < 0:
            return -1
        # Mode with ties to the smaller label, like _majority (-1 is the smallest).
        return int(np.argmax(np.bincount(labels + 1))) - 1

    def reset(self) -> None:
        """A new connection: forget the partial window and number windows from 0 again."""
        self._pos = 0
        self.rows = 0
        self.seq = 0


class SeqMemory:
    """The embeddings of the last ``capacity`` windows, looked up by ``seq``.

    A label for a window older than that, for one not yet seen, or a second label
    for the same window, is refused by reason (``unknown_seq`` or
    ``duplicate_seq``) — counted, never an error.

    >>> m = SeqMemory(capacity=2, dim=1)
    >>> for seq in range(3):
    ...     m.put(seq, np.array([seq], np.float32))
    >>> m.take(0), m.take(2), m.take(2), m.take(5)
    ('unknown_seq', array([2.], dtype=float32), 'duplicate_seq', 'unknown_seq')
    """

    def __init__(self, capacity: int, dim: int) -> None:
        _check_length_hop(capacity, 1)
        self.capacity = capacity
        self._x = np.zeros((capacity, dim), dtype=np.float32)
        self._seq = np.full(capacity, -1, dtype=np.int64)
        self._used = np.zeros(capacity, dtype=bool)

    def put(self, seq: int, x: np.ndarray) -> None:
        """Remember ``x`` as window ``seq`` (overwrites the slot of ``seq - capacity``)."""
        i = seq % self.capacity
        self._x[i] = x
        self._seq[i] = seq
        self._used[i] = False

    def clear(self) -> None:
        """Forget every window (a new connection numbers windows from 0 again)."""
        self._seq[:] = -1

    def take(self, seq: int) -> np.ndarray | str:
        """The embedding of window ``seq`` (a copy), or the reject reason."""
        i = seq % self.capacity
        if self._seq[i] != seq:
            return "unknown_seq"
        if self._used[i]:
            return "duplicate_seq"
        self._used[i] = True
        return self._x[i].copy()
