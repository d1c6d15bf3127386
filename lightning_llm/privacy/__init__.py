"""Privacy switches of a run (`conf/privacy/`): `none` (the default) and `dp`, DP-SGD through Opacus."""

from lightning_llm.privacy.dp import DifferentialPrivacy

__all__ = ["DifferentialPrivacy"]
