"""Fixtures for the operator's tests: the InferenceService CRD installed on the
session's local cluster, once, and known to kubectl's discovery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trireme.devcluster.testing import wait_for
from trireme.operator import api

ROOT = Path(__file__).resolve().parents[2]


def install_crds(kubectl: Callable[..., Any]) -> str:
    """Apply Trireme's CRDs and wait until kubectl knows InferenceServices; returns the CRD's name."""
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", f"crd/{api.CRD_NAME}", "--timeout=30s")
    wait_for(lambda: kubectl("get", "tis", "-A", check=False).returncode == 0, timeout=20, interval=0.2,
             what="the InferenceService resource to appear in kubectl's discovery")
    return api.CRD_NAME


@pytest.fixture(scope="session")
def crd_installer() -> Callable[[Callable[..., Any]], str]:
    """``install_crds``, for the modules that run a cluster of their own."""
    return install_crds


@pytest.fixture(scope="session")
def installed_crd(kubectl: Callable[..., Any]) -> str:
    return install_crds(kubectl)
