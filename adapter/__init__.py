"""archive-oa-adapter: the bridge between an accounting electronic archive and a legacy OA."""

__version__ = "0.1.0"
