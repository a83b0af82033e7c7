"""The architecture as a test: the shared core imports no detector package, and the two
detector packages never import each other (checked on the source, every import statement,
including those inside functions)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("caffe_common", "mtcnn_caffe", "ssd_mobilenet")
FORBIDDEN = {
    "caffe_common": {"mtcnn_caffe", "ssd_mobilenet"},
    "mtcnn_caffe": {"ssd_mobilenet"},
    "ssd_mobilenet": {"mtcnn_caffe"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return found


def test_import_graph_is_layered():
    violations = []
    for top in PACKAGES:
        for path in sorted((REPO / top).rglob("*.py")):
            for name in imported_modules(path):
                if name.split(".")[0] in FORBIDDEN[top]:
                    violations.append(f"{path.relative_to(REPO)} imports {name}")
    assert not violations, "\n".join(violations)


def test_import_graph_checker_sees_relative_and_nested_imports(tmp_path, monkeypatch):
    # The checker must catch what it is meant to catch: an import inside a function, and a
    # relative import resolved against the file's package.
    pkg = tmp_path / "mtcnn_caffe" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    bad = pkg / "mod.py"
    bad.write_text("def f():\n    from ssd_mobilenet.cli import main\nfrom ..detect import cascade\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert imported_modules(bad) == {"ssd_mobilenet.cli", "mtcnn_caffe.detect"}


@pytest.mark.parametrize("name", ["MtcnnDetector", "Face"])
def test_public_names_of_the_readme_still_work(name):
    import mtcnn_caffe

    assert getattr(mtcnn_caffe, name).__module__ == "mtcnn_caffe.detect.cascade"
