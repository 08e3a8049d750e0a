"""Two-stage: stage 1 regresses (valence, arousal, dominance); stage 2 maps AVD to a category."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from emoplug import Approach, ComponentConfig, Decoded, Targets

if TYPE_CHECKING:
    import torch

    from emoplug_approaches.statistics import AvdScaler


class TwoStageApproach(Approach):
    """Stage 1: the network predicts standardised AVD (``out_dim`` 3), trained with MSE or
    1 - CCC. Stage 2: a scikit-learn mapper, fitted on the training fold after training, maps
    standardised AVD to a category. ``oracle`` feeds the mapper the gold AVD at evaluation."""

    name: ClassVar[str] = "two_stage"
    predicts_avd: ClassVar[bool] = True

    class Config(ComponentConfig):
        loss: Literal["mse", "ccc"] = Field("mse", description="stage-1 regression loss")
        mapper: Literal["logistic", "mlp", "knn"] = Field(
            "logistic", description="stage-2 classifier from AVD to category")
        mapper_fit_on: Literal["gold", "predicted", "crossfit"] = Field(
            "gold", description="fit the mapper on gold training AVD, on stage 1's in-sample "
            "predictions of it, or (crossfit) on out-of-fold ones: crossfit_folds extra trainings")
        crossfit_folds: int = Field(5, ge=2, description="crossfit: speaker-grouped inner folds "
                                    "of the training split (at most one per speaker)")
        oracle: bool = Field(False, description="ablation: map the gold AVD at evaluation",
                             json_schema_extra={"ablation": True})
        knn_k: int = Field(15, gt=0, description="neighbours of the knn mapper")
        mlp_hidden: int = Field(32, gt=0, description="hidden units of the mlp mapper")

    def __init__(self, config: ComponentConfig | None = None):
        super().__init__(config)
        self.labels: list[str] = []
        self.scaler: AvdScaler | None = None
        self.mapper: dict[str, Any] | None = None

    def prepare(self, labels: Sequence[str], avd_scale: tuple[float, float],
                train_targets: Targets) -> int:
        from emoplug_approaches.statistics import AvdScaler

        self.labels = list(labels)
        self.scaler = AvdScaler.fit(train_targets, self.name)
        self.mapper = None
        return 3

    def loss(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        from emoplug_approaches import losses

        gold, known = losses.standardised_avd(targets.avd, self.scaler.mean.tolist(),
                                              self.scaler.std.tolist(), outputs)
        if self.config.loss == "ccc":
            return losses.ccc_loss(outputs, gold, known)
        return losses.mse(outputs, gold, known)

    def fit_uses_outputs(self) -> bool:
        return self.config.mapper_fit_on != "gold"

    def out_of_fold_splits(self) -> int:
        return self.config.crossfit_folds if self.config.mapper_fit_on == "crossfit" else 0

    def fit(self, train_outputs: torch.Tensor | None, train_targets: Targets) -> None:
        """Fit the stage-2 mapper on the training fold's labelled rows."""
        from emoplug_approaches.mappers import fit_mapper
        from emoplug_approaches.statistics import labelled_avd_rows, to_numpy

        labels = to_numpy(train_targets.labels).astype(int)
        if self.config.mapper_fit_on == "gold":
            points = self.scaler.standardise(to_numpy(train_targets.avd).astype(float))
            rows = (labels >= 0) & labelled_avd_rows(points)
        else:
            if train_outputs is None:
                raise ValueError(f"two_stage: mapper_fit_on {self.config.mapper_fit_on!r} "
                                 "needs the training set's outputs")
            points = to_numpy(train_outputs).astype(float)
            rows = labels >= 0
        self.mapper = fit_mapper(self.config.mapper, points[rows], labels[rows],
                                 knn_k=self.config.knn_k, mlp_hidden=self.config.mlp_hidden)

    def decode(self, outputs: torch.Tensor, targets: Targets | None = None) -> Decoded:
        """Labels and probabilities from the mapper; ``avd`` = stage-1 predictions on the
        corpus scale. With ``oracle``, rows whose gold AVD is known are mapped from it."""
        import numpy as np

        from emoplug_approaches.mappers import predict_proba
        from emoplug_approaches.statistics import labelled_avd_rows, to_numpy

        if self.mapper is None:
            raise RuntimeError("two_stage: decode() called before fit() or load_state_dict()")
        predicted = to_numpy(outputs).astype(float)
        points = predicted.copy()
        if self.config.oracle and targets is not None:
            gold = self.scaler.standardise(to_numpy(targets.avd).astype(float))
            known = labelled_avd_rows(gold)
            points[known] = gold[known]
        classes = np.asarray(self.mapper["classes"])
        fitted = predict_proba(self.mapper, points)
        probs = np.zeros((len(points), len(self.labels)))
        probs[:, classes] = fitted
        return Decoded(labels=classes[fitted.argmax(axis=1)], probs=probs,
                       avd=self.scaler.destandardise(predicted))

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "avd": self.scaler.state_dict(), "mapper": self.mapper}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from emoplug_approaches.statistics import AvdScaler

        self.labels = list(state["labels"])
        self.scaler = AvdScaler.from_state(state["avd"])
        self.mapper = state["mapper"]
