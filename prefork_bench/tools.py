"""The programs the benchmarks drive, installed when missing: wrk, nginx, taskset
(apt-get), uvicorn (pip, into a venv of the bench's own), and for ``bench/asgi.py``
uvicorn, granian, hypercorn, FastAPI and Starlette beside prefork's own dependencies
(pip, into a venv of the bench's own unless this Python has them all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds the prefork package


def _venv_path(name: str) -> Path:
    return (REPO_ROOT / "bench" / f".venv-{name}" if (REPO_ROOT / "bench").is_dir()
            else Path.home() / ".cache" / "prefork-bench" / f"venv-{name}")


DEFAULT_VENV = _venv_path("uvicorn")
ASGI_VENV = _venv_path("asgi")


UVICORN_PACKAGES = ("uvicorn", "uvloop", "httptools", "orjson")  # orjson: bench/tfb.py's app
# bench/asgi.py: every server runs the same app module from one Python, prefork too
# (so its own dependencies are there: httptools, setproctitle, orjson, uvloop)
ASGI_PACKAGES = ("uvicorn", "granian", "hypercorn", "fastapi", "starlette", "uvloop", "httptools",
                 "setproctitle", "orjson")


class BenchError(Exception):
    """A server or tool could not be prepared, started or measured."""


def find_program(name: str) -> str | None:
    """Find a program on PATH or in the sbin directories (nginx lives there)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def apt_install(package: str) -> None:
    """apt-get install a package; refresh the package lists only if that fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "--no-install-recommends", package]
    print(f"installing {package} with apt-get ...", file=sys.stderr)
    if subprocess.run(command, env=env).returncode == 0:
        return
    subprocess.run(["apt-get", "update"], env=env)
    if subprocess.run(command, env=env).returncode != 0:
        raise BenchError(f"apt-get install {package} failed")


def ensure_program(name: str, package: str) -> str:
    path = find_program(name)
    if path is None:
        apt_install(package)
        path = find_program(name)
    if path is None:
        raise BenchError(f"{name} not found even after installing {package}")
    return path


def has_modules(python: str | Path, modules: tuple[str, ...]) -> bool:
    """Whether ``python`` can import every one of ``modules``."""
    probe = [str(python), "-c", "import " + ", ".join(modules)]
    return subprocess.run(probe, capture_output=True).returncode == 0


def ensure_venv(venv: Path, packages: tuple[str, ...]) -> Path:
    """Create a venv and pip-install ``packages`` (each also its module's name)
    into it when missing; returns its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating venv {venv} ...", file=sys.stderr)
        run_checked([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    if not has_modules(python, packages):
        print(f"installing {' '.join(packages)} into {venv} ...", file=sys.stderr)
        run_checked([str(python), "-m", "pip", "install", "--quiet", *packages], "pip install")
    return python


def ensure_uvicorn_venv(venv: Path) -> Path:
    """Create the uvicorn venv and install its packages when missing."""
    return ensure_venv(venv, UVICORN_PACKAGES)


def ensure_asgi_python(venv: Path) -> Path:
    """A Python with every server and framework of bench/asgi.py: this one when
    it has them all, else ``venv`` (created and filled when missing)."""
    if has_modules(sys.executable, ASGI_PACKAGES):
        return Path(sys.executable)
    return ensure_venv(venv, ASGI_PACKAGES)


def repo_env() -> dict[str, str]:
    """This process's environment with REPO_ROOT first on PYTHONPATH: a child started
    with it imports this checkout's prefork and prefork_bench."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=pythonpath)


def run_checked(argv: list[str], what: str) -> None:
    if subprocess.run(argv).returncode != 0:
        raise BenchError(f"{what} failed: {' '.join(argv)}")


def pin(cpus: str, argv: list[str], enabled: bool) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if enabled else argv
