"""Homotopy inside one run (`transfer.homotopy=K`): the member's parameters move from the
source's to the target's in legs while one set of trainable tensors trains (LM), each leg to
the tolerance; the result is still one adapter of the source at cr's size.

The path is p(s) = p_source + s·(p_target − p_source), s ∈ [0, 1]. The first leg ends at
s = 1/K. A leg is done when its held-out loss meets `train.tol` or LM has converged on it; then
the next leg is 1.5× longer (to s = 1 at most). A leg that stalls (`transfer.leg_steps`
accepted steps without being done) is shortened: it ends halfway between the last done point
and its end instead. Below `MIN_STEP` a stalled leg is accepted as it is. The last leg, at the
target, trains like any run (to the tolerance, convergence or the budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pinnkan.pinn.loss import PinnLoss

MIN_STEP = 1.0 / 64  # the shortest leg, as a fraction of the path
GROW = 1.5  # a leg done: the next one this much longer


def point(source: dict[str, float], target: dict[str, float], s: float) -> dict[str, float]:
    """The parameters at s on the straight path from `source` to `target` (keys of target)."""
    start = {k: float(source.get(k, v)) for k, v in target.items()}
    return {k: start[k] + s * (float(v) - start[k]) for k, v in target.items()}


@dataclass
class HomotopyPath:
    """Where a homotopy run is on its path, and the loss of any point of it."""

    make_loss: Callable[[float], PinnLoss]  # s -> the loss of the member at p(s)
    legs: int  # K: the first leg ends at s = 1/K
    leg_steps: int  # accepted steps after which a leg that is not done has stalled
    s: float = 0.0  # the end of the current leg (set by `start`)
    done: float = 0.0  # the last point reached (a leg's end that was done)
    step: float = 0.0  # the current leg's length
    in_leg: int = 0  # accepted steps in the current leg

    def start(self) -> None:
        self.done, self.step, self.in_leg = 0.0, 1.0 / self.legs, 0
        self.s = min(1.0, self.step)

    @property
    def at_target(self) -> bool:
        return self.s >= 1.0

    def leg_over(self, met: bool, converged: bool) -> bool:
        """Whether the current (not last) leg ends now: done (tolerance or convergence) or
        stalled after `leg_steps` accepted steps."""
        return not self.at_target and (met or converged or self.in_leg >= self.leg_steps)

    def advance(self, met: bool, converged: bool) -> None:
        """The next leg after the current one ended: longer after a done leg, the same leg
        shortened after a stalled one (accepted as is below MIN_STEP)."""
        if met or converged or self.step / 2 < MIN_STEP:
            self.done = self.s
            self.step = min(self.step * (GROW if (met or converged) else 1.0), 1.0 - self.done)
        else:
            self.step /= 2
        self.s = min(1.0, self.done + self.step)
        self.in_leg = 0

    def loss(self) -> PinnLoss:
        return self.make_loss(self.s)

    def state_dict(self) -> dict[str, Any]:
        return {"s": self.s, "done": self.done, "step": self.step, "in_leg": self.in_leg}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.s, self.done = float(state["s"]), float(state["done"])
        self.step, self.in_leg = float(state["step"]), int(state["in_leg"])
