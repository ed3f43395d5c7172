"""The Python API: the same pipeline as `nnspec check`, for a model and tensors in memory.

    import nnspec
    results = nnspec.check_module(net, x, "robustness within linf(0.05)", labels=y, domain=(0, 1))
    for r in results:
        print(r.input_id, r.verdict, r.bounds)

The spec text holds properties (and `let`/`param`/`default using` statements); the model, inputs
and domain come from the arguments. Every witness is confirmed on the model as in the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import torch
from torch import nn

from nnspec.errors import DataError, UsageError
from nnspec.models.bind import BoundInputs
from nnspec.models.loading import from_module
from nnspec.models.model import Model
from nnspec.pipeline import CheckOptions
from nnspec.runner import Runner
from nnspec.planning.plan import plan
from nnspec.properties.spec import Domain
from nnspec.results.run import TaskRecord
from nnspec.semantics import lower
from nnspec.span import Span
from nnspec.syntax.parser import parse_text


def check_module(model: nn.Module | Model, inputs: torch.Tensor, spec: str, *, labels: Sequence[int] | None = None,
                 domain: tuple[float, float] | tuple[Sequence[float], Sequence[float]] = (0.0, 1.0),
                 outputs_are_logits: bool = True, seed: int | None = None, budget: int | None = None,
                 bound_time: float | None = None, overrides: dict[str, Any] | None = None,
                 name: str = "<api>") -> list[TaskRecord]:
    """Check the properties in ``spec`` on ``model`` around each row of ``inputs`` (B, *shape).

    Rows may also come flat, (B, n). ``labels`` default to the model's predictions; ``domain`` is
    (lo, hi) for every dimension or two sequences, one value per flattened dimension. Raises
    nnspec's own errors for bad input (``DataError`` for inputs that do not fit the model).
    ``budget`` and ``bound_time`` override every property's, as ``nnspec check``'s ``--budget`` and
    ``--bound-time`` do.
    """
    if bound_time is not None and not 0 <= bound_time < math.inf:
        raise UsageError(f"bound_time={bound_time}: must be a number of seconds >= 0")
    inputs = torch.as_tensor(inputs)
    if not isinstance(model, Model):  # evaluate in the inputs' precision (float64 stays float64)
        dtype = inputs.dtype if inputs.dtype in (torch.float32, torch.float64) else torch.float32
        model = from_module(model, tuple(inputs.shape[1:]), name=type(model).__name__, dtype=dtype)
    module = lower(parse_text(spec, name), overrides or {})
    module = dataclasses.replace(module, outputs_are_logits=outputs_are_logits)
    n = model.n_inputs
    if inputs.dim() < 2 or inputs[0].numel() != n:
        raise DataError(f"inputs of shape {tuple(inputs.shape)} do not fit {model.name}: it takes "
                        f"{tuple(model.input_shape)} per input (pass (B, *shape))")
    inputs = inputs.reshape((len(inputs),) + tuple(model.input_shape))  # (B, n) flat rows too
    lo, hi = domain
    lower_t = torch.as_tensor(lo, dtype=torch.float32).expand(n).clone()
    upper_t = torch.as_tensor(hi, dtype=torch.float32).expand(n).clone()
    module = dataclasses.replace(module, domain=Domain(tuple(lower_t.tolist()), tuple(upper_t.tolist()),
                                                       Span.unknown(name)))
    x = inputs.to(model.dtype)
    label_t = torch.as_tensor(labels, dtype=torch.long) if labels is not None else model.predict(x)
    bound = BoundInputs(x, label_t, "data" if labels is not None else "predicted",
                        tuple(f"input[{i}]" for i in range(len(x))), lower_t, upper_t)
    runner = Runner(CheckOptions(seed=seed, budget=budget, bound_time=bound_time))
    records: list[TaskRecord] = []
    tasks = plan([module], seed=seed, budget=budget, bound_time=bound_time, n_inputs={module.file: n},
                 inline_inputs=True).tasks
    for task in tasks:
        for record, outcome in runner.run_task(task, model, bound):
            if outcome.witness is not None:  # as in the CLI's JSON: the witness input itself
                record.witness["x"] = outcome.witness.x
            records.append(record)
    return records
