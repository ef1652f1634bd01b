"""The public API: every exported name resolves, and `import benchkit` stays light."""

from __future__ import annotations

import subprocess
import sys

import benchkit


def test_every_exported_name_resolves():
    for name in benchkit.__all__:
        assert getattr(benchkit, name) is not None, name


def test_train_is_the_decorator_even_after_importing_the_training_package():
    code = (
        "import benchkit.training.run, benchkit.training.runner, benchkit as bench\n"
        "@bench.train(config={'epochs': 1})\n"
        "def fit(run):\n    return 1\n"
        "assert fit.__benchkit_kind__ == 'train' and fit.config['epochs'] == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_import_benchkit_and_declaring_data_do_not_import_torch():
    code = (
        "import sys, benchkit as bench\n"
        "bench.dataset, bench.File\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
