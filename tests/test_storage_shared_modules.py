"""Small shared helpers live in modules of their own, below every layer that uses them: atomic file writes
(app.files), sizes for people (app.units); the default context length is one constant (app.settings)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
MIB = 1024**2


def _imports(module: str) -> dict[str, set[str]]:
    """Which names each file of app/ imports from `module`."""
    found: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == module:
                found.setdefault(str(path.relative_to(APP.parent)), set()).update(a.name for a in node.names)
    return found


def test_the_default_context_length_is_written_once() -> None:
    """8192 was written in four places: the engine's automatic cap, the Hub's fit estimate, the settings'
    default and `hubside show`."""
    from app.runtime.protocol import LoadParams
    from app.settings import DEFAULT_CONTEXT, Settings

    written = [
        f"{path.relative_to(APP.parent)}:{number}"
        for path in APP.rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\b8[_]?192\b", line)  # help texts and comments name the constant too
    ]
    assert len(written) == 1 and written[0].startswith("app/settings.py:"), written
    assert Settings().default_context_length == DEFAULT_CONTEXT == LoadParams(Path("m.gguf")).max_auto_ctx


def test_sizes_and_atomic_writes_come_from_shared_modules(tmp_path: Path) -> None:
    """Downloads, the Hub, the CLI and the window formatted sizes through the memory estimate's module and
    wrote files through the settings' module."""
    from app.files import write_atomic
    from app.units import gb, gb_of

    assert (gb(95 * MIB), gb(3 * 1024**3)) == ("95 MB", "3.0 GB")
    assert gb_of(40 * MIB, 95 * MIB) == "40 of 95 MB"
    (folder := tmp_path / "written").mkdir()
    target = folder / "out.json"
    write_atomic(target, b"{}")
    write_atomic(target, b"[]", durable=False)
    assert target.read_bytes() == b"[]" and [p.name for p in folder.iterdir()] == ["out.json"]
    assert not {name for names in _imports("app.runtime.memory").values() for name in names} & {"gb", "gb_of"}
    assert "write_atomic" not in {name for names in _imports("app.settings").values() for name in names}
