"""Joint (multi-task): category logits and standardised AVD from one head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from emoplug import Approach, ComponentConfig, Decoded, Targets

if TYPE_CHECKING:
    import torch

    from emoplug_approaches.statistics import AvdScaler


class JointApproach(Approach):
    """``out_dim`` = classes + 3; loss = cross-entropy + ``avd_weight`` * MSE on standardised
    AVD (rows without a label or without AVD are masked out of their term)."""

    name: ClassVar[str] = "joint"
    predicts_avd: ClassVar[bool] = True

    class Config(ComponentConfig):
        avd_weight: float = Field(1.0, ge=0.0, description="weight of the AVD regression loss")

    def __init__(self, config: ComponentConfig | None = None):
        super().__init__(config)
        self.labels: list[str] = []
        self.scaler: AvdScaler | None = None

    def prepare(self, labels: Sequence[str], avd_scale: tuple[float, float],
                train_targets: Targets) -> int:
        from emoplug_approaches.statistics import AvdScaler

        self.labels = list(labels)
        self.scaler = AvdScaler.fit(train_targets, self.name)
        return len(self.labels) + 3

    def loss(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        from emoplug_approaches import losses

        n = len(self.labels)
        gold, known = losses.standardised_avd(targets.avd, self.scaler.mean.tolist(),
                                              self.scaler.std.tolist(), outputs)
        return (losses.cross_entropy(outputs[:, :n], targets.labels)
                + self.config.avd_weight * losses.mse(outputs[:, n:], gold, known))

    def decode(self, outputs: torch.Tensor, targets: Targets | None = None) -> Decoded:
        from emoplug_approaches.statistics import softmax, to_numpy

        values = to_numpy(outputs).astype(float)
        n = len(self.labels)
        probs = softmax(values[:, :n])
        return Decoded(labels=probs.argmax(axis=1), probs=probs,
                       avd=self.scaler.destandardise(values[:, n:]))

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "avd": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from emoplug_approaches.statistics import AvdScaler

        self.labels = list(state["labels"])
        self.scaler = AvdScaler.from_state(state["avd"])
