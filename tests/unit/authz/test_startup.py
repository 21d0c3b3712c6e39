"""The platform refuses to start with a policy that does not validate against the schema.

Threat: a broken or tampered policy file silently skipped (an erroring forbid fails open in
Cedar) or half-loaded; the only safe answer is not to serve at all.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from fleetward.app import build_app
from fleetward.authz.pdp import PolicyInvalid, PolicyText
from fleetward.core.clock import FrozenClock
from fleetward.platform import Platform
from fleetward.settings import Settings


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "policy"
    target.mkdir()
    source = resources.files("fleetward.authz") / "policy"
    for entry in source.iterdir():
        if entry.is_file():
            (target / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def _broken(tmp_path: Path) -> PolicyText:
    directory = _copy(tmp_path)
    # An attribute the schema does not declare: parses, does not validate.
    (directory / "zz-broken.cedar").write_text(
        '@id("owner-typo")\npermit (principal, action, resource)\n'
        "when { principal.no_such_attribute == 1 };\n",
        encoding="utf-8",
    )
    return PolicyText.from_directory(directory)


def test_a_valid_copy_builds(settings: Settings, clock: FrozenClock, tmp_path: Path) -> None:
    # The control case: the copy itself is fine, so the failures below are the edit's.
    policy = PolicyText.from_directory(_copy(tmp_path))
    platform = Platform.build(settings, clock=clock, policy=policy)
    assert platform.pdp.policy_version == PolicyText.packaged().version


def test_platform_refuses_a_policy_that_does_not_validate(
    settings: Settings, clock: FrozenClock, tmp_path: Path
) -> None:
    with pytest.raises(PolicyInvalid) as refused:
        Platform.build(settings, clock=clock, policy=_broken(tmp_path))
    # Refused by schema validation, not by a later check of this package.
    assert any("no_such_attribute" in error for error in refused.value.errors)


def test_platform_refuses_a_policy_that_does_not_parse(
    settings: Settings, clock: FrozenClock, tmp_path: Path
) -> None:
    directory = _copy(tmp_path)
    (directory / "zz-broken.cedar").write_text("permit (principal, action", encoding="utf-8")
    with pytest.raises(PolicyInvalid):
        Platform.build(settings, clock=clock, policy=PolicyText.from_directory(directory))


def test_build_app_refuses_a_policy_that_does_not_validate(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # build_app builds its platform from the packaged policy: replace what is packaged.
    broken = _broken(tmp_path)
    monkeypatch.setattr(PolicyText, "packaged", classmethod(lambda cls: broken))
    with pytest.raises(PolicyInvalid):
        build_app(settings)


def test_build_app_starts_with_the_packaged_policy(settings: Settings) -> None:
    app = build_app(settings)
    assert app.state.platform.pdp.policy_version == PolicyText.packaged().version
