"""Pytest fixtures for the loopback Hub (``tests/hub_server.py``). ``tests/conftest.py`` imports the fixtures,
so every test module sees them.

``huggingface_hub`` and ``transformers`` read ``HF_ENDPOINT`` once at import time and the test session runs with
``HF_HUB_OFFLINE=1`` (which blocks localhost too), so the code that pushes and downloads runs in a subprocess with
its own environment: ``HF_ENDPOINT`` = the server, ``HF_TOKEN`` = the server's token, a fresh ``HF_HOME``,
``HF_HUB_DISABLE_XET=1`` unless ``xet=True``, no ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, and the repository
and ``tests/`` on ``PYTHONPATH`` (a script imports ``helpers`` as the tests do).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from hub_server import HubServer

HUB_TOKEN = "hf_trl_ext_test_token"
REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@pytest.fixture
def hub_server():
    """A running :class:`HubServer` (git-LFS uploads, token :data:`HUB_TOKEN`), stopped after the test."""
    with HubServer(token=HUB_TOKEN, lfs=True) as server:
        yield server


@pytest.fixture
def hub_server_factory():
    """``make(**kwargs) -> HubServer`` (started; all stopped after the test), e.g. ``make(lfs=False)`` for Xet."""
    servers: list[HubServer] = []

    def make(**kwargs) -> HubServer:
        kwargs.setdefault("token", HUB_TOKEN)
        server = HubServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def hub_env(server: HubServer, hf_home: Path, *, xet: bool = False, token: str | None = HUB_TOKEN) -> dict[str, str]:
    """Environment of a subprocess that talks to ``server`` with the real ``huggingface_hub`` client."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_XET", "HF_TOKEN", "HF_ENDPOINT")}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(SCRIPTS.parent), env.get("PYTHONPATH", "")])
               .rstrip(os.pathsep))
    if token is not None:
        env["HF_TOKEN"] = token
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    return env


def hub_script_runner(folder: Path) -> Callable[..., dict]:
    """``run(script, server, args={}, xet=False, timeout=300) -> dict``: run ``tests/scripts/<script>.py`` in a
    subprocess against ``server``, its files (arguments, result, a fresh ``HF_HOME``) in ``folder``.

    The script (see ``tests/scripts/hub_common.py``) reads ``ARGS`` (``args`` + ``result_file``), fills the dict
    ``RESULT`` and calls ``finish()``; the returned dict is ``RESULT``. A non-zero exit raises with the subprocess's
    output.
    """
    counter = iter(range(1000))

    def run(script: str, server: HubServer, args: dict | None = None, *, xet: bool = False, timeout: int = 300,
            hf_home: Path | None = None) -> dict:
        n = next(counter)
        path = SCRIPTS / f"{script}.py"
        assert path.is_file(), path
        result_file = folder / f"hub_result_{n}.json"
        args_file = folder / f"hub_args_{n}.json"
        args_file.write_text(json.dumps({**(args or {}), "result_file": str(result_file)}))
        hf_home = hf_home or folder / f"hf_home_{n}"
        proc = subprocess.run([sys.executable, str(path), str(args_file)], env=hub_env(server, hf_home, xet=xet),
                              cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not result_file.exists():
            raise AssertionError(f"hub script {script} failed (rc={proc.returncode})\n--- stdout\n"
                                 f"{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-12000:]}\n--- server requests\n"
                                 f"{server.requests[-30:]}")
        return json.loads(result_file.read_text())

    return run


@pytest.fixture
def run_hub_script(tmp_path) -> Callable[..., dict]:
    """:func:`hub_script_runner` in the test's ``tmp_path``."""
    return hub_script_runner(tmp_path)
