"""coldstart: from supervised warm-up to RL with verifiable rewards.

`from coldstart import CADFTConfig, CADFTTrainer` gives the CADFT warm-up as a drop-in for TRL's `SFTConfig` and
`SFTTrainer` (imported on first use: the command line starts without loading TRL).
"""

__version__ = "0.1.0"

__all__ = ["CADFTConfig", "CADFTTrainer"]


def __getattr__(name: str):
    if name in __all__:
        from coldstart import cadft

        return getattr(cadft, name)
    raise AttributeError(f"module 'coldstart' has no attribute {name!r}")
