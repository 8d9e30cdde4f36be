"""Host-side training: models, checkpoints, pre-training and continual-learning strategies.

Everything under ``edgecl.host`` needs torch (``pip install 'edgecl[host]'``);
nothing outside it imports torch. This ``__init__`` deliberately imports
nothing, so ``import edgecl.host`` stays cheap and side-effect free; import the
modules you need (``edgecl.host.models``, ``edgecl.host.checkpoint``, ...).
"""

from __future__ import annotations
