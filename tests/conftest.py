"""Shared fixtures. Tests never touch the network: the Hub is switched off before anything imports it."""

import gc
import os
import struct
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL's notice on importing its experimental modules

gc.disable()  # while collection imports torch, transformers, TRL, ...: see pytest_collection_finish

import pytest  # noqa: E402

# The loopback Hub fixtures (tests/hub_fixtures.py), visible to every test module. Imported here rather than named in
# a test module's `pytest_plugins`, which left them unregistered on the CI machine's pytest (11 "fixture not found").
from hub_fixtures import hub_server, hub_server_factory, run_hub_script  # noqa: E402,F401

# tests/scripts/ holds the scripts that tests run in subprocesses (Hub pushes, multi-process workers): they run at
# import, so --doctest-modules must not import them.
collect_ignore = ["scripts"]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """Folder of a tiny random Llama (2 layers, width 64) with the SmolLM2 tokenizer; built once per session."""
    from trl_ext.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(autouse=True)
def _environment_restored():
    """``os.environ`` as it was before each test, whatever the code under test wrote into it (``trl-ext <command>``
    sets ``TRL_EXT_PROG``, TRL's vLLM colocate set-up ``RANK``/``MASTER_PORT``/...): nothing leaks into later tests.
    Tests set variables with ``monkeypatch.setenv``."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def gguf_tokenizer_once():
    """Monkeypatches trl_ext.models.default's GGUF tokenizer reader to one shared result: read once per session
    (~3.5 s), so that tests of the conversion's atomicity in an empty cache (``TRL_EXT_CACHE``) convert for real
    (``save_pretrained`` of the GGUF tokenizer) without parsing the GGUF file each time."""
    from trl_ext.models import default as default_mod

    loaded = default_mod._load_gguf_tokenizer()
    return lambda monkeypatch: monkeypatch.setattr(default_mod, "_load_gguf_tokenizer", lambda: loaded)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_plots: draw and save figures in full (see _cheap_figure_rendering)")


def pytest_collection_finish(session):
    """Every ``Trainer.train()`` starts with accelerate's ``free_memory()``, a full ``gc.collect()``: ~0.3 s a run
    on the 2-core machine, spent walking the ~600k objects that importing torch, transformers, TRL and datasets
    created (the same for every collection in the session, none of them garbage). Once collection has imported
    them, they are collected once and frozen out of the collector (``gc.freeze``); what tests create is collected
    as before. (The collector is off from conftest's import until here: the full collections that the imports'
    allocations would trigger find nothing to free, ~1.5 s.)"""
    import matplotlib.figure  # noqa: F401  (imported by _cheap_figure_rendering anyway: frozen with the rest)
    from matplotlib.backends import backend_agg  # noqa: F401

    gc.collect()
    gc.freeze()
    gc.enable()


def _png(width: int = 1, height: int = 1) -> bytes:
    """A valid all-white RGB PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff" * 3 * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


_BLANK_PNG = _png()


@pytest.fixture(autouse=True)
def _cheap_figure_rendering(request, monkeypatch):
    """Every training run ends with a model card and its ``training_curves.png``; matplotlib's layout and rasterising
    of that figure (~0.7 s a run on the 2-core machine) was more than half the time of tests/test_grpo_options.py
    and tests/test_model_cards.py, for pixels no assertion looks at. Here the figure is still built (panels, lines, limits: trl_ext.plotting runs as it is, and decides
    whether there is anything to plot), but ``tight_layout`` and drawing are skipped and ``savefig`` writes a blank
    1x1 PNG. Tests marked ``real_plots`` (tests/test_evaluation_plotting.py, the model-card rendering tests) and
    every subprocess (the Hub pushes, the examples) draw in full."""
    if request.node.get_closest_marker("real_plots"):
        yield
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def savefig(self, fname, *args, **kwargs):
        if hasattr(fname, "write"):
            fname.write(_BLANK_PNG)
        else:
            with open(fname, "wb") as f:
                f.write(_BLANK_PNG)

    monkeypatch.setattr(Figure, "tight_layout", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(Figure, "savefig", savefig)
    monkeypatch.setattr(FigureCanvasAgg, "draw", lambda self: None)
    yield
