"""``canonical``: voucher XML as ``transforms/schemas/voucher.xsd`` defines it, one file one document.

The built-in format, registered through the entry-point group like any other (setup.cfg).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from .contract import CanonicalDocument
from .sniff import xml_root


class CanonicalFormat:
    name = "canonical"
    suffixes = (".xml",)

    def detect(self, head: bytes) -> bool:
        # The root's name only: a Voucher in the wrong namespace, or an invalid one, is still
        # meant as ours, and validation says precisely what is wrong with it.
        return xml_root(head) in ("Voucher", "Vouchers")

    def documents(self, stream: BinaryIO, source: str) -> Iterator[CanonicalDocument]:
        yield CanonicalDocument(stream.read())  # already canonical: the file is the document
