"""The voucher XML codec and the bundled sample data."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections import Counter
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest

from archive_oa import samples
from archive_oa.domain.model import (
    Approval,
    ArchiveInfo,
    Entry,
    Retention,
    WorkflowInfo,
    WorkflowState,
)
from archive_oa.errors import ValidationFailed
from archive_oa.samples.generate import generate
from archive_oa.store import tables
from archive_oa.settings import WorkflowSettings
from archive_oa.transforms.pipeline import Transforms
from archive_oa.voucher_xml import (
    amount_text,
    canonical_hash,
    parse_vouchers,
    voucher_to_xml,
    vouchers_to_xml,
)

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def tx_transforms() -> Transforms:
    return Transforms.from_settings(WorkflowSettings())


@pytest.fixture(scope="module")
def tx_samples(tx_transforms):
    """Every sample batch: (file name, parsed vouchers)."""
    return [(f.name, parse_vouchers(f.read_bytes(), f.name, tx_transforms)) for f in samples.sample_files()]


@pytest.fixture()
def tx_full(tx_transforms):
    [parsed] = parse_vouchers((GOLDEN / "full.voucher.xml").read_bytes(), "full.voucher.xml", tx_transforms)
    return parsed


# --- decoding ------------------------------------------------------------------------------


def test_parse_reads_every_part(tx_full):
    voucher = tx_full.voucher
    assert (voucher.voucher_id, voucher.voucher_word, voucher.voucher_no) == ("XB03-202610-0042", "收", 12)
    assert voucher.date == dt.date(2026, 10, 31) and voucher.summary is None
    first, second = voucher.entries
    assert first.debit == Decimal("12345678901.23") and first.credit == Decimal("0.00")
    assert (first.currency, first.exchange_rate, first.original_amount) == (
        "USD", Decimal("7.1235"), Decimal("1733098182.24"))
    assert [(a.type, a.code, a.name) for a in second.auxiliary] == [
        ("customer", "C9001", "Pacific Components Ltd."), ("project", "P2026-01", "智能产线改造项目")]
    assert second.summary == "冲销应收账款 & 手续费 <测试>"
    assert tx_full.embedded == {"XB03-202610-0042-A1": b"hello world"}
    assert voucher.attachments[1].invoice_number == "26442000000012345678"
    assert voucher.archive.retention is Retention.Y30
    assert voucher.archive.archived_at == dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert voucher.workflow.state is WorkflowState.REJECTED
    assert voucher.workflow.approvals[0].comment == "金额超过审批权限"
    assert tx_full.line == 4


def test_missing_currency_defaults_to_cny(tx_transforms):
    [parsed] = parse_vouchers((GOLDEN / "basic.voucher.xml").read_bytes(), "basic", tx_transforms)
    assert parsed.voucher.currency == "CNY"
    assert parsed.voucher.total_amount == Decimal("0.30")


def test_parse_refuses_invalid_documents(tx_transforms):
    data = (GOLDEN / "basic.voucher.xml").read_bytes().replace(b"<credit>0.30</credit>", b"<credit>0.31</credit>")
    with pytest.raises(ValidationFailed) as caught:
        parse_vouchers(data, "basic.xml", tx_transforms)
    assert caught.value.issues[0].rule == "debit-equals-credit"


def test_embedded_content_must_match_size_and_sha256(tx_transforms):
    data = (GOLDEN / "full.voucher.xml").read_bytes().replace(b"aGVsbG8gd29ybGQ=", b"aGVsbG8gd29ybGQh")
    with pytest.raises(ValidationFailed) as caught:
        parse_vouchers(data, "full.xml", tx_transforms)
    [issue] = caught.value.issues
    assert issue.rule == "attachment-integrity"
    assert issue.place == "/Voucher/attachments/attachment[1]/content" and issue.line and issue.source == "full.xml"


def test_attachment_ids_are_unique_across_a_batch(tx_transforms, tx_full):
    other = dataclasses.replace(tx_full.voucher, voucher_id="XB03-202610-0043")
    data = vouchers_to_xml([tx_full.voucher, other])
    with pytest.raises(ValidationFailed) as caught:
        parse_vouchers(data, "batch.xml", tx_transforms)
    assert {i.rule for i in caught.value.issues} == {"unique-attachment-id"}


# --- encoding ------------------------------------------------------------------------------


def test_round_trip_keeps_every_part_and_embedded_bytes(tx_transforms, tx_full):
    data = voucher_to_xml(tx_full.voucher, tx_full.embedded)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    tx_transforms.validate_voucher(data)
    [again] = parse_vouchers(data, "again", tx_transforms)
    assert again.voucher == tx_full.voucher and again.embedded == tx_full.embedded


def test_round_trip_of_every_sample_file(tx_transforms, tx_samples):
    for name, parsed in tx_samples:
        vouchers = [p.voucher for p in parsed]
        embedded = {k: v for p in parsed for k, v in p.embedded.items()}
        again = parse_vouchers(vouchers_to_xml(vouchers, embedded), name, tx_transforms)
        assert [p.voucher for p in again] == vouchers, name
        assert {k: v for p in again for k, v in p.embedded.items()} == embedded
        for item in parsed:
            single = parse_vouchers(voucher_to_xml(item.voucher, item.embedded), name, tx_transforms)
            assert single[0].voucher == item.voucher


def test_workflow_and_archive_parts_can_be_left_out(tx_transforms, tx_full):
    data = voucher_to_xml(tx_full.voucher, include_workflow=False, include_archive=False)
    tx_transforms.validate_voucher(data)
    [parsed] = parse_vouchers(data, "x", tx_transforms)
    assert parsed.voucher.workflow is None and parsed.voucher.archive is None and parsed.embedded == {}


def test_encoding_writes_a_full_workflow_trail_valid_against_the_schema(tx_transforms, tx_full):
    when = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.timezone.utc)
    voucher = dataclasses.replace(
        tx_full.voucher,
        archive=ArchiveInfo(),
        workflow=WorkflowInfo(
            WorkflowState.APPROVED, "77", when,
            (Approval(1, "王经理", "APPROVE", None, when), Approval(2, "李总", "APPROVE", "", when)),
        ),
    )
    data = voucher_to_xml(voucher)
    tx_transforms.validate_voucher(data)
    [parsed] = parse_vouchers(data, "x", tx_transforms)
    assert parsed.voucher == voucher


def test_amounts_are_exact_decimals():
    assert amount_text(Decimal("5")) == "5.00"
    assert amount_text(Decimal("0.1")) == "0.10"
    assert amount_text(Decimal("1234567890123456.78")) == "1234567890123456.78"
    assert amount_text(Decimal("1.230")) == "1.23"
    assert amount_text(Decimal("1.234")) == "1.234"  # never rounded: the schema refuses it visibly
    with pytest.raises(TypeError):
        amount_text(0.1)


def test_float_amounts_never_reach_the_xml(tx_full):
    entry = dataclasses.replace(tx_full.voucher.entries[0], debit=0.1)
    voucher = dataclasses.replace(tx_full.voucher, entries=(entry,) + tx_full.voucher.entries[1:])
    with pytest.raises(TypeError, match="Decimal"):
        voucher_to_xml(voucher)


def test_unroundable_amount_fails_validation_not_silently(tx_transforms, tx_full):
    entries = tuple(dataclasses.replace(e, debit=e.debit + Decimal("0.001")) if e.debit else e
                    for e in tx_full.voucher.entries)
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(voucher_to_xml(dataclasses.replace(tx_full.voucher, entries=entries)))
    assert caught.value.issues[0].rule == "xsd:fractionDigits"


def test_large_balanced_amounts_round_trip(tx_transforms, tx_full):
    # Near the schema's 18 digits binary doubles lose cents; the balance rule adds in Decimal.
    first, second = tx_full.voucher.entries
    entries = (
        dataclasses.replace(first, debit=Decimal("631062541129422.24")),
        dataclasses.replace(second, credit=Decimal("1345603319700624.64")),
        dataclasses.replace(first, line_no=3, debit=Decimal("714540778571202.40")),
    )
    voucher = dataclasses.replace(tx_full.voucher, entries=entries)
    [parsed] = parse_vouchers(voucher_to_xml(voucher, tx_full.embedded), "big.xml", tx_transforms)
    assert parsed.voucher == voucher and parsed.voucher.total_amount == Decimal("1345603319700624.64")


@pytest.mark.parametrize("length, valid", [(100, True), (101, False)])
def test_mime_type_fits_the_archive_column(tx_transforms, tx_full, length, valid):
    # attachments.mime_type is VARCHAR(100): a longer one must fail validation, not the INSERT
    mime_type = "application/" + "x" * (length - len("application/"))
    first, *rest = tx_full.voucher.attachments
    voucher = dataclasses.replace(
        tx_full.voucher, attachments=(dataclasses.replace(first, mime_type=mime_type), *rest))
    data = voucher_to_xml(voucher, tx_full.embedded)
    if valid:
        [parsed] = parse_vouchers(data, "mime.xml", tx_transforms)
        assert parsed.voucher.attachments[0].mime_type == mime_type
        return
    with pytest.raises(ValidationFailed) as caught:
        parse_vouchers(data, "mime.xml", tx_transforms)
    [issue] = caught.value.issues
    assert (issue.rule, issue.place) == ("xsd:maxLength", "/Voucher/attachments/attachment[1]/mimeType")


#: Every text the import stores in a sized column: (element, column, text at the limit, one over).
#: An over-long value must fail validation naming the element, never the INSERT (PostgreSQL
#: raises DataError for a VARCHAR overflow; SQLite stores it silently).
COLUMN_LIMITS = [
    ("archive/archivalCode", "vouchers.archival_code", "档" * 100, "档" * 101),
    ("workflow/approvals/approval/action", "approvals.action", "A" * 32, "A" * 33),
    # kept as Decimal text, trailing zeros included: String(40)
    ("entries/entry/originalAmount", "entries.original_amount", "1." + "0" * 37, "1." + "0" * 38),
    ("entries/entry/exchangeRate", "entries.exchange_rate", "7." + "0" * 37, "7." + "0" * 38),
    ("attachments/attachment[2]/size", "attachments.size", str(2**63 - 1), str(2**63)),
]
_LIMIT_RULES = {"size": "xsd:maxInclusive", "originalAmount": "xsd:pattern", "exchangeRate": "xsd:pattern"}


@pytest.mark.parametrize("element, column, at_limit, over", COLUMN_LIMITS, ids=[c[1] for c in COLUMN_LIMITS])
def test_stored_values_fit_their_columns(tx_transforms, element, column, at_limit, over):
    from lxml import etree  # the codec tests otherwise never touch trees

    def with_text(text: str) -> bytes:
        root = etree.fromstring((GOLDEN / "full.voucher.xml").read_bytes())
        root.find("v:" + element.replace("/", "/v:"), {"v": "urn:archive-oa:voucher:1"}).text = text
        return etree.tostring(root)

    table, name = column.split(".")
    width = tables.metadata.tables[table].c[name].type
    stored_width = getattr(width, "length", None) or getattr(getattr(width, "impl", None), "length", None)
    [parsed] = parse_vouchers(with_text(at_limit), "limit.xml", tx_transforms)  # accepted at the limit
    if stored_width:  # the text the store would write fits the column
        assert len(_stored_text(parsed.voucher, element)) <= stored_width
    with pytest.raises(ValidationFailed) as caught:
        parse_vouchers(with_text(over), "over.xml", tx_transforms)
    [issue] = caught.value.issues
    leaf = element.rsplit("/", 1)[-1]
    assert issue.rule == _LIMIT_RULES.get(leaf, "xsd:maxLength")
    assert issue.place.endswith("/" + leaf.split("[")[0]) and issue.source == "over.xml"


def _stored_text(voucher, element: str) -> str:
    """The text the store writes for ``element`` of ``voucher`` (the columns' own conversions)."""
    leaf = element.rsplit("/", 1)[-1]
    if leaf == "archivalCode":
        return voucher.archive.archival_code
    if leaf == "action":
        return voucher.workflow.approvals[0].action
    if leaf == "originalAmount":
        return str(voucher.entries[0].original_amount)
    if leaf == "exchangeRate":
        return str(voucher.entries[0].exchange_rate)
    return str(voucher.attachments[1].size)


def test_every_schema_length_fits_its_column():
    """voucher.xsd's length limits against the columns the import writes (a wider column is fine)."""
    import xmlschema

    xsd = resources.files("archive_oa.transforms").joinpath("schemas/voucher.xsd").read_text("utf-8")
    schema = xmlschema.XMLSchema(xsd, allow="none")
    column_of = {
        "voucherId": "vouchers.voucher_id", "orgCode": "vouchers.org_code", "orgName": "vouchers.org_name",
        "fondsCode": "vouchers.fonds_code", "period": "vouchers.period", "voucherWord": "vouchers.voucher_word",
        "currency": "vouchers.currency", "preparer": "vouchers.preparer", "reviewer": "vouchers.reviewer",
        "bookkeeper": "vouchers.bookkeeper", "cashier": "vouchers.cashier", "oaRequestId": "vouchers.oa_request_id",
        "archivalCode": "vouchers.archival_code", "accountName": "entries.account_name",
        "attachmentId": "attachments.attachment_id", "fileName": "attachments.file_name",
        "mimeType": "attachments.mime_type", "invoiceNumber": "attachments.invoice_number",
        "approver": "approvals.approver", "action": "approvals.action",
    }
    bounded_by_pattern = {"voucherId", "period", "currency", "fileName", "attachmentId"}
    checked = set()
    for element in schema.iter_components(xmlschema.XsdElement):
        if element.local_name not in column_of or not element.type.is_simple():
            continue
        limit = element.type.max_length
        if limit is None:  # bounded by a pattern: [A-Za-z0-9._-]{1,64}, YYYY-MM, [A-Z]{3}, {1,200}
            assert element.local_name in bounded_by_pattern, element.local_name
            continue
        table, name = column_of[element.local_name].split(".")
        width = tables.metadata.tables[table].c[name].type.length
        assert limit <= width, f"{element.local_name}: maxLength {limit}, column {table}.{name} {width}"
        checked.add(element.local_name)
    assert checked == set(column_of) - bounded_by_pattern


# --- content identity ----------------------------------------------------------------------------


def test_canonical_hash_ignores_state_and_formatting(tx_full):
    voucher = tx_full.voucher
    digest = canonical_hash(voucher)
    assert len(digest) == 64 and digest == canonical_hash(voucher)
    assert canonical_hash(dataclasses.replace(voucher, workflow=None, archive=None)) == digest
    same_amount = dataclasses.replace(voucher.entries[0], debit=Decimal("12345678901.230"))
    assert canonical_hash(dataclasses.replace(voucher, entries=(same_amount,) + voucher.entries[1:])) == digest


@pytest.mark.parametrize(
    "change",
    [
        lambda v: dataclasses.replace(v, summary="改了摘要"),
        lambda v: dataclasses.replace(v, attachment_count=4),
        lambda v: dataclasses.replace(
            v, entries=(dataclasses.replace(v.entries[0], account_code="1002.01"),) + v.entries[1:]),
        lambda v: dataclasses.replace(
            v, attachments=(dataclasses.replace(v.attachments[0], sha256="1" * 64),) + v.attachments[1:]),
    ],
    ids=["summary", "attachment-count", "account", "attachment-content"],
)
def test_canonical_hash_changes_with_content(tx_full, change):
    assert canonical_hash(change(tx_full.voucher)) != canonical_hash(tx_full.voucher)


def test_entry_defaults_round_trip(tx_transforms, tx_full):
    plain = Entry(1, "摘要", "1001", "库存现金", debit=Decimal("10"))
    other = Entry(2, "摘要", "1002", "银行存款", credit=Decimal("10"))
    voucher = dataclasses.replace(tx_full.voucher, entries=(plain, other), attachments=(), attachment_count=0)
    [parsed] = parse_vouchers(voucher_to_xml(voucher), "x", tx_transforms)
    assert parsed.voucher.entries == (plain, other)


# --- sample data ---------------------------------------------------------------------------------


def test_sample_files_are_valid(tx_transforms):
    files = samples.sample_files()
    assert len(files) == 6
    for entry in files:
        with resources.as_file(entry) as path:
            assert tx_transforms.validate_file(path) == [], entry.name


def test_samples_cover_what_the_demo_needs(tx_samples):
    vouchers = [p.voucher for _, parsed in tx_samples for p in parsed]
    assert len(vouchers) >= 240
    assert len({v.voucher_id for v in vouchers}) == len(vouchers)
    assert {v.org_code for v in vouchers} == {"HD01", "HN02", "XB03"}
    assert {v.period for v in vouchers} == {"2026-09", "2026-10"}
    large = sum(v.total_amount > Decimal("50000.00") for v in vouchers)
    assert 0.10 <= large / len(vouchers) <= 0.15
    assert sum(any(e.account_code == "6603" for e in v.entries) for v in vouchers) >= 10
    assert all(2 <= len(v.entries) <= 10 for v in vouchers)
    assert any(len(v.entries) >= 8 for v in vouchers)
    assert sum(any(e.auxiliary for e in v.entries) for v in vouchers) > len(vouchers) // 3
    with_files = sum(bool(v.attachments) for v in vouchers)
    assert 0.10 <= with_files / len(vouchers) <= 0.20
    assert sum(bool(p.embedded) for _, parsed in tx_samples for p in parsed) == 2
    words = Counter(v.voucher_word for v in vouchers)
    assert set(words) == {"记", "收", "付", "转"}


def test_sample_attachment_files_match_their_metadata(tx_samples):
    folder = samples.attachments_dir()
    referenced = set()
    for _, parsed in tx_samples:
        for item in parsed:
            for meta in item.voucher.attachments:
                if meta.attachment_id in item.embedded:
                    content = item.embedded[meta.attachment_id]
                else:
                    content = folder.joinpath(meta.file_name).read_bytes()
                    referenced.add(meta.file_name)
                assert len(content) == meta.size and hashlib.sha256(content).hexdigest() == meta.sha256
                assert 100 <= meta.size <= 8192
    assert referenced == {entry.name for entry in folder.iterdir()}


def test_generator_reproduces_the_committed_samples(tmp_path):
    written = generate(tmp_path)
    committed = {entry.name: entry.read_bytes() for entry in samples.sample_files()}
    assert {path.name: path.read_bytes() for path in written} == committed
    for path in (tmp_path / "attachments").iterdir():
        assert path.read_bytes() == samples.attachments_dir().joinpath(path.name).read_bytes()


def test_token_fields_are_read_collapsed_as_the_schema_measures_them(tx_transforms):
    """xs:token collapses XML whitespace before its length is checked: the codec must store
    that collapsed value, or 64 characters that pass the schema become 104 in a VARCHAR(64)."""
    from lxml import etree

    ns = {"v": "urn:archive-oa:voucher:1"}
    root = etree.fromstring((GOLDEN / "full.voucher.xml").read_bytes())
    padded = {
        "orgCode": "XB" + " " * 50 + "\t\n  03",
        "preparer": "王\u3000 \n 小明",  # U+3000 is content, not XML whitespace
        "workflow/v:approvals/v:approval/v:action": "  APPROVE \n  AGAIN ",
    }
    for path, text in padded.items():
        root.find("v:" + path, ns).text = text
    [parsed] = parse_vouchers(etree.tostring(root), "padded.xml", tx_transforms)
    voucher = parsed.voucher
    assert voucher.org_code == "XB 03"
    assert voucher.preparer == "王\u3000 小明"
    assert voucher.workflow.approvals[0].action == "APPROVE AGAIN"
    # the same voucher written without the padding is the same content
    root.find("v:orgCode", ns).text = "XB 03"
    [plain] = parse_vouchers(etree.tostring(root), "plain.xml", tx_transforms)
    assert plain.voucher.org_code == voucher.org_code
