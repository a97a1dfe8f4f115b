"""``archive-oa validate`` and ``archive-oa transform``: the transforms on files.

What the sync engine does to a voucher, an integration engineer can do to a file:
check it against the contracts, or see the exact OA request it would become.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import Issue, ValidationFailed
from .common import add_common, settings_from


def register(subparsers) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="check voucher or workflow XML files against the schemas and business rules",
        description=(
            "Validate canonical voucher XML (voucher.xsd + business rules) or OA workflow requests "
            "(oa-workflow.xsd). Prints every failing place as FILE:LINE PATH [RULE] MESSAGE; "
            "exits 1 when any file is invalid."
        ),
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="XML file, or a folder of *.xml")
    validate.add_argument(
        "--kind",
        choices=("voucher", "workflow", "auto"),
        default="auto",
        help="what the files are (default auto: by the root element's namespace)",
    )
    add_common(validate)
    validate.set_defaults(func=run_validate)

    transform = subparsers.add_parser(
        "transform",
        help="turn a voucher XML file into the OA workflow request the adapter would send",
        description=(
            "Validate a voucher file, apply the configured stylesheet with the [workflow] settings, "
            "validate the result. A Vouchers batch needs -o DIR (one request file per voucher)."
        ),
    )
    transform.add_argument("file", metavar="FILE", help="voucher XML (a Voucher, or a Vouchers batch with -o DIR)")
    transform.add_argument("-o", "--output", metavar="OUT", help="output file, or folder for a batch (default: stdout)")
    transform.add_argument(
        "--external-key",
        metavar="K",
        help="externalKey to put in the request (default: the key the sync engine would send)",
    )
    transform.add_argument("--pretty", action="store_true", help="indent the output for reading")
    add_common(transform)
    transform.set_defaults(func=run_transform)


def issue_line(issue: Issue) -> str:
    where = issue.source or "-"
    if issue.line:
        where += f":{issue.line}"
    return f"{where} {issue.place} [{issue.rule}] {issue.message}"


def _expand(names: list[str]) -> list[Path]:
    paths = []
    for name in names:
        path = Path(name)
        paths.extend(sorted(path.glob("*.xml")) if path.is_dir() else [path])
    return paths


def _transforms(args):
    from ..transforms.pipeline import Transforms

    return Transforms.from_settings(settings_from(args).workflow)


def run_validate(args: argparse.Namespace) -> int:
    transforms = _transforms(args)
    invalid = 0
    for path in _expand(args.files):
        if not path.is_file():
            print(f"{path} - [file] no such file; check the path", file=sys.stderr)
            invalid += 1
            continue
        issues = transforms.validate_file(path, kind=args.kind)
        if issues:
            invalid += 1
            for issue in issues:
                print(issue_line(issue))
        else:
            print(f"{path}: valid")
    return 1 if invalid else 0


def run_transform(args: argparse.Namespace) -> int:
    from lxml import etree

    transforms = _transforms(args)
    try:
        results = transforms.transform_file(args.file, external_key=args.external_key)
    except ValidationFailed as exc:
        print(exc.message, file=sys.stderr)
        for issue in exc.issues:
            print(issue_line(issue), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.file}: cannot read ({exc.strerror}); check the path", file=sys.stderr)
        return 1

    def render(data: bytes) -> bytes:
        if not args.pretty:
            return data
        root = etree.fromstring(data)
        etree.indent(root, space="  ")
        return etree.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"

    if len(results) == 1 and not (args.output and Path(args.output).is_dir()):
        data = render(results[0][1])
        if args.output:
            Path(args.output).write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return 0
    if not args.output:
        print(
            f"{args.file} holds {len(results)} vouchers: give -o DIR to write one request per voucher",
            file=sys.stderr,
        )
        return 1
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    for voucher_id, data in results:
        target = folder / f"{voucher_id}.workflow.xml"
        target.write_bytes(render(data))
        print(target)
    return 0
