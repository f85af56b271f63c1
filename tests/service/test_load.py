"""The load test of `benchmarks/load_test.py` at CI size: 100 experiments from 10 clients
against two API processes and two workers, one of which is killed (SIGKILL) half-way and
started again. Nothing accepted may be lost, and no run may hold more than one result set.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from service_support import REPO, Backend


def load_test_module() -> ModuleType:
    path = REPO / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("load_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_under_load_with_a_worker_killed_nothing_is_lost_or_duplicated(
    pg: Backend, tmp_path: Path
) -> None:
    load = load_test_module()
    settings = pg.settings.model_copy(update={"max_concurrent_jobs": 10**6, "db_pool_size": 5})
    keys = [pg.key(f"client-{i}") for i in range(10)]
    with load.Stack(settings, tmp_path, api_processes=2, workers=2) as stack:
        report = load.run_phase("ci", stack, keys, 100, kill_worker=True, timeout=120)
    print(report.describe())
    assert report.killed_at is not None
    assert report.submitted == report.accepted == report.succeeded == 100, report.describe()
    assert report.lost == 0 and report.duplicated == 0 and report.incomplete == 0
