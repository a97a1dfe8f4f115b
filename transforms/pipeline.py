"""Validate → transform → validate, compiled once per process.

The hot path is lxml only: the XSD check yields a yes/no, the business rules run as the
XSLT that ISO Schematron compiles to, the mapping is one XSLT.  Only when a document is
invalid do we spend time on a good report: xmlschema re-validates to name each failing
element path (lxml's own log says ``/*/*[11]``), and each failed Schematron assert is
resolved to its element to get path and line.

Objects here are shared between threads: every call works on its own result trees and
never reads a validator's shared error log on the hot path.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import threading
from importlib import resources
from pathlib import Path
from typing import Union

from lxml import etree, isoschematron

from ..errors import ConfigurationError, Issue, ValidationFailed
from ..safexml import parse_bytes
from ..settings import WorkflowSettings
from .fast_rules import compile_precheck
from .rule_functions import EXTENSIONS as RULE_FUNCTIONS

VOUCHER_NS = "urn:archive-oa:voucher:1"
WORKFLOW_NS = "urn:archive-oa:oa-workflow:1"
_SVRL = {"svrl": "http://purl.oclc.org/dsdl/svrl"}

Document = Union[bytes, etree._Element, etree._ElementTree]


def resource_bytes(name: str) -> bytes:
    """A file shipped in this package, e.g. ``schemas/voucher.xsd``."""
    return resources.files(__package__).joinpath(name).read_bytes()


def element_path(element: etree._Element) -> str:
    """``/Voucher/entries/entry[2]/debit``: local names, an index only where siblings share it."""
    steps = []
    node = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [child for child in parent if child.tag == node.tag]
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        steps.append(name)
        node = parent
    return "/" + "/".join(reversed(steps))


def _root(doc: Document, source: str | None) -> etree._Element:
    if isinstance(doc, (bytes, bytearray, memoryview)):
        return parse_bytes(bytes(doc), source=source).getroot()
    if isinstance(doc, etree._ElementTree):
        return doc.getroot()
    return doc


class Transforms:
    """The compiled schemas, rules and stylesheet, with the parameters from settings.

    Build it with :meth:`from_settings` (cached: one compile per distinct settings).
    """

    def __init__(self, workflow: WorkflowSettings) -> None:
        self.workflow = workflow
        self._voucher_xsd_bytes = resource_bytes("schemas/voucher.xsd")
        self._workflow_xsd_bytes = resource_bytes("schemas/oa-workflow.xsd")
        self._voucher_xsd = etree.XMLSchema(parse_bytes(self._voucher_xsd_bytes, source="voucher.xsd"))
        self._workflow_xsd = etree.XMLSchema(parse_bytes(self._workflow_xsd_bytes, source="oa-workflow.xsd"))
        rules_doc = parse_bytes(resource_bytes("rules/voucher-rules.sch"), source="voucher-rules.sch")
        rules = isoschematron.Schematron(rules_doc, store_xslt=True)
        self._rules_precheck = compile_precheck(rules_doc, RULE_FUNCTIONS)
        # Run the compiled rules ourselves: Schematron objects keep the last report on
        # themselves, which threads would overwrite.
        self._rules = etree.XSLT(
            rules.validator_xslt, access_control=etree.XSLTAccessControl.DENY_ALL, extensions=RULE_FUNCTIONS
        )
        self._failed_asserts = etree.XPath("//svrl:failed-assert", namespaces=_SVRL)
        self._stylesheet_name, stylesheet = self._load_stylesheet(workflow.stylesheet)
        try:
            # The rules' exact-money functions: the built-in stylesheet totals with arc:exact-sum.
            self._stylesheet = etree.XSLT(
                stylesheet, access_control=etree.XSLTAccessControl.DENY_ALL, extensions=RULE_FUNCTIONS
            )
        except etree.XSLTParseError as exc:
            raise ConfigurationError(
                f"stylesheet {self._stylesheet_name} does not compile: {exc}; fix [workflow] stylesheet"
            ) from exc
        self._params = _stylesheet_params(workflow)
        self._slow_schemas: dict[str, object] = {}
        self._slow_lock = threading.Lock()

    @classmethod
    def from_settings(cls, workflow: WorkflowSettings | None = None) -> "Transforms":
        return _cached(workflow or WorkflowSettings())

    load = from_settings

    # --- validation -------------------------------------------------------------

    def validate_voucher(self, doc: Document, *, source: str | None = None) -> None:
        """Raise ``ValidationFailed`` unless ``doc`` (a Voucher or Vouchers) passes XSD and rules."""
        root = _root(doc, source)
        if root.tag not in (f"{{{VOUCHER_NS}}}Voucher", f"{{{VOUCHER_NS}}}Vouchers"):
            raise _wrong_root(root, "Voucher or Vouchers", VOUCHER_NS, source)
        if not self._voucher_xsd.validate(root):
            issues = self._xsd_issues("voucher", self._voucher_xsd_bytes, self._voucher_xsd, root, source)
            raise ValidationFailed(_summary(source, "is not a valid voucher document", issues), issues)
        if self._rules_precheck is not None and not self._rules_precheck(root):
            return
        failed = self._failed_asserts(self._rules(root))
        if failed:
            issues = [_rule_issue(root, node, source) for node in failed]
            raise ValidationFailed(_summary(source, "breaks voucher business rules", issues), issues)

    def validate_workflow(self, doc: Document, *, source: str | None = None) -> None:
        root = _root(doc, source)
        if root.tag != f"{{{WORKFLOW_NS}}}WorkflowRequest":
            raise _wrong_root(root, "WorkflowRequest", WORKFLOW_NS, source)
        if not self._workflow_xsd.validate(root):
            issues = self._xsd_issues("workflow", self._workflow_xsd_bytes, self._workflow_xsd, root, source)
            raise ValidationFailed(_summary(source, "is not a valid workflow request", issues), issues)

    # --- the transform ------------------------------------------------------------

    def voucher_to_workflow(self, voucher_doc: Document, external_key: str, *, source: str | None = None) -> bytes:
        """One canonical Voucher → the OA WorkflowRequest (UTF-8 bytes), both sides validated."""
        root = _root(voucher_doc, source)
        if root.tag != f"{{{VOUCHER_NS}}}Voucher":
            raise _wrong_root(root, "Voucher (one voucher; split a Vouchers batch)", VOUCHER_NS, source)
        self.validate_voucher(root, source=source)
        return self._render(root, external_key, source)

    def _render(self, root: etree._Element, external_key: str, source: str | None) -> bytes:
        """A validated Voucher element → the WorkflowRequest bytes, the output validated."""
        try:
            result = self._stylesheet(root, external_key=etree.XSLT.strparam(external_key), **self._params)
        except etree.XSLTApplyError as exc:
            raise ValidationFailed(
                f"stylesheet {self._stylesheet_name} failed on {source or 'the voucher'}: {exc}",
                [Issue("/", "xslt", f"{exc}; check the stylesheet and its parameters", None, source)],
            ) from exc
        if result.getroot() is None:
            raise ValidationFailed(
                f"stylesheet {self._stylesheet_name} produced no document",
                [Issue("/", "xslt", "the stylesheet output is empty; check its root template", None, source)],
            )
        try:
            self.validate_workflow(result, source=f"{self._stylesheet_name} output")
        except ValidationFailed as exc:
            raise ValidationFailed(
                f"stylesheet {self._stylesheet_name} produced an invalid workflow request for "
                f"{source or 'the voucher'}; fix the stylesheet or the [workflow] settings",
                exc.issues,
            ) from exc
        return etree.tostring(result, encoding="UTF-8", xml_declaration=True)

    # --- files --------------------------------------------------------------------

    def validate_file(self, path: str | Path, kind: str = "auto") -> list[Issue]:
        """Every failing place of one file (empty when valid).  ``kind``: voucher, workflow, auto."""
        source = str(path)
        try:
            root = parse_bytes(Path(path).read_bytes(), source=source).getroot()
            if kind == "auto":
                kind = "workflow" if etree.QName(root).namespace == WORKFLOW_NS else "voucher"
            if kind == "workflow":
                self.validate_workflow(root, source=source)
            elif kind == "voucher":
                self.validate_voucher(root, source=source)
            else:
                raise ValueError(f"kind must be voucher, workflow or auto, not {kind!r}")
        except ValidationFailed as exc:
            return list(exc.issues) or [Issue("/", "invalid", exc.message, None, source)]
        return []

    def transform_file(self, path: str | Path, external_key: str | None = None) -> list[tuple[str, bytes]]:
        """Each voucher of a file as (voucherId, workflow request bytes).

        Without ``external_key`` each request carries the key the sync engine would send
        (voucher id + content hash), so the output matches a real delivery.
        """
        from ..voucher_xml import element_idempotency_key  # the codec imports this module

        source = str(path)
        root = parse_bytes(Path(path).read_bytes(), source=source).getroot()
        self.validate_voucher(root, source=source)  # the whole file, once: each voucher is valid
        vouchers = [root] if root.tag == f"{{{VOUCHER_NS}}}Voucher" else list(root)
        results = []
        for element in vouchers:
            key = external_key or element_idempotency_key(element)
            voucher_id = element.findtext(f"{{{VOUCHER_NS}}}voucherId")
            results.append((voucher_id, self._render(element, key, source)))
        return results

    # --- the slow, precise report -------------------------------------------------------

    def _xsd_issues(self, kind, xsd_bytes, lxml_schema, root, source) -> list[Issue]:
        issues = []
        try:
            schema = self._slow_schema(kind, xsd_bytes)
            # Never follow xsi:schemaLocation hints of the document (xmlschema's default
            # has changed between versions: said here, not assumed).
            errors = schema.iter_errors(root, use_location_hints=False)
            issues = [_xmlschema_issue(error, root, source) for error in errors]
        except Exception:  # noqa: BLE001 - the report must not hide the failure itself
            issues = []
        if issues:
            return issues
        # xmlschema saw nothing lxml did (or broke): report lxml's own words.
        lxml_schema.validate(root)
        return [
            Issue(entry.path or "/", f"xsd:{entry.type_name}", entry.message, entry.line or None, source)
            for entry in lxml_schema.error_log
        ] or [Issue("/", "xsd", "the document does not match its schema", None, source)]

    def _slow_schema(self, kind, xsd_bytes):
        with self._slow_lock:
            if kind not in self._slow_schemas:
                import xmlschema  # only on the failure path

                # Our own XSDs import nothing: no resource may be fetched while building them.
                self._slow_schemas[kind] = xmlschema.XMLSchema(xsd_bytes.decode("utf-8"), allow="none", defuse="always")
            return self._slow_schemas[kind]

    @staticmethod
    def _load_stylesheet(configured: str) -> tuple[str, etree._ElementTree]:
        if not configured:
            return "voucher-to-workflow.xsl", parse_bytes(
                resource_bytes("xslt/voucher-to-workflow.xsl"), source="voucher-to-workflow.xsl"
            )
        path = Path(configured).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"[workflow] stylesheet {path} cannot be read: {exc.strerror}") from exc
        return str(path), parse_bytes(data, source=str(path))


@functools.lru_cache(maxsize=8)
def _cached(workflow: WorkflowSettings) -> Transforms:
    return Transforms(workflow)


def _stylesheet_params(workflow: WorkflowSettings) -> dict[str, object]:
    """Every WorkflowSettings key but ``stylesheet`` becomes an xsl:param of the same name."""
    params = {}
    for f in dataclasses.fields(workflow):
        if f.name == "stylesheet":
            continue
        value = getattr(workflow, f.name)
        if isinstance(value, bool):
            params[f.name] = "true()" if value else "false()"
        elif isinstance(value, int):
            params[f.name] = str(value)
        else:
            params[f.name] = etree.XSLT.strparam(str(value))
    return params


def _summary(source: str | None, what: str, issues: list[Issue]) -> str:
    first = issues[0] if issues else None
    head = f"{source or 'document'} {what}"
    if first:
        head += f": {first.place} [{first.rule}] {first.message}"
        if len(issues) > 1:
            head += f" (and {len(issues) - 1} more)"
    return head


def _wrong_root(root, expected: str, namespace: str, source: str | None) -> ValidationFailed:
    found = etree.QName(root)
    message = (
        f"root element is {{{found.namespace or ''}}}{found.localname}; expected {expected} "
        f"in namespace {namespace}"
    )
    return ValidationFailed(
        f"{source or 'document'}: {message}",
        [Issue("/" + found.localname, "root-element", message, root.sourceline, source)],
    )


def _rule_issue(root: etree._Element, failed: etree._Element, source: str | None) -> Issue:
    rule = failed.get("id") or failed.get("test") or "rule"
    if root.getparent() is not None:
        # the rules ran on this element as a document of its own: locate in a copy like it
        root = copy.deepcopy(root)
    message = " ".join("".join(failed.itertext()).split())
    place, line = "/", None
    location = failed.get("location")
    if location:
        try:
            found = root.getroottree().xpath(location)
        except etree.XPathError:
            found = []
        if found and isinstance(found[0], etree._Element):
            place, line = element_path(found[0]), found[0].sourceline
        else:
            place = location
    return Issue(place, rule, message, line, source)


def _xmlschema_issue(error, root: etree._Element, source: str | None) -> Issue:
    element = error.elem if isinstance(getattr(error, "elem", None), etree._Element) else None
    index = getattr(error, "index", None)
    reason = (error.reason or error.message or "invalid").rstrip(". ")
    # callers know the elements by local name: drop the namespace noise
    for namespace, prefix in ((VOUCHER_NS, "v:"), (WORKFLOW_NS, "w:")):
        reason = reason.replace(f"{{{namespace}}}", "").replace(f"'{prefix}", "'")
    if element is not None and isinstance(index, int) and 0 <= index < len(element):
        element = element[index]  # point at the unexpected child, not its parent
    elif element is not None and isinstance(index, int) and index >= len(element):
        reason = f"{reason} (missing at the end of {etree.QName(element).localname})"
    place = element_path(element) if element is not None else (error.path or "/")
    line = element.sourceline if element is not None else getattr(error, "sourceline", None)
    message = reason
    if element is not None and len(element) == 0 and element.text is not None:
        message = f"{etree.QName(element).localname} = {element.text!r}: {reason}"
    return Issue(place, _xsd_rule(error), message + "; see the schema for what is allowed", line, source)


def _xsd_rule(error) -> str:
    validator = error.validator
    kind = type(validator).__name__
    if kind.startswith("XsdAtomic") or "Decode" in type(error).__name__:
        return "xsd:type"
    if kind == "XsdGroup":
        return "xsd:content"
    if "duplicated value" in (error.reason or ""):
        return "xsd:unique"
    elem = getattr(validator, "elem", None)
    if elem is not None and isinstance(elem.tag, str):
        return "xsd:" + etree.QName(elem.tag).localname
    return "xsd"
