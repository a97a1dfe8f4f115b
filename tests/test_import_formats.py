"""Import formats: found through entry points (ours and a third party's alike), chosen by
content under ``--format auto`` or by name, each turned into canonical XML before the same
validation and storage."""

from __future__ import annotations

import codecs
import dataclasses
import json
import sys
import textwrap
from decimal import Decimal
from importlib.metadata import entry_points

import pytest

from archive_oa import voucher_xml
from archive_oa.cli.main import main
from archive_oa.errors import ConfigurationError
from archive_oa.import_formats.registry import GROUP, choose
from archive_oa.samples import samples_dir
from archive_oa.services.bounded_file import TooLarge, open_bounded
from archive_oa.transforms.pipeline import Transforms

# A third party's format as a deployment would ship it: a module and the metadata of its
# installed package (a dist-info folder with entry_points.txt), on sys.path for the test.
ACME_MODULE = '''
import json

from archive_oa.errors import Issue, ValidationFailed
from archive_oa.import_formats.contract import CanonicalDocument


class AcmeFormat:
    """{"acmeVouchers": [canonical voucher XML as a string, ...]}, one voucher per line."""

    name = "acme"
    suffixes = (".json",)

    def detect(self, head):
        return head.lstrip().startswith(b'{"acmeVouchers"')

    def documents(self, stream, source):
        try:
            vouchers = json.load(stream)["acmeVouchers"]
        except ValueError as exc:
            raise ValidationFailed(f"{source}: not acme JSON",
                                   [Issue("/", "acme-json", f"not acme JSON: {exc}", None, source)]) from exc
        for index, xml in enumerate(vouchers, start=1):
            yield CanonicalDocument(xml.encode("utf-8"), place=f"acmeVouchers[{index}]", line=index + 1)
'''


def install_package(folder, name, entry_points_txt, modules=None):
    """An installed distribution ``name`` in ``folder``: its dist-info and its modules."""
    dist_info = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points_txt))
    for module, text in (modules or {}).items():
        (folder / f"{module}.py").write_text(text)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where tests install packages; their modules are forgotten afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("acme"):
            del sys.modules[name]


@pytest.fixture
def acme(site):
    install_package(site, "acme-import-format", """
        [archive_oa.import_formats]
        acme = acme_import_format:AcmeFormat
    """, {"acme_import_format": ACME_MODULE})
    return site


@pytest.fixture(scope="module")
def sample_vouchers():
    """The bundled sample vouchers without attachments."""
    data = (samples_dir() / "HD01-2026-09.xml").read_bytes()
    parsed = voucher_xml.parse_vouchers(data, "HD01-2026-09.xml", Transforms.from_settings())
    return [item.voucher for item in parsed if not item.voucher.attachments]


def acme_file(path, vouchers):
    lines = ",\n".join(json.dumps(voucher_xml.voucher_to_xml(v).decode("utf-8")) for v in vouchers)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"acmeVouchers": [\n' + lines + "\n]}\n")
    return path


def unbalanced(voucher):
    first, second, *rest = voucher.entries
    return dataclasses.replace(voucher, entries=(first, dataclasses.replace(second, credit=second.credit + 1,
                                                                             debit=Decimal("0.00")), *rest))


def run_import(capsys, data_dir, *args):
    code = main(["import", "--json", "--no-queue", "--data-dir", str(data_dir), *map(str, args)])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err


# --- the registry -------------------------------------------------------------------------------


def test_canonical_is_registered_as_an_entry_point_like_any_format_and_listed_first(acme):
    [canonical] = [point for point in entry_points(group=GROUP) if point.name == "canonical"]
    assert canonical.value == "archive_oa.import_formats.canonical:CanonicalFormat"
    assert [fmt.name for fmt in choose("auto").formats] == ["canonical", "acme"]
    assert [fmt.name for fmt in choose("acme").formats] == ["acme"]


def test_an_unknown_format_is_one_error_listing_the_installed_ones(acme, tmp_path, capsys):
    voucher = tmp_path / "v.xml"
    voucher.write_bytes(b"<Voucher/>")
    assert main(["import", "--format", "u8", "--data-dir", str(tmp_path / "data"), str(voucher)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "import format 'u8' is not installed" in err and "auto, canonical, acme" in err
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").glob("*.db")), "refused before the store"


def test_a_format_that_cannot_be_loaded_is_named_and_the_others_still_work(site, tmp_path, capsys, sample_vouchers):
    install_package(site, "acme-broken", """
        [archive_oa.import_formats]
        acme = acme_missing_module:AcmeFormat
    """)
    with pytest.raises(ConfigurationError, match=r"'acme' \(acme_missing_module:AcmeFormat from acme-broken\)"):
        choose("auto")
    path = tmp_path / "v.xml"
    path.write_bytes(voucher_xml.voucher_to_xml(sample_vouchers[0]))
    code, answer, _ = run_import(capsys, tmp_path / "data", "--format", "canonical", path)
    assert code == 0 and answer["created"] == 1


def test_a_format_must_call_itself_by_its_entry_point_name(site):
    install_package(site, "acme-misnamed", """
        [archive_oa.import_formats]
        acme-json = acme_import_format:AcmeFormat
    """, {"acme_import_format": ACME_MODULE})
    with pytest.raises(ConfigurationError, match="calls itself 'acme'"):
        choose("acme-json")


# --- auto: by content, not by name ----------------------------------------------------------


def test_auto_reads_each_file_in_the_format_its_content_is_in(acme, tmp_path, capsys, sample_vouchers):
    folder = tmp_path / "in"
    # the names mislead on purpose: detection goes by content
    acme_file(folder / "export.xml", sample_vouchers[:2])
    (folder / "voucher.json").write_bytes(voucher_xml.voucher_to_xml(sample_vouchers[2]))
    (folder / "notes.txt").write_text("left alone: no format's suffix")

    code, answer, _ = run_import(capsys, tmp_path / "data", folder)
    assert code == 0, answer
    assert (answer["files"], answer["created"], answer["failedFiles"]) == (2, 3, 0)

    code, answer, _ = run_import(capsys, tmp_path / "data", folder)  # the same idempotence for every format
    assert code == 0 and (answer["created"], answer["unchanged"]) == (0, 3)


def test_auto_names_what_it_saw_when_no_format_recognises_a_file(tmp_path, capsys, sample_vouchers):
    files = {
        "invoice.pdf": (b"%PDF-1.4\n% scan\n", "a PDF document"),
        "empty.xml": (b"", "empty"),
        "invoice.xml": (b"<?xml version='1.0'?>\n<!-- <Voucher> -->\n<Invoice/>", "XML whose root element is <Invoice>"),
        "ledger.json": (b'{"ledger": []}', "JSON (or text) starting '{\"ledger\": []}'"),
        "blob.bin": (bytes(range(200, 256)) * 4, "binary data starting c8 c9 ca"),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    code, answer, _ = run_import(capsys, tmp_path / "data", *(tmp_path / name for name in files))
    assert code == 1 and answer["failedFiles"] == len(files)
    for error, (name, (_, seen)) in zip(answer["errors"], files.items()):
        assert error["file"] == str(tmp_path / name) and error["rule"] == "import-format"
        assert seen in error["message"] and "(canonical)" in error["message"], error["message"]


def test_canonical_xml_is_recognised_in_any_encoding_the_importer_reads(tmp_path, capsys, sample_vouchers):
    text = voucher_xml.voucher_to_xml(sample_vouchers[0]).decode("utf-8")
    text = text.replace("?>", "?>\n<!-- exported <today> -->", 1)
    (tmp_path / "utf16.xml").write_bytes(codecs.BOM_UTF16_LE + text.replace("UTF-8", "UTF-16").encode("utf-16-le"))
    code, answer, _ = run_import(capsys, tmp_path / "data", tmp_path / "utf16.xml")
    assert code == 0 and answer["created"] == 1, answer


# --- a named format ---------------------------------------------------------------------------


def test_a_named_format_reads_every_file_without_detection(acme, tmp_path, capsys, sample_vouchers):
    canonical = tmp_path / "v.xml"
    canonical.write_bytes(voucher_xml.voucher_to_xml(sample_vouchers[0]))
    code, answer, _ = run_import(capsys, tmp_path / "data", "--format", "acme", canonical)
    assert code == 1 and [e["rule"] for e in answer["errors"]] == ["acme-json"]
    assert answer["errors"][0]["file"] == str(canonical)

    exported = acme_file(tmp_path / "export.json", sample_vouchers[:1])
    code, answer, _ = run_import(capsys, tmp_path / "data", "--format", "canonical", exported)
    assert code == 1 and answer["errors"][0]["rule"] == "xml-syntax"


def test_a_folder_is_searched_for_the_suffixes_of_the_formats_in_use(acme, tmp_path, capsys, sample_vouchers):
    folder = tmp_path / "in"
    acme_file(folder / "export.json", sample_vouchers[:1])
    code, answer, err = run_import(capsys, tmp_path / "data", "--format", "canonical", folder)
    assert code == 1 and answer["files"] == 0
    assert "import reads *.xml files" in err and str(folder / "export.json") in err

    (folder / "export.json").unlink()
    code, answer, err = run_import(capsys, tmp_path / "data", folder)
    assert "import reads *.xml, *.json files" in err


# --- a converted document: the same validation, errors placed in the input ---------------------


def test_errors_of_a_converted_voucher_name_the_file_and_the_place_and_store_nothing_of_it(
    acme, tmp_path, capsys, sample_vouchers
):
    good, bad = sample_vouchers[:2]
    path = acme_file(tmp_path / "export.json", [good, unbalanced(bad)])
    code, answer, _ = run_import(capsys, tmp_path / "data", path)
    assert code == 1 and (answer["failedFiles"], answer["created"]) == (1, 0)  # all or nothing, as for XML
    assert answer["errors"], answer
    for error in answer["errors"]:
        assert error["file"] == str(path) and error["line"] == 3
        assert error["place"].startswith("acmeVouchers[2] → /Voucher"), error


def test_a_converted_voucher_is_stored_and_queued_like_a_canonical_one(acme, tmp_path, capsys, sample_vouchers):
    data = tmp_path / "data"
    path = acme_file(tmp_path / "export.json", sample_vouchers[:1])
    assert main(["import", "--json", "--data-dir", str(data), str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["queued"] == 1
    (tmp_path / "v.xml").write_bytes(voucher_xml.voucher_to_xml(sample_vouchers[0]))
    code, answer, _ = run_import(capsys, data, tmp_path / "v.xml")
    assert code == 0 and answer["unchanged"] == 1  # the same content, whatever format brought it


# --- the size limit holds for every format's reads --------------------------------------------


def test_a_file_is_refused_before_it_is_read_and_while_it_grows_past_the_limit(tmp_path):
    path = tmp_path / "v.xml"
    path.write_bytes(b"x" * 100)
    with pytest.raises(TooLarge):
        open_bounded(path, 99)
    with open_bounded(path, 100) as stream:
        assert stream.read(10) == b"x" * 10
        stream.seek(0)
        with path.open("ab") as grow:
            grow.write(b"y")
        with pytest.raises(TooLarge):
            stream.read()
