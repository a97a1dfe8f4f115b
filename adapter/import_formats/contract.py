"""What an import format is: the contract every format (ours and a deployment's) meets.

A format only translates.  It recognises its files by their first bytes and turns one file
into canonical voucher XML documents (``transforms/schemas/voucher.xsd``); the importer
then validates those (XSD and Schematron), resolves attachments, stores and queues them
exactly as it does for canonical files.  So a format never decides what is valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

#: How much of a file ``detect`` sees: enough for an XML prolog and root element, a JSON
#: object's first keys or a ZIP header, without reading a large file twice.
HEAD_BYTES = 8192


@dataclass(frozen=True)
class CanonicalDocument:
    """One canonical ``Voucher`` or ``Vouchers`` document made from (part of) an input file."""

    xml: bytes
    #: where in the input file it came from, for error messages: e.g. ``/ufinterface/voucher[3]``,
    #: ``data[2]`` of a JSON file, a member of a zip.  None: the document is the file itself, so
    #: the places and lines validation reports are the file's own.
    place: str | None = None
    line: int | None = None  # the line of ``place`` in the input, when the input has lines


class ImportFormat(Protocol):
    """A format of voucher files that ``archive-oa import`` reads.

    Register a zero-argument callable returning one (a class will do) under the entry-point
    group ``archive_oa.import_formats``, with the format's ``name`` as the entry point's name.
    """

    #: the value of ``--format``; the entry point's name
    name: str
    #: the file name suffixes searched for in folders (``(".xml",)``); a file named on the
    #: command line is read whatever its name
    suffixes: tuple[str, ...]

    def detect(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` (its first ``HEAD_BYTES`` bytes, fewer for a
        short file) is in this format.  Content only: ``--format auto`` takes the first
        installed format that says yes, so say yes only to what is unmistakably yours."""
        ...

    def documents(self, stream: BinaryIO, source: str) -> Iterator[CanonicalDocument]:
        """The canonical documents in one file, lazily: a file may hold many vouchers.

        ``stream`` is the file, binary, seekable, at its start; reading past the import size
        limit raises an exception that must be left to propagate.  Refuse input that cannot be
        converted with ``errors.ValidationFailed`` whose ``Issue``s name ``source`` and the
        place in the file (and its line where there is one).  Attachment content the input
        carries is embedded (``attachment/content``); an attachment given only by ``fileName``
        is looked for beside the input file, as for canonical files.
        """
        ...
