"""The sensor simulator: a recorded IMU row stream replayed as a live sensor.

:mod:`edgecl.sim.sensor` makes the bytes (rows, delayed labels, injected faults,
window numbering identical to the daemon's); :mod:`edgecl.sim.serve` sends them
over a pty, TCP or a file. ``tools/sensor_sim.py`` is the command line and
``edgecl demo`` its main user.
"""

from __future__ import annotations

from edgecl.sim.sensor import DEFAULT_DATA, FAULTS, SensorSimulator, SimConfig, load_rows
from edgecl.sim.serve import serve_pty, serve_stream, serve_tcp

__all__ = [
    "DEFAULT_DATA",
    "FAULTS",
    "SensorSimulator",
    "SimConfig",
    "load_rows",
    "serve_pty",
    "serve_stream",
    "serve_tcp",
]
