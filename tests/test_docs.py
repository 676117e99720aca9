"""The docs stand alone: every file they name or link to is in the repository.

README.md and docs/*.md are read as a user reads them on a fresh clone; a reference to a
file that is not in the repository (a note kept elsewhere, a renamed script) fails here.
Names of files that keras-sep commands write (run folders, reports, exports) are listed
in ``WRITTEN``: they exist only after a command ran.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A file name: a word, a dot, one of these extensions (what the repository holds).
NAME = re.compile(r"[\w.~<>/-]*\w\.(?:md|py|sh|yaml|yml|toml|png|txt|cfg|ini)\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Files that keras-sep commands write into their output folders.
WRITTEN = {
    "report.md",
    "history.png",
    "bars.png",  # keras-sep study
    "curves.png",
    "spectrograms.png",
    "sdr_boxplot.png",
    "sdr_per_track.png",
    "setup.yaml",
    "train_config.yaml",
    "my_study.yaml",  # the user's own study spec, in an example
    "notes.txt",  # a file given as --out, in an example error
}


def tracked() -> set[str]:
    """The repository's files: committed, and new ones not ignored (a change under way)."""
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def missing_names(doc: Path, files: set[str]) -> list[str]:
    """The file names and links in ``doc`` that do not exist in the repository."""
    text = doc.read_text()
    names = {Path(f).name for f in files}
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(f"link {target}")
    for match in NAME.finditer(LINK.sub("]()", text)):  # links are checked above
        name = match.group(0).rstrip(".")
        if name.startswith(("http", "www.")) or "<" in name or name.startswith("~"):
            continue
        base = Path(name).name
        if base in WRITTEN:
            continue
        if "/" in name:
            # A path from the root, from the page, or inside a package (data/cache.py).
            tail = "/" + name.lstrip("./")
            if (doc.parent / name).exists() or any(("/" + f).endswith(tail) for f in files):
                continue
        elif base in names:
            continue
        missing.append(name)
    # The folder of notes beside the repository that the project was built from.
    missing += [m.group(0) for m in re.finditer(r"(?<![\w/.-])shared/\S*", text)]
    return sorted(set(missing))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_files_in_the_repository(doc):
    assert missing_names(doc, tracked()) == []


def test_the_check_catches_a_file_outside_the_repository(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(
        "Measured (FACTS.md); see [the spec](../SPEC.md), shared/tools and `tools/synth_stems.py`; "
        "`training/train.py` and `keras_sep/data/cache.py` exist.\n"
    )
    found = missing_names(doc, tracked())
    assert found == ["FACTS.md", "link ../SPEC.md", "shared/tools", "tools/synth_stems.py"]


def test_every_folder_the_readme_writes_is_git_ignored():
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    commands = [line for block in blocks for line in block.splitlines()]
    outs = {m.group(1) for line in commands for m in re.finditer(r"(?:-o|--out) (\S+)", line)}
    outs |= {"demo_output/", "separated/"}  # the defaults of demo and separate
    assert {"report_tiny/", "artifacts_tiny/", "studies/fig3a"} <= outs
    check = subprocess.run(
        ["git", "check-ignore", "--no-index", *sorted(outs)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    ignored = set(check.stdout.split())
    assert sorted(outs - ignored) == []
