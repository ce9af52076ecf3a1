"""Adam that updates only the rows of a large embedding table that a batch uses, with dense Adam's arithmetic.

Dense Adam moves every row of every tensor at every step, even a row whose gradient is zero: its moments decay
and its weights keep moving along their momentum. On a user table of 76,000 customers × 64 a batch of 1,024
pairs touches about a seventieth of the rows, yet the update walks all of them.

:class:`RowAdam` gives the tensors whose gradient is sparse (an ``nn.Embedding`` with ``sparse=True``) the
update of dense Adam, late: each row records the step it was last brought up to date, and before a batch reads
it (:meth:`RowAdam.prepare`) or before the weights are read at all (:meth:`RowAdam.flush`) the steps it skipped
are applied at once, in closed form. After ``k`` steps without gradient since step ``s`` the moments are
``β1^k m`` and ``β2^k v``, and without ``eps`` the weights have moved by ``lr · m/√v · G_0(s, k)``, where
``G_n(s, k) = Σ_{i=1..k} c_n^i b_n(s+i)``, ``c_n = β1/β2^((n+1)/2)`` and ``b_n(t) = (1-β2^t)^((n+1)/2) /
(1-β1^t)`` (the bias corrections of step ``t``). ``G_n(s, k) = W_n(s) - c_n^k W_n(s+k)`` comes from one table
``W_n(s) = Σ_{i≥1} c_n^i b_n(s+i)`` per order. ``eps`` enters through the series ``1/(x + eps) = (1/x) Σ_n
(-eps/x)^n`` to the third order (the terms ``n = 1, 2`` add ``(-eps)^n · m/√v^(n+1) · G_n(s, k)``), and the
result is kept between zero and the step without ``eps``, where every skipped step's true move lies: rows whose
``√v̂`` is far above ``eps`` move as under dense Adam up to rounding, rows where it is not (gradients near
zero) stay within that bound. With ``eps = 0`` the weights equal dense Adam's to rounding (a unit test checks
1e-12 in float64). Other tensors (dense gradients) take torch's Adam unchanged.

Not for weight decay (a skipped row's gradient is then not zero), AMSGrad, nor a learning rate that changes
between steps; :class:`models.nets.lightning.RecommenderModule` uses it only where none applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

#: terms of W_n(s) = sum_i c_n^i b_n(s+i) kept: with c_n <= 0.9 / 0.999^1.5 ~ 0.9014 the rest is below 1e-20
_TERMS = 450
#: orders of the series in eps/sqrt(v-hat) kept (see the module)
_ORDERS = 3


def _ratio(beta1: float, beta2: float, n: int) -> float:
    """``c_n = beta1 / beta2^((n+1)/2)``: how the order-n term of a skipped step shrinks from one step to the next."""
    return beta1 / beta2 ** ((n + 1) / 2)


def _catch_up_tables(beta1: float, beta2: float, steps: int) -> list[torch.Tensor]:
    """``W_n(s)`` for ``s`` in ``[0, steps)``, one table per order (float64; see the module)."""
    t = np.arange(1, steps + _TERMS + 1, dtype=np.float64)
    bias1, bias2 = -np.expm1(t * math.log(beta1)), -np.expm1(t * math.log(beta2))  # 1 - beta^t
    tables = []
    for n in range(_ORDERS):
        kernel = _ratio(beta1, beta2, n) ** np.arange(1, _TERMS + 1, dtype=np.float64)
        # W_n(s) = sum_{i=1..TERMS} kernel[i-1] b_n(s+i), b_n(s+i) being b_n[s+i-1]
        b_n = bias2 ** ((n + 1) / 2) / bias1
        tables.append(torch.from_numpy(np.correlate(b_n, kernel, mode="valid")[:steps].copy()))
    return tables


class RowAdam(torch.optim.Adam):
    """:class:`torch.optim.Adam` whose sparse-gradient tensors are updated row by row (see the module)."""

    def __init__(self, params: Iterable[Any], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._tables: dict[tuple[float, float, torch.device], list[torch.Tensor]] = {}

    def _table(self, beta1: float, beta2: float, steps: int, device: torch.device) -> list[torch.Tensor]:
        """The ``W_n`` tables for at least ``steps`` steps, on ``device`` (grown by doubling)."""
        tables = self._tables.get((beta1, beta2, device))
        if tables is None or len(tables[0]) < steps:
            tables = [t.to(device) for t in _catch_up_tables(beta1, beta2, max(2 * steps, 1024))]
            self._tables[(beta1, beta2, device)] = tables
        return tables

    def _row_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["last_step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        return state

    def _catch_up(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, torch.Tensor],
                  rows: torch.Tensor | None, upto: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the zero-gradient steps after each row's last one up to step ``upto`` (inclusive) to the rows
        (all when None); return their moments as of ``upto`` (written back when ``rows`` is None)."""
        beta1, beta2 = group["betas"]
        index = slice(None) if rows is None else rows
        last = state["last_step"][index].long()  # float32 after a checkpoint's load: exact to 2^24 steps
        m, v = state["exp_avg"][index], state["exp_avg_sq"][index]
        skipped = (upto - last).clamp_(min=0)
        if bool((skipped > 0).any()):
            tables = self._table(beta1, beta2, upto + 1, p.device)
            kf = skipped.to(torch.float64)
            root = v.sqrt()
            safe = v > 0  # a row never used has no momentum
            inverse = torch.where(safe, 1 / root.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(m))
            step = torch.zeros_like(m)
            plain = torch.zeros_like(m)  # the step without eps
            for n in range(_ORDERS if group["eps"] else 1):  # G_n(s, k) = W_n(s) - c_n^k W_n(s + k)
                c = torch.tensor(_ratio(beta1, beta2, n), dtype=torch.float64)
                gain = (tables[n][last] - torch.pow(c, kf) * tables[n][upto]).to(m.dtype).unsqueeze(1)
                term = m * inverse ** (n + 1) * (-group["eps"]) ** n * gain
                plain = term if n == 0 else plain
                step += term
            if group["eps"]:  # the true step lies between zero and the step without eps
                step = torch.where(step * plain > 0, torch.minimum(step.abs(), plain.abs()) * plain.sign(),
                                   torch.zeros_like(step))
            p.data[index] -= group["lr"] * step
            m = m * torch.pow(torch.tensor(beta1, dtype=torch.float64), kf).to(m.dtype).unsqueeze(1)
            v = v * torch.pow(torch.tensor(beta2, dtype=torch.float64), kf).to(v.dtype).unsqueeze(1)
        if rows is None:
            state["exp_avg"].copy_(m)
            state["exp_avg_sq"].copy_(v)
            state["last_step"].fill_(upto)
        return m, v

    @torch.no_grad()
    def prepare(self, p: torch.Tensor, rows: torch.Tensor) -> None:
        """Bring the given rows of ``p`` up to the last step: call before a forward pass reads them."""
        state = self.state.get(p)
        if not state or "last_step" not in state:
            return
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        rows = rows.unique()
        m, v = self._catch_up(p, group, state, rows, int(state["step"]))
        state["exp_avg"][rows] = m
        state["exp_avg_sq"][rows] = v
        state["last_step"][rows] = state["step"]

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every row of the row-updated tensors up to the last step (before their weights are read)."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "last_step" in state:
                    self._catch_up(p, group, state, None, int(state["step"]))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:  # Lightning passes the forward and backward as the closure
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            sparse: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]] = []
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and p.grad.is_sparse:
                        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
                            raise ValueError("RowAdam: a sparse-gradient tensor takes neither weight decay, "
                                             "AMSGrad nor maximize")
                        sparse.append((group, p, p.grad))
                        p.grad = None  # torch's (fused) Adam takes the dense ones
            super().step()
            for group, p, grad in sparse:
                p.grad = grad
                self._row_step(p, grad, group)
        return loss

    def _row_step(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        state = self._row_state(p)
        beta1, beta2 = group["betas"]
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        step = int(state["step"]) + 1
        m, v = self._catch_up(p, group, state, rows, step - 1)
        m = m.mul_(beta1).add_(values, alpha=1 - beta1)
        v = v.mul_(beta2).addcmul_(values, values, value=1 - beta2)
        bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
        denom = (v.sqrt() / math.sqrt(bias2)).add_(group["eps"])
        p.data[rows] -= (group["lr"] / bias1) * m / denom
        state["exp_avg"][rows] = m
        state["exp_avg_sq"][rows] = v
        state["last_step"][rows] = float(step)
        state["step"].fill_(step)
