"""The process-level fixtures of tests/main_job (a tiny synthetic set, a micro checkpoint) reused here."""

from tests.main_job.conftest import micro_checkpoint, synth_root  # noqa: F401
