"""The contracts and the transform pipeline: schemas, rules, stylesheet, hardened parsing, CLI."""

from __future__ import annotations

import copy
import random
from decimal import Decimal
import threading
from pathlib import Path

import pytest
from lxml import etree

from archive_oa.cli.main import main
from archive_oa.errors import ValidationFailed
from archive_oa import safexml
from archive_oa.safexml import XmlPolicy, make_parser, parse_bytes
from archive_oa.settings import WorkflowSettings
from archive_oa.transforms.pipeline import VOUCHER_NS, WORKFLOW_NS, Transforms, resource_bytes

GOLDEN = Path(__file__).parent / "golden"
V = f"{{{VOUCHER_NS}}}"

#: golden case -> (input voucher, WorkflowSettings overrides, externalKey)
CASES = {
    "basic": ("basic.voucher.xml", {}, "HD01-202609-0101:0123456789abcdef"),
    "full": ("full.voucher.xml", {}, "XB03-202610-0042:fedcba9876543210"),
    "custom": (
        "full.voucher.xml",
        {
            "workflow_code": "EC_PZSP",
            "creator": "fin.robot",
            "title_pattern": "[{orgCode}] {voucherId} ¥{amount} {unknown} {summary} {",
            "level": 2,
            "embed_attachments": False,
            "field_voucher_id": "voucher_id",
            "field_amount": "total_amount",
            "detail_table": "dt_voucher_lines",
            "field_debit": "debit_cny",
        },
        "key-1",
    ),
}


@pytest.fixture(scope="module")
def tx_transforms() -> Transforms:
    return Transforms.from_settings(WorkflowSettings())


@pytest.fixture()
def tx_voucher() -> etree._Element:
    """A fresh, valid voucher tree to break in one place."""
    return parse_bytes((GOLDEN / "full.voucher.xml").read_bytes()).getroot()


def canonical(data: bytes) -> bytes:
    """C14N of the document with indentation whitespace removed."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    return etree.tostring(etree.fromstring(data, parser), method="c14n")


def child(element, *path):
    for name in path:
        element = element.find(V + name)
    return element


def rendered(transforms, case) -> bytes:
    source, overrides, key = CASES[case]
    if overrides:
        transforms = Transforms.from_settings(WorkflowSettings(**overrides))
    return transforms.voucher_to_workflow((GOLDEN / source).read_bytes(), key)


# --- golden files -----------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_workflow_request(tx_transforms, case):
    expected = (GOLDEN / f"{case}.workflow.xml").read_bytes()
    assert canonical(rendered(tx_transforms, case)) == canonical(expected)


def test_total_amount_is_exact_to_the_cent(tx_transforms):
    # 0.1 + 0.2 as binary doubles is 0.30000000000000004: the mapping must say 0.30
    result = etree.fromstring(rendered(tx_transforms, "basic"))
    fields = {f.findtext(f"{{{WORKFLOW_NS}}}name"): f.findtext(f"{{{WORKFLOW_NS}}}value")
              for f in result.iter(f"{{{WORKFLOW_NS}}}field")}
    assert fields["je"] == "0.30"


def test_settings_are_compiled_once(tx_transforms):
    assert Transforms.from_settings(WorkflowSettings()) is tx_transforms
    assert Transforms.from_settings(WorkflowSettings(level=1)) is not tx_transforms


# --- business rules -----------------------------------------------------------------------


def _unbalance(v):
    child(v, "entries")[0].find(V + "debit").text = "12345678901.24"


def _both_sides(v):
    # still balanced (X + 5 = 5 + X), but both lines now carry two sides
    child(v, "entries")[0].find(V + "credit").text = "5.00"
    child(v, "entries")[1].find(V + "debit").text = "5.00"


def _date_outside(v):
    child(v, "date").text = "2026-11-01"


def _fiscal_year(v):
    child(v, "fiscalYear").text = "2025"


def _attachment_count(v):
    child(v, "attachmentCount").text = "1"


def _dot_dot(v):
    child(v, "attachments")[1].find(V + "fileName").text = ".."


@pytest.mark.parametrize(
    "breaks, rule, place",
    [
        (_unbalance, "debit-equals-credit", "/Voucher/entries"),
        (_both_sides, "one-side-per-entry", "/Voucher/entries/entry[1] /Voucher/entries/entry[2]"),
        (_date_outside, "date-in-period", "/Voucher/date"),
        (_fiscal_year, "fiscal-year-matches-period", "/Voucher/fiscalYear"),
        (_attachment_count, "attachment-count", "/Voucher/attachmentCount"),
        (_dot_dot, "plain-file-name", "/Voucher/attachments/attachment[2]/fileName"),
    ],
)
def test_each_business_rule_names_rule_and_place(tx_transforms, tx_voucher, breaks, rule, place):
    breaks(tx_voucher)
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(tx_voucher, source="v.xml")
    assert [(i.rule, i.place) for i in caught.value.issues] == [(rule, p) for p in place.split()]
    issue = caught.value.issues[-1]
    assert issue.line and issue.line > 1 and issue.source == "v.xml"
    assert rule in str(caught.value) and place.split()[-1] in str(caught.value)


def test_entry_with_neither_side_is_refused(tx_transforms, tx_voucher):
    entries = child(tx_voucher, "entries")
    extra = copy.deepcopy(entries[0])
    extra.find(V + "lineNo").text = "3"
    extra.find(V + "debit").text = "0"
    entries.append(extra)
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(tx_voucher)
    assert ("one-side-per-entry", "/Voucher/entries/entry[3]") in [(i.rule, i.place) for i in caught.value.issues]


def test_rules_apply_to_every_voucher_of_a_batch(tx_transforms, tx_voucher):
    batch = etree.Element(V + "Vouchers", nsmap={None: VOUCHER_NS})
    second = copy.deepcopy(tx_voucher)
    child(second, "voucherId").text = "XB03-202610-0043"
    _date_outside(second)
    batch.extend([tx_voucher, second])
    batch = parse_bytes(etree.tostring(batch)).getroot()
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(batch)
    assert [(i.rule, i.place) for i in caught.value.issues] == [("date-in-period", "/Vouchers/Voucher[2]/date")]


def _three_lines(voucher, first_debit: str, second_credit: str, third_debit: str):
    """Lines 1 and 3 debit, line 2 credit (the copy of line 1 keeps its account)."""
    entries = child(voucher, "entries")
    third = copy.deepcopy(entries[0])
    third.find(V + "lineNo").text = "3"
    entries.append(third)
    entries[0].find(V + "debit").text = first_debit
    entries[1].find(V + "credit").text = second_credit
    third.find(V + "debit").text = third_debit


def _doubles_say_balanced(voucher) -> bool:
    """The balance test as XPath doubles would decide it (the rule before it was exact)."""
    return etree.XPath(
        "round(sum(v:entries/v:entry/v:debit) * 100) = round(sum(v:entries/v:entry/v:credit) * 100)",
        namespaces={"v": VOUCHER_NS},
    )(voucher)


def test_large_balanced_voucher_is_accepted(tx_transforms, tx_voucher):
    # 13,265,716,941,952.31 + 989,327,479,395,189.28 = 1,002,593,196,337,141.59 exactly
    _three_lines(tx_voucher, "13265716941952.31", "1002593196337141.59", "989327479395189.28")
    assert not _doubles_say_balanced(tx_voucher)  # what used to refuse it
    tx_transforms.validate_voucher(tx_voucher)
    assert tx_transforms._rules_precheck(tx_voucher) is False
    assert tx_transforms.voucher_to_workflow(tx_voucher, "k").startswith(b"<?xml")


def test_large_voucher_a_cent_off_is_refused(tx_transforms, tx_voucher):
    _three_lines(tx_voucher, "708850725061319.33", "1223039262509557.42", "514188537448238.08")
    assert _doubles_say_balanced(tx_voucher)  # what used to let it through
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(tx_voucher, source="v.xml")
    [issue] = caught.value.issues
    assert (issue.rule, issue.place) == ("debit-equals-credit", "/Voucher/entries")
    assert issue.message.startswith(
        "total debit 1223039262509557.41 differs from total credit 1223039262509557.42 (借贷不平)")


def test_balance_message_keeps_two_decimals(tx_transforms, tx_voucher):
    _three_lines(tx_voucher, "12345678901.2", "12345678902.30", "1.000")
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(tx_voucher)
    assert caught.value.issues[0].message.startswith(
        "total debit 12345678902.20 differs from total credit 12345678902.30")


# --- money in the workflow request ---------------------------------------------------------------

W = f"{{{WORKFLOW_NS}}}"


def _sent(transforms, voucher) -> tuple[str, list[tuple[str, str]]]:
    """(total field je, [(jfje, dfje) of each row]) of the workflow request for ``voucher``."""
    request = etree.fromstring(transforms.voucher_to_workflow(voucher, "k"))

    def fields(parent):
        return {f.findtext(W + "name"): f.findtext(W + "value") for f in parent.findall(W + "field")}

    rows = [fields(row) for row in request.iter(W + "row")]
    return fields(request.find(W + "mainFields"))["je"], [(row["jfje"], row["dfje"]) for row in rows]


def _money_by_doubles(voucher, expression) -> str:
    """What the stylesheet sent before money was exact: format-number over binary doubles."""
    sheet = etree.XSLT(etree.XML(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
        f'xmlns:v="{VOUCHER_NS}"><xsl:template match="/"><r><xsl:value-of '
        f'select="format-number({expression}, \'0.00\')"/></r></xsl:template></xsl:stylesheet>'))
    return sheet(voucher).getroot().text


def test_large_amounts_reach_the_oa_to_the_cent(tx_transforms, tx_voucher):
    _three_lines(tx_voucher, "13265716941952.31", "1002593196337141.59", "989327479395189.28")
    # what format-number sent: ….25 for the line, ….50 for the total
    assert _money_by_doubles(tx_voucher, "v:Voucher/v:entries/v:entry[3]/v:debit") == "989327479395189.25"
    assert _money_by_doubles(tx_voucher, "sum(//v:debit)") == "1002593196337141.50"
    total, rows = _sent(tx_transforms, tx_voucher)
    assert total == "1002593196337141.59"
    assert rows == [("13265716941952.31", "0.00"), ("0.00", "1002593196337141.59"),
                    ("989327479395189.28", "0.00")]


def test_largest_amount_the_schema_allows(tx_transforms, tx_voucher):
    largest = "9999999999999999.99"  # 18 digits; as a double it is 10000000000000000
    entries = child(tx_voucher, "entries")
    entries[0].find(V + "debit").text = largest
    entries[1].find(V + "credit").text = largest
    total, rows = _sent(tx_transforms, tx_voucher)
    assert total == largest and rows == [(largest, "0.00"), ("0.00", largest)]
    assert "9999999999999999.99" in Transforms.from_settings(
        WorkflowSettings(title_pattern="{amount}")).voucher_to_workflow(tx_voucher, "k").decode()


def test_many_small_lines_add_up_exactly(tx_transforms, tx_voucher):
    # 120 debit lines of ~7.8×10^12, each exact as a double, whose double sum loses 8 cents
    amounts = [f"{7_777_777_777_777 + 3_331 * i}.{(17 + 37 * i) % 100:02d}" for i in range(120)]
    entries = child(tx_voucher, "entries")
    template = entries[0]
    for line in list(entries):
        entries.remove(line)
    for number, amount in enumerate(amounts, start=1):
        line = copy.deepcopy(template)
        line.find(V + "lineNo").text = str(number)
        line.find(V + "debit").text = amount
        line.find(V + "credit").text = "0.00"
        entries.append(line)
    exact = sum(Decimal(a) for a in amounts)  # 933333357116639.20
    credit = copy.deepcopy(template)
    credit.find(V + "lineNo").text = str(len(amounts) + 1)
    credit.find(V + "debit").text = "0"
    credit.find(V + "credit").text = f"{exact:.2f}"
    entries.append(credit)
    assert _money_by_doubles(tx_voucher, "sum(//v:debit)") != f"{exact:.2f}"  # doubles get it wrong
    total, rows = _sent(tx_transforms, tx_voucher)
    assert total == f"{exact:.2f}"
    assert [debit for debit, _ in rows[:120]] == amounts


@pytest.mark.parametrize(
    "written, sent",
    [("0", "0.00"), ("0.00", "0.00"), ("-0", "0.00"), ("-0.00", "0.00"), ("+0", "0.00"), (".5", "0.50"),
     ("7.", "7.00"), ("007.50", "7.50"), (" 12.3 ", "12.30"), ("1.500", "1.50"), ("000", "0.00")],
)
def test_every_way_of_writing_an_amount(tx_transforms, tx_voucher, written, sent):
    first, second = child(tx_voucher, "entries")
    if sent == "0.00":  # the empty side of line 1
        first.find(V + "credit").text = written
        assert _sent(tx_transforms, tx_voucher)[1][0] == ("12345678901.23", "0.00")
        return
    first.find(V + "debit").text = second.find(V + "credit").text = written
    assert _sent(tx_transforms, tx_voucher) == (sent, [(sent, "0.00"), ("0.00", sent)])


@pytest.mark.slow
def test_red_ink_amounts_are_refused_by_the_schema(tx_transforms, tx_voucher):
    # voucher.xsd's Amount is at least 0: a red-ink (红字) voucher reverses sides, never the sign
    child(tx_voucher, "entries")[0].find(V + "debit").text = "-12345678901.23"
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(tx_voucher)
    assert [(i.rule, i.place) for i in caught.value.issues] == [("xsd:minInclusive", "/Voucher/entries/entry[1]/debit")]


def test_money_text_equals_format_number_wherever_doubles_are_exact(tx_transforms):
    """Ordinary amounts keep the exact bytes format-number(., '0.00') gave (golden files rely on it)."""
    xsl = "http://www.w3.org/1999/XSL/Transform"
    money = next(t for t in etree.fromstring(resource_bytes("xslt/voucher-to-workflow.xsl")).iterfind(f"{{{xsl}}}template")
                 if t.get("name") == "money")
    sheet = etree.fromstring(
        f'<xsl:stylesheet version="1.0" xmlns:xsl="{xsl}"><xsl:template match="/"><r><xsl:for-each select="//a">'
        "<x><xsl:value-of select=\"format-number(., '0.00')\"/></x><y><xsl:call-template name=\"money\">"
        '<xsl:with-param name="value" select="."/></xsl:call-template></y></xsl:for-each></r></xsl:template>'
        "</xsl:stylesheet>")
    sheet.append(money)
    rng = random.Random(20261201)
    amounts = ["0", "0.01", "0.1", "1", "10", "100.5", "99999999999.99"]
    for _ in range(3000):
        cents = rng.randrange(10 ** rng.randint(1, 15))  # up to 10^13: a double holds it exactly
        amounts += [f"{cents // 100}.{cents % 100:02d}", str(cents // 100), f"{cents / 100:g}" if cents < 10**8 else "1"]
    out = etree.XSLT(sheet)(etree.fromstring("<r>" + "".join(f"<a>{a}</a>" for a in amounts) + "</r>")).getroot()
    pairs = list(zip(out[::2], out[1::2]))
    assert len(pairs) == len(amounts)
    assert [a for a, (x, y) in zip(amounts, pairs) if x.text != y.text] == []


def _lines(voucher, debits: int, amount: str):
    """``debits`` debit lines and as many credit lines, each of ``amount``."""
    entries = child(voucher, "entries")
    template = entries[0]
    for line in list(entries):
        entries.remove(line)
    for number in range(1, 2 * debits + 1):
        line = copy.deepcopy(template)
        line.find(V + "lineNo").text = str(number)
        line.find(V + "debit").text = amount if number <= debits else "0"
        line.find(V + "credit").text = "0" if number <= debits else amount
        entries.append(line)


def test_total_fits_the_archive_column(tx_transforms, tx_voucher):
    # vouchers.total_amount is NUMERIC(20, 2): 18 digits before the point
    _lines(tx_voucher, 100, "9999999999999999.99")
    assert _sent(tx_transforms, tx_voucher)[0] == "999999999999999999.00"
    _lines(tx_voucher, 101, "9999999999999999.99")
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(tx_voucher, source="big.xml")
    [issue] = caught.value.issues
    assert (issue.rule, issue.place) == ("total-fits-archive", "/Voucher/entries")
    assert "1009999999999999998.99" in issue.message
    assert tx_transforms._rules_precheck(tx_voucher)


def test_fast_precheck_agrees_with_schematron(tx_transforms, tx_voucher):
    assert tx_transforms._rules_precheck is not None
    assert not tx_transforms._rules_precheck(tx_voucher)
    for breaks in (_unbalance, _both_sides, _date_outside, _fiscal_year, _attachment_count, _dot_dot):
        broken = copy.deepcopy(tx_voucher)
        breaks(broken)
        assert tx_transforms._rules_precheck(broken), breaks.__name__


# --- schema failures ------------------------------------------------------------------------


def test_xsd_failure_names_line_path_and_constraint(tx_transforms):
    data = (GOLDEN / "basic.voucher.xml").read_bytes()
    data = data.replace(b"<debit>0.20</debit>", b"<debit>0.205</debit>")
    data = data.replace(b"<period>2026-09</period>", b"<period>2026-9</period>")
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(data, source="bad.xml")
    issues = {i.place: i for i in caught.value.issues}
    debit = issues["/Voucher/entries/entry[2]/debit"]
    assert debit.rule == "xsd:fractionDigits" and debit.line == 30 and "0.205" in debit.message
    period = issues["/Voucher/period"]
    assert period.rule == "xsd:pattern" and period.line == 9 and period.source == "bad.xml"


def test_missing_element_points_at_the_unexpected_one(tx_transforms):
    data = (GOLDEN / "basic.voucher.xml").read_bytes().replace(b"<preparer>\xe9\x99\x88\xe9\x9d\x99</preparer>", b"")
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(data)
    issue = caught.value.issues[0]
    assert issue.rule == "xsd:content" and issue.place == "/Voucher/summary" and "preparer" in issue.message


def test_wrong_root_is_refused(tx_transforms):
    with pytest.raises(ValidationFailed) as caught:
        tx_transforms.validate_voucher(b"<Voucher/>")
    assert caught.value.issues[0].rule == "root-element"
    with pytest.raises(ValidationFailed):
        tx_transforms.validate_workflow((GOLDEN / "basic.voucher.xml").read_bytes())


def test_a_batch_is_not_one_workflow_request(tx_transforms, tx_voucher):
    batch = etree.Element(V + "Vouchers", nsmap={None: VOUCHER_NS})
    batch.append(tx_voucher)
    with pytest.raises(ValidationFailed, match="split a Vouchers batch"):
        tx_transforms.voucher_to_workflow(batch, "k")


def test_invalid_stylesheet_output_is_refused(tmp_path, tx_voucher):
    sheet = tmp_path / "broken.xsl"
    sheet.write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        '<xsl:template match="/"><WorkflowRequest xmlns="urn:archive-oa:oa-workflow:1">'
        "<title>no code</title></WorkflowRequest></xsl:template></xsl:stylesheet>",
        encoding="utf-8",
    )
    transforms = Transforms.from_settings(WorkflowSettings(stylesheet=str(sheet)))
    with pytest.raises(ValidationFailed, match="invalid workflow request") as caught:
        transforms.voucher_to_workflow(tx_voucher, "k")
    assert caught.value.issues[0].place.startswith("/WorkflowRequest")


def test_stylesheet_cannot_read_files(tmp_path, tx_voucher):
    secret = tmp_path / "secret.xml"
    secret.write_text("<secret>s3cret</secret>", encoding="utf-8")
    sheet = tmp_path / "reader.xsl"
    sheet.write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        f'<xsl:template match="/"><x><xsl:value-of select="document(\'{secret.as_uri()}\')"/></x>'
        "</xsl:template></xsl:stylesheet>",
        encoding="utf-8",
    )
    transforms = Transforms.from_settings(WorkflowSettings(stylesheet=str(sheet)))
    with pytest.raises(ValidationFailed) as caught:
        transforms.voucher_to_workflow(tx_voucher, "k")
    assert "s3cret" not in str(caught.value)


def test_concurrent_validation_reports_its_own_document(tx_transforms, tx_voucher):
    broken = copy.deepcopy(tx_voucher)
    _date_outside(broken)
    errors = []
    expected = tx_transforms.voucher_to_workflow(tx_voucher, "k")

    def work(doc, valid):
        for _ in range(30):
            if valid and tx_transforms.voucher_to_workflow(doc, "k") != expected:
                errors.append("different output")
            try:
                tx_transforms.validate_voucher(doc)
                ok = True
            except ValidationFailed as exc:
                ok = False
                if [i.rule for i in exc.issues] != ["date-in-period"]:
                    errors.append(exc.issues)
            if ok != valid:
                errors.append(("wrong verdict", valid))

    threads = [threading.Thread(target=work, args=(d, v)) for d, v in [(tx_voucher, True), (broken, False)] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- hardened parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'<?xml version="1.0"?><!DOCTYPE Voucher [<!ENTITY x "boom">]><Voucher>&x;</Voucher>',
        b'<?xml version="1.0"?><!DOCTYPE Voucher SYSTEM "file:///etc/passwd"><Voucher/>',
        b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;&c;&c;&c;</l>',
        b'<!DOCTYPE r [<!ENTITY e SYSTEM "http://127.0.0.1:9/x">]><r>&e;</r>',
    ],
    ids=["internal-entity", "external-dtd", "billion-laughs", "external-entity"],
)
def test_dtds_and_entities_are_refused(payload):
    with pytest.raises(ValidationFailed) as caught:
        parse_bytes(payload, source="evil.xml")
    issue = caught.value.issues[0]
    assert issue.rule == "no-dtd" and issue.source == "evil.xml"
    assert "boom" not in str(caught.value) and "root:" not in str(caught.value)


def test_xinclude_is_refused_not_processed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret", encoding="utf-8")
    data = (
        f'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{secret.as_uri()}" parse="text"/></r>'
    ).encode()
    with pytest.raises(ValidationFailed) as caught:
        parse_bytes(data)
    assert caught.value.issues[0].rule == "no-xinclude" and "s3cret" not in str(caught.value)


def _refusal(data: bytes, policy: XmlPolicy) -> tuple[str, str, int | None] | None:
    try:
        parse_bytes(data, policy=policy)
    except ValidationFailed as exc:
        issue = exc.issues[0]
        return issue.rule, issue.place, issue.line
    return None


SMALL = XmlPolicy(max_depth=4, max_attributes=2, max_text_bytes=40)
# enough elements, attributes and bytes that no bound of the bytes alone clears the document
PADDING = "<p/>" * 10 + "<q a='1' b='2'/>" * 40 + "<t>" + "t" * 9 + "</t>" * 1


@pytest.mark.parametrize(
    "body, refusal",
    [
        ("<a><b><c/></b></a>", None),  # depth 4 with the root: at the limit
        ("<a><b><c><d/></c></b></a>", ("max-depth", "/r/a/b/c/d", 1)),
        ("<a x='1' y='2'/>", None),
        ("<a x='1' y='2' z='3'/>", ("max-attributes", "/r/a", 1)),
        ("<a>" + "x" * 40 + "</a>", None),
        ("<a>" + "x" * 41 + "</a>", ("max-text-bytes", "/r/a", 1)),
        ("<a>" + "账" * 14 + "</a>", ("max-text-bytes", "/r/a", 1)),  # 14 characters, 42 bytes
        ("<a/>" + "x" * 41, ("max-text-bytes", "/r/a", 1)),  # after the element
        ("<a>" + "x" * 20 + "<!-- c -->" + "x" * 21 + "</a>", ("max-text-bytes", "/r/a", 1)),
        ("<a>" + "x" * 20 + "<![CDATA[" + "x" * 21 + "]]></a>", ("max-text-bytes", "/r/a", 1)),
        ("<a xmlns='http://www.w3.org/2001/XInclude'/>", ("no-xinclude", "/r/a", 1)),
        # a namespace name may be written with character references: the tree decides, not the bytes
        ("<a xmlns='http://www.w3.org/2003/XInclud&#101;'/>", ("no-xinclude", "/r/a", 1)),
    ],
)
def test_tree_limits_are_exact(body, refusal):
    for padded in (body, PADDING + body):  # a small document and one no byte bound clears
        assert _refusal(f"<r>{padded}</r>".encode(), SMALL) == refusal, padded


def test_depth_limits_beyond_the_probe_are_walked():
    deep = ("<e>" * 1100 + "</e>" * 1100).encode()
    assert _refusal(deep, XmlPolicy(max_depth=1100)) is None
    assert _refusal(deep, XmlPolicy(max_depth=1099))[0] == "max-depth"


def test_first_offending_place_is_named():
    data = ("<r>" + PADDING + "<a x='1' y='2' z='3'/><b><c><d><e/></d></c></b></r>").encode()
    assert _refusal(data, SMALL) == ("max-attributes", "/r/a", 1)
    assert _refusal(data, XmlPolicy(max_depth=4)) == ("max-depth", "/r/b/c/d/e", 1)


@pytest.mark.parametrize(
    "data, rule",
    [
        (b"<r><?php x?></r>", "no-processing-instruction"),
        (b"<?php x?><r/>", "no-processing-instruction"),
        (b"<r/><?php x?>", "no-processing-instruction"),
        (b"<r xmlns:s='http://www.w3.org/2001/XMLSchema-instance'><a s:schemaLocation='u x.xsd'/></r>",
         "no-schema-location"),
        (b"<r xmlns:s='http://www.w3.org/2001/XMLSchema-instance' s:noNamespaceSchemaLocation='x.xsd'/>",
         "no-schema-location"),
    ],
)
def test_soap_message_rules(data, rule):
    assert _refusal(data, XmlPolicy.soap_message())[0] == rule
    assert _refusal(data, XmlPolicy.documents()) is None  # documents may carry both


def test_cheap_checks_agree_with_the_exact_walk():
    """Random small trees around the limits: parse_bytes refuses exactly what the walk refuses."""
    rng = random.Random(6)
    policies = [SMALL, XmlPolicy(max_depth=6, max_attributes=4, max_text_bytes=200), XmlPolicy.soap_message()]

    def element(depth: int) -> str:
        attributes = "".join(f" a{i}='v'" for i in range(rng.choice([0, 0, 1, 2, 3, 5])))
        text = rng.choice(["", "x" * rng.randint(1, 60), "账" * rng.randint(1, 20)])
        children = [] if depth > rng.randint(1, 8) else [element(depth + 1) for _ in range(rng.randint(0, 3))]
        tail = rng.choice(["", "", "y" * rng.randint(1, 60)])
        extra = rng.choice(["", "", "", "<?pi x?>", "<!--c-->"])
        return f"<e{attributes}>{text}{extra}{''.join(children)}</e>{tail}"

    checked = refused = 0
    for _ in range(300):
        data = f"<r>{element(1)}</r>".encode()
        for policy in policies:
            expected = None
            try:
                safexml._walk_tree(etree.fromstring(data, make_parser(policy)), policy, "document", None)
            except ValidationFailed as exc:
                expected = exc.message
            try:
                parse_bytes(data, policy=policy)
                found = None
            except ValidationFailed as exc:
                found = exc.message
            assert found == expected, (data, policy)
            checked += 1
            refused += expected is not None
    assert 0 < refused < checked  # both outcomes were exercised


def test_syntax_error_names_the_line():
    with pytest.raises(ValidationFailed) as caught:
        parse_bytes(b"<a>\n<b>\n</a>", source="broken.xml")
    issue = caught.value.issues[0]
    assert issue.rule == "xml-syntax" and issue.line == 3 and "broken.xml" in str(caught.value)


def test_empty_document_is_refused():
    with pytest.raises(ValidationFailed, match="empty"):
        parse_bytes(b"  \n")


# --- files and the command line -----------------------------------------------------------------


def test_validate_file_lists_issues(tx_transforms, tmp_path):
    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    good.write_bytes((GOLDEN / "basic.voucher.xml").read_bytes())
    bad.write_bytes(good.read_bytes().replace(b"<date>2026-09-30</date>", b"<date>2026-10-01</date>"))
    assert tx_transforms.validate_file(good) == []
    assert tx_transforms.validate_file(GOLDEN / "basic.workflow.xml") == []
    [issue] = tx_transforms.validate_file(bad)
    assert (issue.rule, issue.place, issue.line, issue.source) == ("date-in-period", "/Voucher/date", 12, str(bad))
    assert tx_transforms.validate_file(good, kind="workflow")[0].rule == "root-element"


def test_cli_validate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHIVE_OA_HOME", str(tmp_path))
    bad = tmp_path / "bad.xml"
    bad.write_bytes((GOLDEN / "basic.voucher.xml").read_bytes().replace(b"<fiscalYear>2026", b"<fiscalYear>2024"))
    assert main(["validate", str(GOLDEN / "basic.voucher.xml"), str(GOLDEN / "full.workflow.xml")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", str(bad), str(GOLDEN / "basic.voucher.xml")]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:8 /Voucher/fiscalYear [fiscal-year-matches-period] fiscalYear 2024" in out
    assert main(["validate", "--kind", "workflow", str(GOLDEN / "basic.voucher.xml")]) == 1


def test_cli_transform_one_voucher(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHIVE_OA_HOME", str(tmp_path))
    source, _, key = CASES["basic"]
    assert main(["transform", str(GOLDEN / source), "--external-key", key]) == 0
    out = capsys.readouterr().out.encode("utf-8")
    assert canonical(out) == canonical((GOLDEN / "basic.workflow.xml").read_bytes())

    target = tmp_path / "out.xml"
    assert main(["transform", str(GOLDEN / source), "-o", str(target), "--pretty"]) == 0
    result = etree.fromstring(target.read_bytes())
    # without --external-key: the key the sync engine would send (voucher id + content hash)
    assert result.findtext(f"{{{WORKFLOW_NS}}}externalKey").startswith("HD01-202609-0101:")


def test_cli_transform_uses_configured_form(tmp_path, capsys):
    (tmp_path / "archive-oa.toml").write_text('[workflow]\nworkflow_code = "EC_PZSP"\nlevel = 1\n', encoding="utf-8")
    assert main(["transform", str(GOLDEN / "basic.voucher.xml"), "--data-dir", str(tmp_path)]) == 0
    result = etree.fromstring(capsys.readouterr().out.encode("utf-8"))
    assert result.findtext(f"{{{WORKFLOW_NS}}}workflowCode") == "EC_PZSP"
    assert result.findtext(f"{{{WORKFLOW_NS}}}level") == "1"


def test_cli_transform_batch_needs_a_folder(tmp_path, capsys, monkeypatch):
    from archive_oa import samples

    monkeypatch.setenv("ARCHIVE_OA_HOME", str(tmp_path))
    batch = samples.sample_files()[0]
    with __import__("importlib").resources.as_file(batch) as path:
        assert main(["transform", str(path)]) == 1
        assert "-o DIR" in capsys.readouterr().err
        assert main(["transform", str(path), "-o", str(tmp_path / "out")]) == 0
    written = sorted((tmp_path / "out").glob("*.workflow.xml"))
    assert len(written) == 42
    assert main(["validate", str(tmp_path / "out")]) == 0


def test_cli_transform_invalid_voucher_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHIVE_OA_HOME", str(tmp_path))
    bad = tmp_path / "bad.xml"
    bad.write_bytes((GOLDEN / "basic.voucher.xml").read_bytes().replace(b"<debit>0.1</debit>", b"<debit>0.2</debit>"))
    assert main(["transform", str(bad)]) == 1
    assert "[debit-equals-credit]" in capsys.readouterr().err
