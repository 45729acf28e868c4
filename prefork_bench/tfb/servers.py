"""Launching a target: prefork's generated config, or uvicorn with the app of ``uvicorn_app``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ..httpbench import LISTEN_BACKLOG
from ..net import HOST, Launch
from ..tools import REPO_ROOT, ensure_uvicorn_venv, repo_env, run_checked
from .model import Target, TargetResult
from .uvicorn_app import UVICORN_APP

def ensure_uvicorn(venv: Path, need_psycopg: bool) -> Path:
    python = ensure_uvicorn_venv(venv)
    if need_psycopg:
        probe = [str(python), "-c", "import psycopg; assert psycopg.pq.__impl__ in ('binary', 'c')"]
        if subprocess.run(probe, capture_output=True).returncode != 0:
            print(f"installing psycopg[binary] into {venv} ...", file=sys.stderr)
            run_checked([str(python), "-m", "pip", "install", "--quiet", "psycopg[binary]"],
                        "pip install psycopg[binary]")
    return python



def prefork_config(port: int, workers: int, db_url: str, synchronous: str, error_log: Path) -> str:
    return ("[server]\n"
            f"workers = {workers}\n"
            "worker_connections = 10000\n"
            "\n[[listen]]\n"
            f'address = "{HOST}:{port}"\n'
            'protocol = "http"\n'
            "\n[http]\n"
            "keepalive_requests = 10000000\n"
            "\n[database]\n"
            f"url = {json.dumps(db_url)}\n"
            f'synchronous = "{synchronous}"\n'
            "\n[log]\n"
            f"error_log = {json.dumps(str(error_log))}\n")


def db_url_for(backend: str, sqlite_path: Path, args: argparse.Namespace) -> str:
    return f"sqlite:///{sqlite_path}" if backend == "sqlite" else args.pg_url


def prepare_target(target: Target, workdir: Path, port: int, args: argparse.Namespace,
                   sqlite_path: Path, result: TargetResult) -> tuple[Launch, list[Path]]:
    """The launch for one target and the log files to read."""
    if target.server == "prefork":
        error_log = workdir / "error.log"
        config = workdir / "prefork.toml"
        result.config = prefork_config(port, args.workers, db_url_for(target.backend, sqlite_path, args),
                                       args.synchronous, error_log)
        config.write_text(result.config)
        return (Launch(argv=[sys.executable, "-m", "prefork.cli", "-c", str(config)],
                       env=repo_env(), cwd=REPO_ROOT, port=port),
                [error_log, workdir / "server.log"])
    python = ensure_uvicorn(args.uvicorn_venv, target.backend == "postgresql")
    (workdir / "app.py").write_text(UVICORN_APP)
    argv = [str(python), "-m", "uvicorn", "app:app", "--app-dir", str(workdir),
            "--host", HOST, "--port", str(port), "--workers", str(args.workers),
            "--loop", "uvloop", "--http", "httptools", "--backlog", str(LISTEN_BACKLOG),
            "--no-access-log", "--log-level", "warning"]
    result.config = " ".join(argv)
    env = dict(os.environ, TFB_DB_KIND=target.backend,
               TFB_DB_URL=str(sqlite_path) if target.backend == "sqlite" else args.pg_url,
               TFB_SQLITE_SYNCHRONOUS=args.synchronous, PYTHONUNBUFFERED="1")
    return Launch(argv=argv, env=env, cwd=workdir, port=port), [workdir / "server.log"]
