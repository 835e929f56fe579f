"""The gallery of reproduced results (docs/gallery/) keeps up with the presets (experiments/).

Every preset ``experiments/<name>.toml`` has a page ``docs/gallery/<name>.md`` listed in the
gallery's toctree, which names the preset's command and quotes its current ``claim``. The other
pages are script-backed: ``docs/gallery/<name>.md`` for a script
``docs/gallery/scripts/<name>.py``, which the page names as its command, and every script has its
page. Every gallery page is in the toctree; every image a gallery page shows exists, and every
figure stored there is shown by a page. Nothing is run:
the pages carry the numbers of recorded runs, and these checks only read files (well under a
second), so a preset added, renamed or re-claimed without its page fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
GALLERY = ROOT / "docs" / "gallery"

SCRIPTS = GALLERY / "scripts"

PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("*.toml"))
SCRIPTED = sorted(p.stem for p in SCRIPTS.glob("*.py"))

# ![alt](path) and the path argument of MyST image/figure directives (```{image} path).
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DIRECTIVE_IMAGE = re.compile(r"^(?:```+|:::+)\{(?:image|figure)\}\s+(\S+)", re.MULTILINE)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pages() -> list[Path]:
    return sorted(GALLERY.glob("*.md"))


def _toctree_entries(text: str) -> list[str]:
    """The entries of every ```{toctree} block in a MyST page, options and blank lines left out."""
    entries = []
    for block in re.findall(r"```\{toctree\}(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                entries.append(line)
    return entries


def _quoted_claim(text: str) -> str:
    """The block quote of a page's "## Claim" section, whitespace collapsed."""
    match = re.search(r"^## Claim\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, 'no "## Claim" section'
    lines = [line[1:].strip() for line in match.group(1).splitlines() if line.startswith(">")]
    return " ".join(" ".join(lines).split())


def _images(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return MARKDOWN_IMAGE.findall(text) + DIRECTIVE_IMAGE.findall(text)


def test_there_are_presets_and_a_gallery():
    assert PRESETS, "no preset found in experiments/"
    assert (GALLERY / "index.md").exists()


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_has_a_page_naming_its_command(name):
    page = GALLERY / f"{name}.md"
    assert page.exists(), (
        f"experiments/{name}.toml has no gallery page: write docs/gallery/{name}.md from a fresh "
        f"run (see docs/gallery/index.md) and list it in the gallery's toctree"
    )
    text = page.read_text(encoding="utf-8")
    command = f"sdeopt run experiments/{name}.toml --out"
    assert command in text, f"docs/gallery/{name}.md does not name its command `{command} DIR`"


@pytest.mark.parametrize("name", PRESETS)
def test_every_page_quotes_its_presets_current_claim(name):
    page = GALLERY / f"{name}.md"
    if not page.exists():
        pytest.fail(f"docs/gallery/{name}.md is missing")
    with open(EXPERIMENTS / f"{name}.toml", "rb") as file:
        claim = " ".join(tomllib.load(file)["claim"].split())
    assert _quoted_claim(page.read_text(encoding="utf-8")) == claim, (
        f"the claim of experiments/{name}.toml changed: quote it in docs/gallery/{name}.md, and "
        f"check that the page's numbers still come from a run of this preset"
    )


def test_the_gallery_toctree_lists_exactly_the_presets_and_the_scripted_pages():
    assert not set(PRESETS) & set(SCRIPTED), (
        f"{sorted(set(PRESETS) & set(SCRIPTED))} are both presets and gallery scripts"
    )
    expected = sorted(PRESETS + SCRIPTED)
    entries = _toctree_entries((GALLERY / "index.md").read_text(encoding="utf-8"))
    assert sorted(entries) == expected, (
        f"docs/gallery/index.md's toctree lists {sorted(entries)}, the presets and gallery "
        f"scripts are {expected}"
    )
    pages = sorted(p.stem for p in _pages() if p.stem != "index")
    assert pages == expected, (
        f"gallery pages {pages} do not match the presets {PRESETS} and the gallery scripts "
        f"{SCRIPTED}: a page that is no preset's needs its script docs/gallery/scripts/<name>.py"
    )


@pytest.mark.parametrize("name", SCRIPTED)
def test_every_scripted_page_names_its_script(name):
    page = GALLERY / f"{name}.md"
    assert page.exists(), (
        f"docs/gallery/scripts/{name}.py has no page: write docs/gallery/{name}.md from a run of "
        f"it and list it in the gallery's toctree"
    )
    command = f"python docs/gallery/scripts/{name}.py"
    text = page.read_text(encoding="utf-8")
    assert command in text, f"docs/gallery/{name}.md does not name its command `{command}`"
    assert (ROOT / command.split()[1]).is_file()


def test_the_site_index_lists_the_gallery():
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "gallery/index" in _toctree_entries(text)
    assert "(gallery/index.md)" in text


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_every_image_a_page_shows_exists(page):
    for target in _images(page):
        assert "://" not in target, f"{page.name}: remote image {target}"
        path = (page.parent / target).resolve()
        assert path.is_file(), f"{page.name} shows {target}, which does not exist"
        assert path.is_relative_to(GALLERY / "figures"), (
            f"{page.name}: {target} is outside figures/"
        )
        assert path.read_bytes()[:8] == PNG_MAGIC, f"{page.name}: {target} is not a PNG"


def test_every_stored_figure_is_shown_by_a_page():
    shown = {(page.parent / t).resolve() for page in _pages() for t in _images(page)}
    stored = {p.resolve() for p in (GALLERY / "figures").rglob("*") if p.is_file()}
    orphans = sorted(str(p.relative_to(GALLERY)) for p in stored - shown)
    assert not orphans, f"figures no page shows (delete them or show them): {orphans}"


def test_every_preset_has_its_figures_and_each_is_small():
    for name in PRESETS + SCRIPTED:
        figures = sorted((GALLERY / "figures" / name).glob("*.png"))
        assert figures, f"docs/gallery/figures/{name}/ holds no figure of the run"
    for figure in sorted((GALLERY / "figures").rglob("*.png")):
        size = figure.stat().st_size
        assert size <= 150_000, f"{figure.relative_to(GALLERY)} is {size} bytes: re-save it smaller"
