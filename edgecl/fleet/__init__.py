"""Fleet learning: devices share what their prototype heads learned, never their windows.

* :mod:`edgecl.fleet.states` — open a state file or a daemon's state directory, the
  bundle's pre-trained head as the common base, merge states (``edgecl merge``).
* :mod:`edgecl.fleet.protocol` — the round protocol, transport-free: a device's
  delta upload (what it learned since the head it last adopted), the server's
  checks (same bundle and config, finite statistics, no stale or repeated upload,
  counts bounded by the window rate) and the exact aggregate.
* :mod:`edgecl.fleet.device` — one device's state opened for a round (locked,
  journal replayed, saved atomically with its fleet bookkeeping).
* :mod:`edgecl.fleet.simulate` — what a simulation learns and measures.
* :mod:`edgecl.fleet.launch` — Flower's processes (SuperLink, SuperNodes, ``flwr run``).
* :mod:`edgecl.fleet.apps` — the protocol on Flower's Message API (``ServerApp``,
  ``ClientApp``); needs the ``[fleet]`` extra (``flwr``).

Everything but :mod:`edgecl.fleet.apps` imports no Flower code.
"""
