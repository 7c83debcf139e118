"""The import contract (pyproject.toml, [tool.importlinter]) holds over the real import graph.

import-linter reads every import of ``mqttbroker`` -- under ``TYPE_CHECKING`` and inside
functions too -- and checks that arrows point down the layers, that no circle forms at any
depth, and that ``protocol/`` stays sans-I/O. A new upward import or circle fails here, in
``make test``, with the import's file and line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contract_is_kept() -> None:
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_the_contract_sees_imports_under_type_checking_and_in_functions(
        tmp_path: Path) -> None:
    """The contract is not blind to the imports the old circle hid behind: a lower module
    importing a higher one under TYPE_CHECKING or inside a function breaks it."""
    pkg = tmp_path / "mqttbroker"
    for src in (ROOT / "mqttbroker").rglob("*.py"):
        dest = pkg / src.relative_to(ROOT / "mqttbroker")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    for module, addition in (
            ("session.py", "\nif False:  # TYPE_CHECKING-style\n    from .broker import Broker\n"),
            ("retained.py", "\ndef _late() -> None:\n    from .client import ClientConnection\n"),
            ("protocol/codec.py", "\ndef _late() -> None:\n    import asyncio\n")):
        path = pkg / module
        original = path.read_text()
        path.write_text(original + addition)
        done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False,
                              env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
        path.write_text(original)
        assert done.returncode != 0, f"{module}: {done.stdout}{done.stderr}"
        assert "BROKEN" in done.stdout, done.stdout
