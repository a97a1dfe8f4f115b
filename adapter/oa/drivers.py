"""OA drivers, found by name through the entry-point group ``archive_oa.oa_drivers``.

A driver is a callable ``factory(settings: OaSettings) -> OaWorkflowPort`` (a class
whose constructor takes the ``[oa]`` settings, usually).  The built-in ``generic``
driver is registered in our own ``setup.cfg`` exactly as a deployment's package would
register its own, so the adapter has no list of drivers: ``[oa] driver`` names one.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Callable

from ..domain.ports import OaWorkflowPort
from ..errors import ConfigurationError
from ..settings import OaSettings

GROUP = "archive_oa.oa_drivers"

DriverFactory = Callable[[OaSettings], OaWorkflowPort]


def installed_drivers() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def find_driver(name: str) -> EntryPoint:
    """The entry point of driver ``name``, not yet loaded (loading imports its package)."""
    found = installed_drivers().get(name)
    if found is None:
        names = ", ".join(sorted(installed_drivers())) or "none (is archive-oa-adapter installed?)"
        raise ConfigurationError(
            f"[oa] driver = {name!r} (ARCHIVE_OA_OA_DRIVER) is not an installed OA driver; "
            f"installed drivers: {names}"
        )
    return found


def open_driver(settings: OaSettings) -> OaWorkflowPort:
    """The driver ``settings.driver`` connected with ``settings``; the caller closes it."""
    factory: DriverFactory = find_driver(settings.driver).load()
    return factory(settings)
