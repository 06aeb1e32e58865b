"""The README and the pages under docs/ link to files that exist, and every page can be reached from the README."""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INDEX = ROOT / "docs" / "index.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", flags=re.S | re.M)
CODE_SPAN = re.compile(r"(`+).+?\1", flags=re.S)
# [text](target) and ![alt](target), with an optional "title"; targets with spaces must use <...>
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(\S+)", flags=re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def link_targets(path: Path) -> list[str]:
    """Every link target of a markdown file, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    targets = [match.group(1).strip("<>") for match in LINK.finditer(text)]
    return targets + REFERENCE.findall(text)


def relative_links(path: Path) -> list[tuple[str, Path]]:
    """(link, the file it points to) for every relative link (not a URL, not an anchor in the same page)."""
    links = []
    for target in link_targets(path):
        if SCHEME.match(target) or target.startswith("#"):
            continue
        file_part = unquote(target.split("#", 1)[0].split("?", 1)[0])
        links.append((target, (path.parent / file_part).resolve()))
    return links


def test_there_are_docs_pages():
    assert INDEX in PAGES
    assert len(PAGES) > 1


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    missing = [target for target, path in relative_links(page) if not path.exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_links_stay_inside_the_repository():
    outside = [
        (str(page.relative_to(ROOT)), target)
        for page in [README, *PAGES]
        for target, path in relative_links(page)
        if not path.is_relative_to(ROOT)
    ]
    assert not outside


def test_every_docs_page_is_reachable_from_the_readme():
    """Following links from README.md (and docs/index.md, which the README links) reaches every page."""
    seen = {README.resolve()}
    todo = [README.resolve()]
    while todo:
        page = todo.pop()
        for _, path in relative_links(page):
            if path.suffix == ".md" and path.is_file() and path not in seen and path.is_relative_to(ROOT / "docs"):
                seen.add(path)
                todo.append(path)
    assert INDEX.resolve() in seen, "README.md does not link docs/index.md"
    unreachable = [str(page.relative_to(ROOT)) for page in PAGES if page.resolve() not in seen]
    assert not unreachable, f"pages no link from README.md or docs/index.md leads to: {unreachable}"


def test_index_lists_every_page():
    listed = {path for _, path in relative_links(INDEX)}
    missing = [str(page.relative_to(ROOT)) for page in PAGES if page != INDEX and page.resolve() not in listed]
    assert not missing, f"docs/index.md does not list: {missing}"
