"""The ``archive-oa`` command line: one module per command group, each with ``register``."""
