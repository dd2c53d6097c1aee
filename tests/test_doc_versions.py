"""Every package version the docs state matches the tested install: ``constraints.txt``, and for torch and
torchvision (installed first, outside the constraints) the default pair of ``scripts/install.sh``.

Read from the text, not from a list of known mentions: any ``name==X.Y.Z`` or ``name X.Y.Z`` whose name is a pinned
package is compared, and any ``name>=…,<…`` range must admit the pinned version. A mention of another version on
purpose (a clash table naming the release pip must not take) is listed below with its reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.specifiers import InvalidSpecifier, SpecifierSet

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# (file, package, version) -> why the text names a version that is not installed
ON_PURPOSE = {
    ("lmms_eval.md", "latex2sympy2", "1.9.1"): "the newest latex2sympy2, which pins antlr4 4.7.2: the clash described",
    ("README.md", "torch", "2.9.1"): "the aarch64 TORCH_SPEC override",
    ("README.md", "torchvision", "0.24.1"): "the aarch64 TORCH_SPEC override",
}
_EXACT = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*?)(?:==| )(\d+\.\d+\.\d+(?:\.post\d+)?)(?![\w.])")
_RANGE = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*?)((?:[<>=!~]=?\s*\d[\w.]*\s*,?\s*)+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    torch = re.search(r"TORCH_SPEC:-([^}]+)\}", (REPO / "scripts" / "install.sh").read_text(encoding="utf-8"))
    assert torch, "scripts/install.sh: the default TORCH_SPEC pair moved; update this test"
    for pin in torch.group(1).split():
        name, version = pin.split("==")
        pins[_norm(name)] = version
    return pins


def _is_range(text: str) -> bool:
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        return False
    return True


def _mentions() -> list[tuple[str, int, str, str, str]]:
    """(file, line, package, 'exact' or 'range', version or specifier) for every pinned package the docs name."""
    pins, found = _pins(), []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in _EXACT.finditer(line):
                if _norm(m.group(1)) in pins:
                    found.append((path.name, number, m.group(1), "exact", m.group(2)))
            for m in _RANGE.finditer(line):
                spec = m.group(2).replace(" ", "").rstrip(",")
                if _norm(m.group(1)) in pins and not spec.startswith("==") and _is_range(spec):
                    found.append((path.name, number, m.group(1), "range", spec))
    return found


def test_the_docs_name_the_pins_at_all() -> None:
    """The scan sees the versions it is meant to compare (a regex that matched nothing would pass anything)."""
    named = {(f, _norm(p)) for f, _, p, _, _ in _mentions()}
    assert {("lmms_eval.md", "transformers"), ("install.md", "ms-vlmeval"), ("README.md", "transformers")} <= named


@pytest.mark.parametrize("mention", _mentions(), ids=lambda m: f"{m[0]}:{m[1]}:{m[2]}")
def test_every_version_in_the_docs_is_the_tested_one(mention: tuple[str, int, str, str, str]) -> None:
    file, line, package, kind, text = mention
    pinned = _pins()[_norm(package)]
    if kind == "exact":
        if (file, _norm(package), text) in {(f, _norm(p), v) for f, p, v in ON_PURPOSE}:
            return
        assert text == pinned, f"{file}:{line}: {package} {text}, but the tested install has {package}=={pinned}"
        return
    assert SpecifierSet(text).contains(pinned), f"{file}:{line}: {package}{text} excludes the tested {pinned}"
