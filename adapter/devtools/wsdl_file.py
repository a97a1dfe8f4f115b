"""The checked-in ``wsdl/archive-gateway.wsdl`` (SOAP 1.1) and ``wsdl/archive-gateway-soap12.wsdl``
(SOAP 1.2): how they are made and compared.

Regenerate after changing an operation or a wire type::

    python -m archive_oa.devtools.wsdl_file            # writes both files in wsdl/
    python -m archive_oa.devtools.wsdl_file --check    # exit 1 when one drifted

The file is generated with the public URL ``http://127.0.0.1:8080`` (the default of
``archive-oa serve``); a served WSDL equals it once its ``soap:address`` is normalised.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
from pathlib import Path

from ..gateway.soap import SOAP11, SOAP12
from ..gateway.wsdl import generate_wsdl

FILE_NAME = "archive-gateway.wsdl"
SOAP12_FILE_NAME = "archive-gateway-soap12.wsdl"
#: file name → the SOAP version whose WSDL it holds
VERSIONS = {FILE_NAME: SOAP11, SOAP12_FILE_NAME: SOAP12}
CHECKED_IN_PUBLIC_URL = "http://127.0.0.1:8080"
_ADDRESS = re.compile(rb'(<[A-Za-z0-9_]+:address location=")[^"]*(")')


def checked_in_path(name: str = FILE_NAME) -> Path:
    return Path(str(importlib.resources.files("archive_oa.wsdl") / name))


def expected_wsdl(name: str = FILE_NAME) -> bytes:
    return generate_wsdl(CHECKED_IN_PUBLIC_URL, VERSIONS[name])


def normalise_address(wsdl: bytes, location: str = CHECKED_IN_PUBLIC_URL + "/soap/archive") -> bytes:
    """The WSDL with every ``soap:address`` location replaced, for comparisons."""
    return _ADDRESS.sub(lambda m: m.group(1) + location.encode() + m.group(2), wsdl)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on drift")
    parser.add_argument("--output", type=Path, default=None, help="write into this folder instead of the package's wsdl/")
    args = parser.parse_args(argv)
    drifted = 0
    for name in VERSIONS:
        target = args.output / name if args.output else checked_in_path(name)
        expected = expected_wsdl(name)
        if args.check:
            current = target.read_bytes() if target.is_file() else b""
            if current != expected:
                print(f"{target} drifted from the service: regenerate it", file=sys.stderr)
                drifted = 1
            continue
        target.write_bytes(expected)
        print(f"wrote {target}")
    return drifted


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
