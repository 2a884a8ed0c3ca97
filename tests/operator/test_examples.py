"""Every sample InferenceService in examples/ is valid: the models accept it, and the API
server (the CRD's schema and CEL rules) accepts it in a server-side dry run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from trireme.operator.api import KIND, InferenceService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted([ROOT / "examples" / "inferenceservice.yaml", *(ROOT / "examples" / "services").glob("*.yaml")])
DOCUMENTS = [(path, doc) for path in EXAMPLES for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(("path", "document"), DOCUMENTS,
                         ids=[f"{p.stem}/{d['metadata']['name']}" for p, d in DOCUMENTS])
def test_the_models_accept_the_example(path: Path, document: dict[str, Any]) -> None:
    assert document["kind"] == KIND
    tis = InferenceService.from_api({**document, "metadata": {**document["metadata"], "namespace": "default"}})
    assert tis.spec.models


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_api_server_accepts_the_example(path: Path, kubectl: Callable[..., Any], installed_crd: str) -> None:
    result = kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(path))
    assert "(server dry run)" in result.stdout
