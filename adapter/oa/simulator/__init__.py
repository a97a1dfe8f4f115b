"""The reference legacy OA workflow simulator (``archive-oa oa-sim``).

Implements wsdl/legacy-oa-workflow.wsdl with spyne, keeps its requests in
``<data dir>/oa-sim.db``, decides them by configurable approver rules and injects
faults on demand.  Embed it with ``start_simulator(SimulatorConfig(...), data_dir)``.
"""

from .config import DEFAULT_PASSWORD, DEFAULT_PORT, DEFAULT_USER, ENDPOINT_PATH, SimulatorConfig
from .db import CompletedEntry, SimulatorDb
from .server import SimulatorHandle, start_simulator

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_PORT",
    "DEFAULT_USER",
    "ENDPOINT_PATH",
    "CompletedEntry",
    "SimulatorConfig",
    "SimulatorDb",
    "SimulatorHandle",
    "start_simulator",
]
