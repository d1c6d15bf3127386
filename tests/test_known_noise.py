"""Known-harmless warnings and log lines are filtered in one place (lightning_llm.log)."""

from __future__ import annotations

import warnings

from lightning_llm.log import quiet_known_noise


def test_known_harmless_warnings_are_filtered_in_one_place():
    """The run's, DP-SGD's and Lightning's harmless warnings all come from log.KNOWN_HARMLESS_WARNINGS."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        for message in (
            "Full backward hook is firing when gradients are computed with respect to module outputs",
            "The 'train_dataloader' does not have many workers which may be a bottleneck.",
            "a warning worth reading",
        ):
            warnings.warn(message, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning worth reading"]
