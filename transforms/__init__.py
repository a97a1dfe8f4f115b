"""XML contracts and transforms: schemas/, rules/, xslt/ and the pipeline that runs them.

``Transforms.from_settings(settings.workflow)`` compiles everything once per process.
"""

from .pipeline import VOUCHER_NS, WORKFLOW_NS, Transforms, element_path

__all__ = ["Transforms", "VOUCHER_NS", "WORKFLOW_NS", "element_path"]
