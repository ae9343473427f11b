"""Certified results from stored votes: CERTIFY at every K' <= K on the first K' votes of each draw, no network."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from densepure.job.results import Setting, remove_orphan_temps, result_row, write_tsv
from densepure.job.votes import VotesError, VotesStore


def open_stores(directories: list[Path]) -> tuple[Setting, dict[int, VotesStore]]:
    """Open votes stores of one setting (K may differ); return the setting with the smallest K and the store of
    every stored image id."""
    stores = [VotesStore.open(d) for d in directories]
    settings = [Setting(**store.setting) for store in stores]
    base = min(settings, key=lambda s: s.K)
    for directory, setting in zip(directories, settings):
        if {**setting.as_dict(), "K": base.K} != base.as_dict():
            raise VotesError(f"{directory} holds votes of another setting than {directories[0]}")
    by_id = {i: store for store in stores for i in store.stored_ids()}  # read() explains a bad file
    return base, by_id


def selected_ids(ids: Sequence[int], by_id: dict[int, VotesStore], directories: list[Path]) -> list[int]:
    """``ids`` in order, each once, when the stores hold every one; VotesError naming the first they do not hold
    and which they hold."""
    missing = next((i for i in ids if i not in by_id), None)
    if missing is not None:
        span = f", ids {min(by_id)} to {max(by_id)}" if by_id else ""
        raise VotesError(f"image {missing} has no complete votes file in {', '.join(map(str, directories))} "
                         f"({len(by_id)} images stored{span})")
    return list(dict.fromkeys(ids))


def aggregate_stores(directories: list[Path], paths: dict[int, Path], alpha: float,
                     ids: list[int] | Callable[[int], list[int]] | None, num_classes_of) -> None:
    """Write, for each K' of ``paths``, the per-image TSV of the images ``ids`` (default: every stored one) of the
    stores ``directories`` (:func:`open_stores`): CERTIFY with the majority of the first K' votes of each draw at
    ``alpha``. Every id of ``ids`` (or of what ``ids(number of stored images)`` gives, when it is a function) must
    be stored (:func:`selected_ids`; an id named twice is certified once); ``num_classes_of(setting)`` gives the
    number of classes of the setting's dataset. Temp files that killed writes of these TSVs left are removed."""
    setting, by_id = open_stores(directories)
    ids = ids(len(by_id)) if callable(ids) else ids
    too_many = [k for k in paths if k > setting.K]
    if too_many:
        raise VotesError(f"K'={too_many[0]} exceeds the K={setting.K} votes stored in {directories[0]}")
    ids = sorted(by_id) if ids is None else selected_ids(ids, by_id, directories)  # in the order given
    rows: dict[int, list] = {K: [] for K in paths}
    num_classes = setting.extra.get("num_classes") or num_classes_of(setting)  # your own data records its own
    for i in ids:
        record = by_id[i].read(i)
        for K in paths:
            try:
                rows[K].append(result_row(i, record, setting, K, alpha, num_classes))
            except VotesError as err:
                raise VotesError(f"{by_id[i].path(i)}: {err}") from None
    for K, path in paths.items():
        remove_orphan_temps(path)
        write_tsv(path, rows[K])
