"""Ray Tune's MLflow callback, with names MLflow accepts (see ``longtail.tracking``)."""

from __future__ import annotations

from ray.air.integrations.mlflow import MLflowLoggerCallback

from longtail.tracking import numeric, quiet


class TrialTracker(MLflowLoggerCallback):
    """One MLflow run per trial: its params and every report (each epoch, then the final valid/test
    metrics), only the finite numbers, ``@`` spelled ``_at_``."""

    def __init__(self, uri: str, experiment: str) -> None:
        quiet()
        super().__init__(tracking_uri=uri, experiment_name=experiment, save_artifact=False)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        step = result.get("training_iteration", iteration)
        super().log_trial_result(iteration, trial, {**numeric(result), "training_iteration": step})
