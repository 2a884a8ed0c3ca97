"""The operator: all I/O of Trireme (Kubernetes, Prometheus, Triton).

It turns the plans that ``trireme.scheduler`` computes into idempotent API calls.
Handlers stay thin; decisions live in the scheduler.
"""
