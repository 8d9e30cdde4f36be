"""Multi-head fine-tuning: the plain task-IL baseline of the references' tables.

In the task-incremental scenario the references (e.g. van de Ven & Tolias 2019,
"Three scenarios for continual learning") list a "multi-head" baseline: a
shared body trained on each task in turn, with a separate output head per task
chosen by the task id. In edgecl that is not a new method: task-IL already
masks the one shared output layer to each task's classes in training and at
test time (:func:`edgecl.host.strategies.base.masked`), which *is* a
multi-head output — each task's rows of the layer are its head, and the
masking keeps other tasks' rows out of its loss. So ``multihead`` is
fine-tuning (:class:`~edgecl.host.strategies.naive.Naive`) restricted to
task-IL; it exists so that result tables carry the baseline under the name the
references use, and it refuses the other scenarios, where one head is shared
and the name would be wrong.

>>> MultiHead().scenarios
('task-il',)
"""

from __future__ import annotations

from edgecl.host.strategies.base import Strategy

__all__ = ["MultiHead"]


class MultiHead(Strategy):
    """Fine-tuning with one head per task (task-IL's logit masking); nothing else added."""

    name = "multihead"
    scenarios = ("task-il",)
    scenario_reason = "a head per task is chosen by the task id, known only in task-IL"
