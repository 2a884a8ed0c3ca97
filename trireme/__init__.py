"""Trireme: runs NVIDIA Triton Inference Server fleets on Kubernetes GPU clusters.

The import root that maps the repository's top-level folders into one package
(``trireme.operator`` <- ``operator/``, ``trireme.scheduler`` <- ``scheduler/``,
``trireme.devcluster`` <- ``devcluster/``), since ``operator`` alone would shadow
the standard library.
"""

__version__ = "0.1.0"
