"""What docs/architecture.md promises of the code's shape: no module imports from a layer above its
own, not even with a lazy import inside a function (import-linter checks the contract in
pyproject.toml; a package built for the purpose proves it sees lazy imports), and every name the
public API exports says what it is for."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import memaudit

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """import-linter in its own process: it imports the packages it checks from the working dir."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )


def test_memaudit_keeps_its_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_lazy_upward_import_breaks_the_contract(tmp_path):
    package = tmp_path / "layered"
    for layer in ("high", "low"):
        (package / layer).mkdir(parents=True)
        (package / layer / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "low" / "helper.py").write_text(
        textwrap.dedent(
            """
            def late():
                from layered.high import thing  # runs upward, but only when called

                return thing
            """
        )
    )
    (tmp_path / ".importlinter").write_text(
        textwrap.dedent(
            """
            [importlinter]
            root_package = layered

            [importlinter:contract:layers]
            name = layers
            type = layers
            layers =
                layered.high
                layered.low
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = lint_imports(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "layered.low.helper -> layered.high" in result.stdout


def _own_docstring(obj) -> str | None:
    """A class's own docstring (a dataclass without one gets its signature as __doc__), or a function's."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return None if not doc or doc.startswith(f"{obj.__name__}(") else doc


def test_every_name_the_api_exports_has_a_docstring():
    """memaudit.memsinks' own names: tests/test_memsinks_api.py."""
    missing = [n for n in memaudit.__all__ if n != "__version__" and not _own_docstring(getattr(memaudit, n))]
    assert not missing, f"memaudit exports names without a docstring: {missing}"
