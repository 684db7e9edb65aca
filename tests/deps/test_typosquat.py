"""Tests for the typosquat check."""

from __future__ import annotations

import pytest

from attestgate.deps.typosquat import (
    allowlisted_names,
    osa_distance,
    popular_names,
    skeleton,
    typosquat_target,
)


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("torhc", "torch"),  # transposition
        ("transfomers", "transformers"),  # deletion
        ("numpyy", "numpy"),  # insertion
        ("tdqm", "tqdm"),
        ("reqeusts", "requests"),
        ("scikitlearn", "scikit-learn"),  # separators only
        ("pi1low", "pillow"),  # confusable digit
        ("rnatplotlib", "matplotlib"),  # "rn" for "m"
        ("safetensor", "safetensors"),
        ("hugginface-hub", "huggingface-hub"),
        ("tensorfloww", "tensorflow"),
        ("transfromerz", "transformers"),  # two edits on a long name
    ],
)
def test_typosquat_detected(name: str, target: str) -> None:
    assert typosquat_target(name) == target


@pytest.mark.parametrize(
    "name",
    [
        "scikit_learn",  # the same project after normalization
        "Scikit-Learn",
        "huggingface_hub",
        "torch",
        "torchvision",
        "torchaudio",
        "tensorflow-cpu",
        "jaxlib",
        "onnxruntime-gpu",
        "opencv-python-headless",
        "pytorch-lightning",
        "torchx",
        "scapy",
        "dash",
        "tensorboardx",
        "pyaml",
        "xla",  # three letters: only the skeleton rule applies
        "certifi",
        "pydantic-core",
        "sentencepiece",
        "numba",
    ],
)
def test_legitimate_names_pass(name: str) -> None:
    assert typosquat_target(name) is None


def test_short_name_two_edits_pass() -> None:
    assert typosquat_target("nmupyy") is None


def test_skeleton_folds_confusables() -> None:
    assert skeleton("Py-Torch_0.1") == skeleton("pytorcho.l")


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("torch", "torch", 0), ("torch", "torhc", 1), ("abc", "cab", 2), ("kitten", "sitting", 3)],
)
def test_osa_distance(a: str, b: str, distance: int) -> None:
    assert osa_distance(a, b, 5) == distance


def test_osa_distance_bounded() -> None:
    assert osa_distance("a" * 50, "b" * 50, 2) == 3


def test_bundled_list_size() -> None:
    assert 90 <= len(popular_names()) <= 150


def test_allowlist_disjoint_from_popular() -> None:
    assert not allowlisted_names() & popular_names()
