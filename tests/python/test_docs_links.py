"""Every relative link in the project's markdown resolves inside the repository.

A user who clones the project has only the repository: a link to a file
outside it (../shared/...), to a file that moved, or to a heading that was
renamed is a dead end. Checked: markdown links `[text](target)` outside code
in README.md, docs/*.md and the other documentation files below; a target
must be a path inside the repository that exists, and a `#fragment` must be
the GitHub anchor of a heading in the target file. http(s) and mailto links
are not fetched.
"""
import re
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
               ROOT / "client" / "python" / "README.md", ROOT / "storage" / "FORMAT.md",
               ROOT / "examples" / "bert_tiny" / "README.md", ROOT / "deploy" / "README.md"])

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def links(path):
    """(line number, target) of every markdown link outside code."""
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        # A code span may be a link's text ([`x`](x)) but never holds a link.
        line = CODE_SPAN.sub(lambda m: re.sub(r"[\[\]()]", " ", m.group(0)), line)
        for match in LINK.finditer(line):
            yield number, match.group(2)


def github_anchor(heading):
    """The id GitHub gives a heading: lower case, markup and punctuation
    dropped (hyphens and underscores kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path):
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if ROOT.resolve() not in (dest, *dest.parents):
            problems.append(f"{where}: points outside the repository")
        elif not dest.exists():
            problems.append(f"{where}: {dest.relative_to(ROOT.resolve())} does not exist")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{fragment} in "
                            f"{dest.relative_to(ROOT.resolve())}")
    return problems


def test_anchor_rules_match_github():
    assert github_anchor("Report JSON contract") == "report-json-contract"
    assert github_anchor("`reprodctl` and exit codes") == "reprodctl-and-exit-codes"
    assert github_anchor("Files and formats (.npy, .npz)") == "files-and-formats-npy-npz"
    assert github_anchor("min_steps & co.") == "min_steps--co"


def test_checker_finds_broken_links(tmp_path, monkeypatch):
    """The checker itself fails on each kind of dead link."""
    import test_docs_links as mod

    monkeypatch.setattr(mod, "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Some section\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "[ok](docs/a.md) [ok2](docs/a.md#some-section) [self](#top) [web](https://x.org)\n"
        "`[in code](nowhere.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n"
        "[gone](docs/b.md) [outside](../shared/DESIGN.md) [anchor](docs/a.md#nope)\n"
        "# Top\n")
    problems = mod.broken_links(doc)
    assert len(problems) == 3, problems
    assert "docs/b.md does not exist" in problems[0]
    assert "outside the repository" in problems[1]
    assert "#nope" in problems[2]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert doc.exists(), doc
    assert broken_links(doc) == []
