from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgpu.gpu.catalog import (
    MIG_COMPUTE_SLICES,
    MIG_MEMORY_SLICES,
    MigPlacement,
    get_model,
    validate_mig_layout,
)


def test_two_3g_and_a_1g_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError) as info:
        validate_mig_layout("H200-141GB", {"3g.71gb": 2, "1g.18gb": 1})
    assert str(info.value) == (
        "MIG layout does not fit one H200-141GB: 3g.71gb at start 0, 3g.71gb at start 4 use memory slices 0-7, "
        "leaving no free start for 1g.18gb (it may start at memory slice 0, 1, 2, 3, 4, 5 or 6); "
        "the layout needs 9 of 8 memory slices"
    )


def test_4g_beside_3g_is_placed() -> None:
    assert validate_mig_layout("H200-141GB", {"4g.71gb": 1, "3g.71gb": 1}) == [
        MigPlacement("4g.71gb", 0, 4),
        MigPlacement("3g.71gb", 4, 4),
    ]


def test_three_2g_and_a_double_memory_1g_fill_the_gpu() -> None:
    placements = validate_mig_layout("A100-80GB", {"2g.20gb": 3, "1g.20gb": 1})
    assert [(p.profile, p.start) for p in placements] == [
        ("2g.20gb", 0),
        ("2g.20gb", 2),
        ("2g.20gb", 4),
        ("1g.20gb", 6),
    ]


def test_seven_1g_take_starts_0_to_6() -> None:
    placements = validate_mig_layout("A100-40GB", {"1g.5gb": 7})
    assert [p.start for p in placements] == [0, 1, 2, 3, 4, 5, 6]


def test_7g_stands_alone() -> None:
    assert validate_mig_layout("H100-80GB", {"7g.80gb": 1}) == [MigPlacement("7g.80gb", 0, 8)]
    with pytest.raises(ValueError, match=r"^MIG layout needs 8 compute slices; one H100-80GB has 7$"):
        validate_mig_layout("H100-80GB", {"7g.80gb": 1, "1g.10gb": 1})


def test_a_fourth_2g_is_over_the_profile_maximum() -> None:
    with pytest.raises(ValueError, match=r"^2g\.35gb: at most 3 per GPU on H200-141GB, got 4$"):
        validate_mig_layout("H200-141GB", {"2g.35gb": 4})


def test_2g_and_3g_collide_on_memory_slices_without_exceeding_compute() -> None:
    # 3g (4 memory slices) + 2 x 2g (2 each) = 8 memory slices and 7 compute slices, but the
    # 2g starts {0,2,4} and 3g starts {0,4} cannot tile: 3g@4 leaves 0-3 for the two 2g. That fits;
    # with 3g@0, the 2g can only use 4, so the search must pick 3g@4.
    placements = validate_mig_layout("H200-141GB", {"3g.71gb": 1, "2g.35gb": 2})
    assert [(p.profile, p.start) for p in placements] == [("2g.35gb", 0), ("2g.35gb", 2), ("3g.71gb", 4)]


def test_unknown_profile_lists_the_models_profiles() -> None:
    with pytest.raises(ValueError) as info:
        validate_mig_layout("H200-141GB", {"1g.10gb": 1})
    assert str(info.value) == (
        "unknown MIG profile '1g.10gb' for H200-141GB; known profiles: "
        "1g.18gb, 1g.18gb+me, 1g.35gb, 2g.35gb, 3g.71gb, 4g.71gb, 7g.141gb"
    )


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "MIG layout is empty: give at least one profile and count, e.g. {'1g.18gb': 7}"),
        ({"1g.18gb": 0}, "1g.18gb: count must be a positive integer, got 0"),
        ({"1g.18gb": 1.5}, "1g.18gb: count must be a positive integer, got 1.5"),
    ],
)
def test_bad_counts_are_refused(layout: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_mig_layout("H200-141GB", layout)
    assert str(info.value) == message


def test_gpu_without_mig_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^L40S does not support MIG$"):
        validate_mig_layout("L40S", {"1g.18gb": 1})


def test_unknown_model_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown GPU model"):
        validate_mig_layout("H300", {"1g.18gb": 1})


H200 = get_model("H200-141GB")


def _fits_by_brute_force(layout: dict[str, int]) -> bool:
    """Independent check: try every combination of allowed starts (small layouts only)."""
    instances = [H200.mig_profile(name) for name, count in layout.items() for _ in range(count)]
    if sum(p.compute_slices for p in instances) > MIG_COMPUTE_SLICES:
        return False
    for starts in itertools.product(*(p.starts for p in instances)):
        used: list[int] = []
        for profile, start in zip(instances, starts, strict=True):
            used.extend(range(start, start + profile.memory_slices))
        if len(used) == len(set(used)) and max(used) < MIG_MEMORY_SLICES:
            return True
    return False


small_layouts = st.dictionaries(
    st.sampled_from([p.name for p in H200.mig_profiles]), st.integers(1, 3), min_size=1, max_size=3
).filter(lambda layout: sum(layout.values()) <= 5)


@settings(max_examples=150, deadline=None)
@given(small_layouts)
def test_placements_never_overlap_and_use_allowed_starts(layout: dict[str, int]) -> None:
    within_max = all(count <= H200.mig_profile(name).max_count for name, count in layout.items())
    try:
        placements = validate_mig_layout("H200-141GB", layout)
    except ValueError:
        assert not within_max or not _fits_by_brute_force(layout)
        return
    assert within_max and _fits_by_brute_force(layout)
    used: list[int] = []
    for placement in placements:
        profile = H200.mig_profile(placement.profile)
        assert placement.start in profile.starts
        assert placement.size == profile.memory_slices
        used.extend(range(placement.start, placement.start + placement.size))
    assert len(used) == len(set(used))
    assert max(used) < MIG_MEMORY_SLICES
    assert sum(H200.mig_profile(p.profile).compute_slices for p in placements) <= MIG_COMPUTE_SLICES
    counts: dict[str, int] = {}
    for placement in placements:
        counts[placement.profile] = counts.get(placement.profile, 0) + 1
    assert counts == layout
