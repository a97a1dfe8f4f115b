"""Which format reads a file: the one named with ``--format``, or (``auto``) the first that knows its content."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Issue, ValidationFailed
from .contract import ImportFormat
from .sniff import describe

AUTO = "auto"


@dataclass(frozen=True)
class FormatChoice:
    """The formats an import may use: one named format, or every installed one in order (auto)."""

    formats: tuple[ImportFormat, ...]
    auto: bool

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The file name suffixes a folder is searched for, in the formats' order."""
        return tuple(dict.fromkeys(suffix for fmt in self.formats for suffix in fmt.suffixes))

    def format_for(self, head: bytes, source: str) -> ImportFormat:
        """The format that reads the file ``source`` starting with ``head``.

        A named format is used as told (its conversion says what does not fit); auto asks
        each format in order, so the first installed format that recognises the content wins.
        """
        if not self.auto:
            return self.formats[0]
        for fmt in self.formats:
            if fmt.detect(head):
                return fmt
        names = ", ".join(fmt.name for fmt in self.formats)
        message = (f"{source} is in no import format installed here ({names}): it holds {describe(head)}; "
                   "import files in one of these formats, or install the package of the format it is in")
        raise ValidationFailed(f"{source}: unknown format", [Issue("/", "import-format", message, None, source)])
