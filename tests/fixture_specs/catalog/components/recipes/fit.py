"""Training recipes of the fixture catalog."""

from __future__ import annotations

from typing import Any

from components.runtime import RunContext
from components.registry import recipe_registry


@recipe_registry.register("fit")
def fit(
    ctx: RunContext,
    /,
    *,
    epochs: int = 2,
    lr: float = 0.1,
    schedule: tuple[float, ...] = (1.0,),
) -> dict[str, Any]:
    """Fit the toy model's weights to the labels with plain gradient steps; resumable."""
    checkpoint = ctx.load_checkpoint("fit")
    start = checkpoint["step"] if checkpoint else 0
    ctx.model.weights = list(checkpoint["weights"]) if checkpoint else ctx.model.weights
    total = epochs * len(ctx.data)
    if ctx.options.steps is not None:
        total = min(total, start + ctx.options.steps)
    loss = 0.0
    for step in range(start, total):
        signal, label = ctx.data[step % len(ctx.data)]
        outputs = ctx.model.forward(ctx.transform(signal))
        errors = [out - label for out in outputs]
        loss = sum(e * e for e in errors) / len(errors)
        ctx.model.weights = [
            w - lr * schedule[step % len(schedule)] * e * 0.01
            for w, e in zip(ctx.model.weights, errors)
        ]
    ctx.save_checkpoint("fit", {"step": total, "weights": ctx.model.weights})
    ctx.state["fit_steps"] = total
    return {"loss": loss, "steps": total, "resumed_from": start}


@recipe_registry.register("evaluate")
def evaluate(ctx: RunContext, /, *, split: str = "test") -> dict[str, Any]:
    """Report how many steps the fit took (reads state handed over by `fit`)."""
    return {"split": split, "fit_steps": ctx.state.get("fit_steps", 0)}
