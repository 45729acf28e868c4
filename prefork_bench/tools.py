"""The programs the benchmarks drive, installed when missing: wrk, nginx, taskset
(apt-get), uvicorn (pip, into a venv of the bench's own).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds the prefork package


DEFAULT_VENV = (REPO_ROOT / "bench" / ".venv-uvicorn" if (REPO_ROOT / "bench").is_dir()
                else Path.home() / ".cache" / "prefork-bench" / "venv-uvicorn")


UVICORN_PACKAGES = ("uvicorn", "uvloop", "httptools", "orjson")  # orjson: bench/tfb.py's app


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


def ensure_uvicorn_venv(venv: Path) -> Path:
    """Create the uvicorn venv and install its packages when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating venv {venv} ...", file=sys.stderr)
        run_checked([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    probe = [str(python), "-c", "import " + ", ".join(UVICORN_PACKAGES)]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        print(f"installing {' '.join(UVICORN_PACKAGES)} into {venv} ...", file=sys.stderr)
        run_checked([str(python), "-m", "pip", "install", "--quiet", *UVICORN_PACKAGES],
                    "pip install")
    return python


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
