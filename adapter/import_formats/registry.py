"""The installed import formats, found through the entry-point group ``archive_oa.import_formats``.

Every format — the built-in ``canonical`` too — is registered as an entry point, so a
deployment adds its own by installing a package, without touching this one.  ``_entry_points``
is the only place the group is read.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from ..errors import ConfigurationError
from .choice import AUTO, FormatChoice
from .contract import ImportFormat

GROUP = "archive_oa.import_formats"
BUILT_IN = "canonical"  # always listed first, so auto tries it first


def choose(name: str) -> FormatChoice:
    """``auto`` (every installed format, by content) or the one installed format called ``name``."""
    points = _entry_points()
    if name == AUTO:
        return FormatChoice(tuple(_load(point) for point in points.values()), auto=True)
    if name not in points:
        raise ConfigurationError(
            f"import format {name!r} is not installed; give --format one of: {', '.join([AUTO, *points])}"
        )
    return FormatChoice((_load(points[name]),), auto=False)


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=GROUP):
        if point.name in found:
            raise ConfigurationError(
                f"import format {point.name!r} is registered twice ({_origin(found[point.name])} and "
                f"{_origin(point)}); uninstall one of the packages"
            )
        found[point.name] = point
    if BUILT_IN not in found:
        raise ConfigurationError(
            f"the built-in import format {BUILT_IN!r} is not registered (entry-point group {GROUP}): "
            "the archive-oa-adapter package is not installed properly; install it again (pip install .)"
        )
    return {name: found[name] for name in [BUILT_IN, *sorted(set(found) - {BUILT_IN})]}


def _load(point: EntryPoint) -> ImportFormat:
    try:
        factory = point.load()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"import format {point.name!r} ({_origin(point)}) cannot be loaded: {exc}; install its package again"
        ) from exc
    fmt = factory()
    if getattr(fmt, "name", None) != point.name:
        raise ConfigurationError(
            f"import format {point.name!r} ({_origin(point)}) calls itself {getattr(fmt, 'name', None)!r}; "
            "the entry point's name and the format's name must be the same"
        )
    return fmt


def _origin(point: EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"{point.value} from {dist.name if dist else 'an unknown package'}"
