"""README.md and docs/*.md: every relative link and image points to a file of the repository, every #anchor to a
heading of its target (GitHub's slugs), so moving a section cannot leave a dead link behind."""

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def without_code(text: str) -> str:
    """The markdown text with fenced code blocks and code spans removed (a link there is not a link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, punctuation but '-' and '_' dropped, each space
    a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of a markdown file (a repeated slug gets -1, -2, ...)."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def broken_links(path: Path, root: Path) -> list[str]:
    """One line per relative link or image of `path` whose file is missing (or outside `root`) or whose #anchor is
    no heading of its target."""
    problems = []
    for target in LINK.findall(without_code(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(root) or not resolved.exists():
            problems.append(f"{path.relative_to(root)}: {target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            problems.append(f"{path.relative_to(root)}: {target}: no heading with that anchor")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.name)
def test_every_relative_link_and_anchor_of_the_documentation_resolves(path):
    assert broken_links(path, ROOT) == []


def test_the_readme_links_to_every_docs_file():
    linked = set(re.findall(r"\(docs/([\w.-]+\.md)", without_code((ROOT / "README.md").read_text())))
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= linked


def test_slugs_follow_githubs_rules():
    assert slug("Fast by default: `glioseg predict` against a MONAI baseline") == (
        "fast-by-default-glioseg-predict-against-a-monai-baseline"
    )
    assert slug("Earlier rows of the README's table") == "earlier-rows-of-the-readmes-table"
    assert slug("Accuracy per subset, out-of-fold (issue 24: all 24 cases)") == (
        "accuracy-per-subset-out-of-fold-issue-24-all-24-cases"
    )
    assert slug("missing_modalities 0.5-1") == "missing_modalities-05-1"


def test_a_missing_file_a_wrong_anchor_and_a_link_out_of_the_repository_are_each_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Same\n\n## Same\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/a.md#title) [ok](docs/a.md#same-1) [ok](#top) ![ok](docs/a.md) [web](https://example.org/x)\n"
        "# Top\n\n`[code](nowhere.md)`\n\n```\n[block](nowhere.md)\n```\n\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#same-2) ![out](../outside.png) [self](#nothing)\n"
    )
    (tmp_path.parent / "outside.png").write_bytes(b"")
    assert broken_links(readme, tmp_path) == [
        "README.md: docs/b.md: no such file",
        "README.md: docs/a.md#same-2: no heading with that anchor",
        "README.md: ../outside.png: no such file",
        "README.md: #nothing: no heading with that anchor",
    ]
