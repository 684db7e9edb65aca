"""Likely typosquats of popular machine-learning packages.

A name is a likely typosquat of a popular name when it is not itself popular
or allowlisted and either

1. its Damerau-Levenshtein distance (optimal string alignment) to the popular
   name is 1, or 2 when the popular name has 10 or more characters. Most
   three-letter names are one edit from some real project, so popular names
   of 3 characters or fewer (``jax``, ``pip``) are compared by rule 2 only; or
2. it equals the popular name once separators are removed and confusable
   characters are folded (``0`` to ``o``, ``1`` and ``i`` to ``l``, ``rn`` to
   ``m``, ``vv`` to ``w``).

Names are compared in PEP 503 normalized form, so ``scikit_learn`` is the
same project as ``scikit-learn`` and never reported.
"""

from __future__ import annotations

import functools
from importlib import resources

from attestgate.deps.model import normalize_name

MIN_DISTANCE_LENGTH = 4
LONG_NAME = 10

_CONFUSABLES = (("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("i", "l"))


def _read_list(filename: str) -> frozenset[str]:
    text = resources.files("attestgate.deps").joinpath("data").joinpath(filename).read_text("utf-8")
    names = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(normalize_name(name) for name in names if name)


@functools.cache
def popular_names() -> frozenset[str]:
    """Return the bundled list of popular ML package names."""
    return _read_list("popular_ml_packages.txt")


@functools.cache
def allowlisted_names() -> frozenset[str]:
    """Return legitimate names that sit close to a popular name."""
    return _read_list("typosquat_allowlist.txt")


def skeleton(name: str) -> str:
    """Fold separators and look-alike characters out of a normalized name."""
    folded = name.lower().replace("-", "").replace("_", "").replace(".", "")
    for look_alike, letter in _CONFUSABLES:
        folded = folded.replace(look_alike, letter)
    return folded


def osa_distance(a: str, b: str, bound: int) -> int:
    """Return the optimal-string-alignment distance, or ``bound + 1`` once it exceeds ``bound``."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > bound:
            return bound + 1
        previous2, previous = previous, current
    return min(previous[len(b)], bound + 1)


@functools.cache
def _skeletons() -> dict[str, str]:
    return {skeleton(name): name for name in popular_names()}


def _bound(popular: str) -> int:
    return 2 if len(popular) >= LONG_NAME else 1


def _bigrams(word: str) -> frozenset[tuple[str, int]]:
    """Return the adjacent-character pairs of ``word`` as a set that keeps repeats apart."""
    seen: dict[str, int] = {}
    pairs = []
    for i in range(len(word) - 1):
        pair = word[i : i + 2]
        seen[pair] = seen.get(pair, 0) + 1
        pairs.append((pair, seen[pair]))
    return frozenset(pairs)


_Profile = tuple[str, int, frozenset[tuple[str, int]]]


@functools.cache
def _profiles_by_length() -> dict[int, tuple[_Profile, ...]]:
    """Map each name length to the popular names that a name of that length can imitate."""
    by_length: dict[int, list[_Profile]] = {}
    for name in sorted(popular_names()):
        if len(name) < MIN_DISTANCE_LENGTH:
            continue
        bound = _bound(name)
        for length in range(len(name) - bound, len(name) + bound + 1):
            by_length.setdefault(length, []).append((name, bound, _bigrams(name)))
    return {length: tuple(profiles) for length, profiles in by_length.items()}


@functools.lru_cache(maxsize=65536)
def typosquat_target(name: str) -> str | None:
    """Return the popular name that ``name`` imitates, or None."""
    normalized = normalize_name(name)
    if not normalized or normalized in popular_names() or normalized in allowlisted_names():
        return None
    target = _skeletons().get(skeleton(normalized))
    if target is not None:
        return target
    profiles = _profiles_by_length().get(len(normalized), ())
    grams = _bigrams(normalized) if profiles else frozenset()
    for popular, bound, popular_grams in profiles:
        # Each edit changes at most 3 adjacent-character pairs (a transposition
        # does), so k edits leave at least longest - 1 - 3k pairs in common.
        # This cheap test skips most distance computations.
        longest = max(len(normalized), len(popular))
        if len(grams & popular_grams) < longest - 1 - 3 * bound:
            continue
        if osa_distance(normalized, popular, bound) <= bound:
            return popular
    return None
