"""coldstart: from supervised warm-up to RL with verifiable rewards."""

__version__ = "0.1.0"
