"""``python -m edgecl``: the ``edgecl`` command, for when the script is not on PATH.

``torchrun --nproc-per-node 2 -m edgecl pretrain ...`` starts the processes this way.
"""

from __future__ import annotations

import sys

from edgecl.cli import main

if __name__ == "__main__":  # importing this module (pkgutil, doctest collection) runs nothing
    sys.exit(main())
