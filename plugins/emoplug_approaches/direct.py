"""Direct classification: one logit per category, cross-entropy, argmax."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from emoplug import Approach, ComponentConfig, Decoded, Targets

if TYPE_CHECKING:
    import torch


class DirectApproach(Approach):
    """``out_dim`` = number of classes; cross-entropy (rows labelled -1 ignored); softmax."""

    name: ClassVar[str] = "direct"

    class Config(ComponentConfig):
        class_weights: Literal["none", "balanced"] = Field(
            "none", description="balanced: weight classes by inverse training frequency")

    def __init__(self, config: ComponentConfig | None = None):
        super().__init__(config)
        self.labels: list[str] = []
        self.weights: list[float] | None = None

    def prepare(self, labels: Sequence[str], avd_scale: tuple[float, float],
                train_targets: Targets) -> int:
        from emoplug_approaches.statistics import class_weights

        self.labels = list(labels)
        self.weights = class_weights(self.config.class_weights, train_targets, len(labels))
        return len(self.labels)

    def loss(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        from emoplug_approaches.losses import cross_entropy

        return cross_entropy(outputs, targets.labels, self.weights)

    def decode(self, outputs: torch.Tensor, targets: Targets | None = None) -> Decoded:
        from emoplug_approaches.statistics import softmax, to_numpy

        probs = softmax(to_numpy(outputs).astype(float))
        return Decoded(labels=probs.argmax(axis=1), probs=probs)

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "class_weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = list(state["labels"])
        self.weights = state["class_weights"]
