"""The compiled hot path (setup.py, prefork/_compiled.py): PREFORK_PURE=1 runs the
sources, a stale extension is not used, ``--version`` says which runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefork import _compiled

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, pure: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PREFORK_PURE"}
    if pure:
        env["PREFORK_PURE"] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()


def _built() -> bool:
    return all(_compiled._fresh(name) for name in _compiled.HOT)


@pytest.fixture
def built():
    if not _built():
        if os.environ.get("PREFORK_REQUIRE_COMPILED"):
            pytest.fail("PREFORK_REQUIRE_COMPILED is set but the hot-path extensions are not built")
        pytest.skip("the hot-path extensions are not built here (no Cython or C compiler at install)")


def test_prefork_pure_runs_every_hot_module_from_its_source(built):
    code = ("import importlib; from prefork import _compiled\n"
            "print(' '.join(importlib.import_module(n).__file__ for n in _compiled.HOT))")
    assert all(f.endswith(".py") for f in _run(code, pure=True).split())
    assert all(not f.endswith(".py") for f in _run(code, pure=False).split())


def test_version_says_which_hot_path_runs(built):
    code = "import sys; sys.argv = ['prefork-server', '--version']; from prefork.cli import main; main()"
    assert "compiled (Cython: %d hot-path modules)" % len(_compiled.HOT) in _run(code, pure=False)
    assert "pure Python (PREFORK_PURE is set)" in _run(code, pure=True)


def test_a_stale_extension_loses_to_its_source(monkeypatch):
    finder = _compiled.SourceFirst(pure=False)
    monkeypatch.setattr(_compiled, "_fresh", lambda name: False)  # an edited source, an old build
    spec = finder.find_spec("prefork.reactor")
    assert spec is not None and spec.origin.endswith(os.path.join("prefork", "reactor.py"))
    monkeypatch.setattr(_compiled, "_fresh", lambda name: True)
    assert finder.find_spec("prefork.reactor") is None  # the normal finders load the extension
    assert finder.find_spec("prefork.config") is None  # not a hot module: never this finder's


def test_pure_finds_the_source_even_when_built():
    spec = _compiled.SourceFirst(pure=True).find_spec("prefork.protocols.http")
    assert spec is not None and spec.origin.endswith(os.path.join("protocols", "http.py"))


def test_every_hot_module_has_a_source():
    for name in _compiled.HOT:
        assert Path(_compiled._paths(name)[0]).is_file(), name
