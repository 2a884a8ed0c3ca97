"""Benchmarks behind ``trireme bench``: they drive the scheduler package directly, so what is
measured is what runs in the operator. Each module reads its inputs (trace files), runs, and
prints a table (or JSON); none of them is imported by the product."""
