"""Lets spyne 2.14.0 (the last release on PyPI) import on Python 3.12 and 3.13.

spyne vendors an old copy of ``six`` as ``spyne.util.six``.  That copy serves its
``six.moves`` submodules through an import hook that only implements the
``find_module`` protocol, which Python 3.12 removed, so
``from spyne.util.six.moves.collections_abc import MutableSet`` fails there.
The real ``six`` (>= 1.16) implements ``find_spec``.  The hook below answers every
``spyne.util.six.moves…`` import with a thin proxy of the matching ``six.moves…``
module; the rest of spyne's vendored six stays as it is (it carries helpers the
real one lacks).

Python 3.13 removed ``cgi``, which spyne's WSGI server imports; the ``legacy-cgi``
distribution provides the same module and ``setup.cfg`` installs it there.

spyne's ``MethodContext.close`` runs a full ``gc.collect()`` after a request whenever
``spyne.const.MIN_GC_INTERVAL`` (1 s) has passed since the last one.  With a large
heap and several worker threads that stops every thread about once a second (28 % of
the gateway's busy time in the B1 profile); Python's own generational collector
already reclaims cycles, and nothing of ours relies on a forced collection to close
files or connections (they are closed explicitly).  ``disable_forced_gc`` turns it off;
spyne reads the constant at every request (``const.MIN_GC_INTERVAL`` in
``spyne/context.py``), so setting it here, before any request, takes effect.

Every module of ours that imports spyne imports this module first.  It is the one
place in the code base that acts at import time, because it must run before
spyne's own imports do.
"""

import importlib
import importlib.abc
import importlib.util
import math
import sys
import types

_PREFIX = "spyne.util.six.moves"


class _ModuleProxy(types.ModuleType):
    """A module that forwards attribute reads to another (six.moves is lazy)."""

    def __init__(self, name: str, target: types.ModuleType) -> None:
        super().__init__(name)
        self.__dict__["_target"] = target
        self.__path__ = []  # a package, so that its submodules can be imported

    def __getattr__(self, attr):
        return getattr(self.__dict__["_target"], attr)


class _SixMovesFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == _PREFIX or fullname.startswith(_PREFIX + "."):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        real = "six.moves" + spec.name[len(_PREFIX):]
        return _ModuleProxy(spec.name, importlib.import_module(real))

    def exec_module(self, module):
        return None


def install() -> None:
    """Register the six.moves alias on Python 3.12+; calling it twice is harmless."""
    if sys.version_info < (3, 12):
        return
    if not any(isinstance(finder, _SixMovesFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SixMovesFinder())


def disable_forced_gc() -> None:
    """No ``gc.collect()`` from spyne after requests (see the module doc)."""
    import spyne.const

    spyne.const.MIN_GC_INTERVAL = math.inf


install()
disable_forced_gc()
