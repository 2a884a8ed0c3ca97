"""The scheduler: every decision Trireme makes, as pure functions.

An immutable cluster snapshot (and the time, as an argument) goes in, a plan as
data comes out. No Kubernetes, HTTP, Prometheus or clock access: the
import-linter contracts in ``pyproject.toml`` enforce it, and the benchmarks
drive this package directly so that what is measured is what runs.
"""
