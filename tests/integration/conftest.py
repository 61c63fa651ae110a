"""The networked KMS servers (OpenBao, moto) of tests/keys_net, for the multi-process tests."""

from keys_net.conftest import bao, prefix  # noqa: F401 (pytest fixtures, registered by import)
