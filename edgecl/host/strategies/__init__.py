"""Task-based continual-learning strategies for host training, one small module each.

=============  =========================================================  ==========
name           idea                                                       module
=============  =========================================================  ==========
naive          fine-tuning, nothing protects old tasks (lower bound)      naive
joint          train on every task seen so far (upper bound)              joint
ewc            diagonal-Fisher quadratic penalty per task                 ewc
online-ewc     one running Fisher with decay                              online_ewc
si             path-integral importance (synaptic intelligence)           si
mas            output-sensitivity importance (memory aware synapses)      mas
lwf            distillation on the previous model's outputs               lwf
replay         reservoir buffer of old samples mixed into each batch      replay
packnet        prune per task, freeze each task's weights (task-IL)       packnet
xdg            fixed random gate of hidden units per task (task-IL)       xdg
multihead      fine-tuning with the task-IL multi-head output             multihead
agem           project gradients that conflict with an episodic memory    agem
gpm            project gradients out of old tasks' input subspaces        gpm
importance-lr  steps scaled down by accumulated Fisher importance         importance_lr
kfac-ewc       EWC with a Kronecker-factored Fisher per Linear layer      kfac
feature-distill  distil the previous extractor's features (L2)            feature_distill
dgr            a VAE's samples, soft-labelled by the previous model       dgr
pnn            a frozen column per task, laterals into the new (task-IL)  pnn
=============  =========================================================  ==========

:func:`make_strategy` builds one by name from flat keyword options; options a
strategy does not use are ignored, so a CLI can pass all of its flags.

>>> make_strategy("ewc", ewc_lambda=10.0, buffer_size=5).ewc_lambda
10.0
>>> sorted(STRATEGIES)[:4]
['agem', 'dgr', 'ewc', 'feature-distill']
"""

from __future__ import annotations

import inspect
from typing import Any

from edgecl.errors import ConfigError
from edgecl.host.strategies.agem import AGEM
from edgecl.host.strategies.base import (
    Strategy,
    TaskView,
    UnsupportedScenario,
    check_scenario,
    masked,
)
from edgecl.host.strategies.dgr import DGR
from edgecl.host.strategies.ewc import EWC, diagonal_fisher
from edgecl.host.strategies.feature_distill import FeatureDistill
from edgecl.host.strategies.gpm import GPM
from edgecl.host.strategies.importance_lr import ImportanceLR
from edgecl.host.strategies.joint import Joint
from edgecl.host.strategies.kfac import KFACEWC
from edgecl.host.strategies.lwf import LwF
from edgecl.host.strategies.mas import MAS
from edgecl.host.strategies.multihead import MultiHead
from edgecl.host.strategies.naive import Naive
from edgecl.host.strategies.online_ewc import OnlineEWC
from edgecl.host.strategies.packnet import PackNet
from edgecl.host.strategies.pnn import PNN
from edgecl.host.strategies.replay import Replay
from edgecl.host.strategies.si import SI
from edgecl.host.strategies.xdg import XdG

__all__ = [
    "AGEM",
    "DGR",
    "EWC",
    "GPM",
    "KFACEWC",
    "FeatureDistill",
    "MAS",
    "SI",
    "STRATEGIES",
    "ImportanceLR",
    "Joint",
    "LwF",
    "MultiHead",
    "Naive",
    "OnlineEWC",
    "PNN",
    "PackNet",
    "Replay",
    "Strategy",
    "TaskView",
    "UnsupportedScenario",
    "XdG",
    "check_scenario",
    "diagonal_fisher",
    "make_strategy",
    "masked",
]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        Naive,
        Joint,
        EWC,
        OnlineEWC,
        SI,
        MAS,
        LwF,
        Replay,
        PackNet,
        XdG,
        MultiHead,
        AGEM,
        GPM,
        ImportanceLR,
        KFACEWC,
        FeatureDistill,
        DGR,
        PNN,
    )
}


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build strategy ``name``, passing it the options its constructor takes."""
    if name not in STRATEGIES:
        raise ConfigError(f"strategy = {name!r}: must be one of {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
