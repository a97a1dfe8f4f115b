"""The README and docs/ agree with the program: the two commands CI runs, the demo's numbers,
and links that lead somewhere."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?!https?://|mailto:)([^)\s]*)\)")


def test_the_readme_keeps_the_two_commands_ci_runs_word_for_word():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert "bash scripts/demo.sh     # sets up .venv and runs `archive-oa demo`" in lines
    assert (
        "bash scripts/test.sh     # sets up .venv-test, runs the test suite on 3.11 and the demo on 3.12 and 3.13"
        in lines
    )


def test_the_readme_names_as_many_demo_vouchers_as_the_bundled_samples_hold():
    samples = importlib.resources.files("archive_oa.samples")
    count = sum(
        len(etree.fromstring(item.read_bytes()).findall("{urn:archive-oa:voucher:1}Voucher"))
        for item in samples.iterdir()
        if item.name.endswith(".xml")
    )
    stated = re.search(r"imports the bundled sample data — (\d+) vouchers", README.read_text(encoding="utf-8"))
    assert stated is not None
    assert int(stated.group(1)) == count


def test_the_readme_tour_writes_the_configuration_file_owner_only():
    text = README.read_text(encoding="utf-8")
    assert "archive-oa config example --write" in text  # 0600 in a 0700 folder: it holds [oa] password
    assert "config example >" not in text and "mkdir -p ~/.archive-oa" not in text


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file_and_heading():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
