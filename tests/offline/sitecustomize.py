"""Processes started by the tests refuse network connections too (see network_guard.py)."""

import network_guard

network_guard.install()
