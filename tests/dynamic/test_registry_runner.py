"""Plug-in discovery, policy selection and the dynamic stage's handling of failing plug-ins."""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from attestgate.dynamic import registry, runner
from attestgate.dynamic.interface import (
    ArtifactInput,
    Budget,
    DynamicPlugin,
    PluginResult,
    Signal,
)
from attestgate.dynamic.registry import PluginLoadError, discover, load_plugin
from attestgate.dynamic.runner import PluginSelection, run_dynamic, selections_from_policy
from attestgate.dynamic.sandbox import SandboxPlugin
from attestgate.errors import PolicyError, UsageError
from attestgate.pipeline import inspect


class Quiet(DynamicPlugin):
    name: ClassVar[str] = "quiet"

    def run(self, artifact: ArtifactInput, budget: Budget) -> PluginResult:
        return PluginResult(runs=[{"file": artifact.name, "loader": "none", "status": "loaded"}])


class Noisy(DynamicPlugin):
    name: ClassVar[str] = "noisy"

    def run(self, artifact: ArtifactInput, budget: Budget) -> PluginResult:
        signals = [
            Signal("file.write", {"path": f"/tmp/x{i}"}, "2026-01-01T00:00:00Z", "noisy", "1")
            for i in range(budget.max_signals + 3)
        ]
        return PluginResult(signals=signals)


class Broken(DynamicPlugin):
    name: ClassVar[str] = "broken"

    def run(self, artifact: ArtifactInput, budget: Budget) -> PluginResult:
        raise RuntimeError("plug-in bug")


RELEASE = threading.Event()


class Hanging(DynamicPlugin):
    name: ClassVar[str] = "hanging"

    def run(self, artifact: ArtifactInput, budget: Budget) -> PluginResult:
        RELEASE.wait(10)
        return PluginResult()


class NotApplicable(DynamicPlugin):
    name: ClassVar[str] = "never"

    def applies_to(self, formats, stage, tier) -> bool:
        return False

    def run(self, artifact: ArtifactInput, budget: Budget) -> PluginResult:
        raise AssertionError("must not run")


PLUGINS = {cls.name: cls for cls in (Quiet, Noisy, Broken, Hanging, NotApplicable)}


@pytest.fixture
def fake_plugins(monkeypatch):
    def load(name: str) -> DynamicPlugin:
        if name not in PLUGINS:
            raise UsageError(f"unknown dynamic plug-in {name!r}")
        return PLUGINS[name]()

    monkeypatch.setattr(runner, "load_plugin", load)


@pytest.fixture
def identity(tmp_path: Path):
    path = tmp_path / "notes.json"
    path.write_text('{"a": 1}')
    return inspect(path).artifact


def test_sandbox_registered_by_entry_point():
    entries = importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)
    assert "attestgate.dynamic.sandbox:SandboxPlugin" in {e.value for e in entries}


def test_load_sandbox_plugin():
    assert isinstance(load_plugin("sandbox"), SandboxPlugin)


def test_unknown_plugin_usage_error():
    with pytest.raises(UsageError) as caught:
        load_plugin("no-such-plugin")
    assert "sandbox" in caught.value.hint


def test_broken_entry_point(monkeypatch):
    bad = importlib.metadata.EntryPoint(
        "bad", "attestgate.no_such_module:Thing", registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [bad])
    assert "sandbox" in discover()
    with pytest.raises(PluginLoadError, match="ModuleNotFoundError"):
        load_plugin("bad")


def test_entry_point_must_be_plugin(monkeypatch):
    wrong = importlib.metadata.EntryPoint("wrong", "pathlib:PurePath", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [wrong])
    with pytest.raises(PluginLoadError, match="not a DynamicPlugin"):
        load_plugin("wrong")


def test_plugin_crash_becomes_finding(fake_plugins, identity):
    report = run_dynamic(identity, stage="deployment", plugins=["broken"])
    assert [f.rule for f in report.findings] == ["dynamic.crashed"]
    assert report.plugins[0]["status"] == "crashed"


def test_hanging_plugin_times_out(fake_plugins, identity, monkeypatch):
    monkeypatch.setattr(runner, "GRACE_SECONDS", 0.2)
    RELEASE.clear()
    try:
        report = run_dynamic(identity, stage="deployment", plugins=["hanging"], budget_seconds=0.1)
    finally:
        RELEASE.set()
    assert [f.rule for f in report.findings] == ["dynamic.timeout"]
    assert report.plugins[0]["status"] == "timeout"


def test_not_applicable_plugin_skipped(fake_plugins, identity):
    report = run_dynamic(identity, stage="deployment", plugins=["never"])
    assert report.plugins == [{"name": "never", "version": "1", "status": "not-applicable"}]
    assert report.findings == []


def test_signal_cap(fake_plugins, identity, monkeypatch):
    monkeypatch.setattr(runner, "Budget", lambda seconds: Budget(seconds, max_signals=5))
    report = run_dynamic(identity, stage="deployment", plugins=["noisy"])
    assert len(report.signals) == 5
    assert report.plugins[0]["dropped_signals"] == 3
    assert "dynamic.incomplete" in {f.rule for f in report.findings}


def test_unknown_forced_plugin_raises(fake_plugins, identity):
    with pytest.raises(UsageError):
        run_dynamic(identity, stage="deployment", plugins=["absent"])


def test_policy_selected_missing_plugin_unavailable(fake_plugins, identity):
    document = {"dynamic": {"plugins": [{"name": "absent"}]}}
    report = run_dynamic(identity, stage="deployment", policy_document=document)
    assert [f.rule for f in report.findings] == ["dynamic.unavailable"]


def test_policy_selection_by_stage(fake_plugins, identity):
    document = {"dynamic": {"plugins": [{"name": "quiet", "stages": ["training"]}]}}
    assert run_dynamic(identity, stage="deployment", policy_document=document).plugins == []
    ran = run_dynamic(identity, stage="training", policy_document=document)
    assert [p["name"] for p in ran.plugins] == ["quiet"]


def test_record_json_groups_by_kind(fake_plugins, identity, monkeypatch):
    monkeypatch.setattr(runner, "Budget", lambda seconds: Budget(seconds, max_signals=2))
    report = run_dynamic(identity, stage="deployment", plugins=["noisy"])
    assert list(report.to_json()["signals"]) == ["file.write"]
    assert report.checks[0].name == "dynamic.noisy"


@pytest.mark.parametrize(
    ("selection", "stage", "tier", "formats", "expected"),
    [
        (PluginSelection("s"), "deployment", None, {"pickle"}, True),
        (
            PluginSelection("s", stages=frozenset({"training"})),
            "deployment",
            None,
            {"pickle"},
            False,
        ),
        (
            PluginSelection("s", tiers=frozenset({"critical"})),
            "deployment",
            "low",
            {"pickle"},
            False,
        ),
        (PluginSelection("s", tiers=frozenset({"critical"})), "deployment", None, {"pickle"}, True),
        (
            PluginSelection("s", formats=frozenset({"pytorch-zip"})),
            "deployment",
            None,
            {"pickle"},
            False,
        ),
        (
            PluginSelection("s", formats=frozenset({"pickle"})),
            "deployment",
            None,
            {"pickle", "json"},
            True,
        ),
    ],
)
def test_selection_matches(selection, stage, tier, formats, expected):
    assert selection.selects(stage, tier, formats) is expected


def test_policy_section_parsed():
    document = {
        "dynamic": {
            "plugins": [
                {
                    "name": "sandbox",
                    "stages": ["deployment"],
                    "formats": ["pickle"],
                    "budget_seconds": 120,
                }
            ]
        }
    }
    assert selections_from_policy(document) == [
        PluginSelection("sandbox", frozenset({"deployment"}), None, frozenset({"pickle"}), 120.0)
    ]


@pytest.mark.parametrize(
    "section",
    [
        {"plugins": "sandbox"},
        {"plugins": [{"stages": ["deployment"]}]},
        {"plugins": [{"name": "sandbox", "stages": "deployment"}]},
        {"plugins": [{"name": "sandbox", "budget_seconds": -1}]},
        "sandbox",
    ],
)
def test_policy_section_rejected(section):
    with pytest.raises(PolicyError):
        selections_from_policy({"dynamic": section})
