"""Test setup: quiet TF logs, CPU-only determinism helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
