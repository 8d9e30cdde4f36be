"""Fleet learning: devices share what their prototype heads learned, never their windows.

* :mod:`edgecl.fleet.states` — open a state file or a (stopped) daemon's state
  directory, the bundle's pre-trained head as the common base, merge states.
* :mod:`edgecl.fleet.protocol` — the round protocol, transport-free: a device's
  delta upload (what it learned since the head it last adopted), the server's
  checks (same bundle and config, finite statistics, no double upload, counts
  bounded by the window rate) and the exact aggregate.
* :mod:`edgecl.fleet.apps` — the same protocol on Flower's Message API (``ServerApp``,
  ``ClientApp``); needs the ``[fleet]`` extra (``flwr``).

Everything but :mod:`edgecl.fleet.apps` is numpy-only.
"""
