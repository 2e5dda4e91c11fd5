"""The load run uses the fault suite's scenario settings and figure summary."""

from tests.faults.conftest import fault_settings, pytest_terminal_summary

__all__ = ["fault_settings", "pytest_terminal_summary"]
