"""The collector's settings: the app's start-up sets the thresholds, every time it starts."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from fleetward.app import build_app
from fleetward.core.collector import THRESHOLDS, freeze_start_up_objects
from fleetward.settings import Settings


@pytest.fixture
def default_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    try:
        yield
    finally:
        gc.set_threshold(*before)


async def test_the_apps_start_up_sets_the_thresholds(
    settings: Settings, default_thresholds: None
) -> None:
    app = build_app(settings)
    assert gc.get_threshold() == (700, 10, 10)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == THRESHOLDS


def test_a_later_call_sets_them_too_without_freezing_again(default_thresholds: None) -> None:
    freeze_start_up_objects()  # the process's first freeze, or a later call
    frozen = gc.get_freeze_count()
    gc.set_threshold(700, 10, 10)
    garbage = [[] for _ in range(10)]
    freeze_start_up_objects()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() == frozen  # its objects were not frozen
    del garbage
