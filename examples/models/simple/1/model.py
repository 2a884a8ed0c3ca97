"""The `simple` sample model: adds and subtracts two FP32 vectors.

It exists so that a Triton started by the local cluster serves a real model on a
CPU-only machine, with a configurable service time per request (`delay_ms` in
config.pbtxt) so that load tests see requests queue as they would on a busy GPU.
"""

from __future__ import annotations

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def delay_seconds(model_config: dict) -> float:
    """The per-request service time configured as the `delay_ms` parameter."""
    parameter = model_config.get("parameters", {}).get("delay_ms", {})
    milliseconds = float(parameter.get("string_value") or 0)
    if milliseconds < 0:
        raise ValueError(f"delay_ms must not be negative, got {milliseconds}")
    return milliseconds / 1000.0


class TritonPythonModel:
    """Triton's Python-backend entry point."""

    def initialize(self, args: dict) -> None:
        self.delay_s = delay_seconds(json.loads(args["model_config"]))

    def execute(self, requests: list) -> list:
        return [self.answer(request) for request in requests]

    def answer(self, request):
        first = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
        second = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
        if first.shape != second.shape:
            error = pb_utils.TritonError(
                f"INPUT0 and INPUT1 must have the same shape, got {first.shape} and {second.shape}"
            )
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        if self.delay_s:
            time.sleep(self.delay_s)
        total = pb_utils.Tensor("OUTPUT0", (first + second).astype(np.float32))
        difference = pb_utils.Tensor("OUTPUT1", (first - second).astype(np.float32))
        return pb_utils.InferenceResponse(output_tensors=[total, difference])
