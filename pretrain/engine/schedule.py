"""Learning-rate schedules from fvcore's param schedulers, evaluated per step."""

from __future__ import annotations

from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)


def build_lr_schedule(cfg, steps_per_epoch: int) -> ParamScheduler:
    """Multiplier of the base lr as a function of training progress in [0, 1).

    Cosine (MoCo v2) or steps at ``SOLVER.STEPS`` epochs (v1), after an optional linear warmup
    over ``SOLVER.WARMUP_EPOCHS``.
    """
    epochs = cfg.SOLVER.EPOCHS
    if cfg.SOLVER.SCHEDULE == "cosine":
        main: ParamScheduler = CosineParamScheduler(1.0, 0.0)
    else:
        milestones = [int(e * steps_per_epoch) for e in cfg.SOLVER.STEPS if e < epochs]
        values = [cfg.SOLVER.GAMMA**i for i in range(len(milestones) + 1)]
        main = MultiStepParamScheduler(
            values, num_updates=epochs * steps_per_epoch, milestones=milestones
        )
    warmup = cfg.SOLVER.WARMUP_EPOCHS / epochs
    if warmup <= 0:
        return main
    if warmup >= 1:
        raise ValueError(
            f"SOLVER.WARMUP_EPOCHS = {cfg.SOLVER.WARMUP_EPOCHS} must be below "
            f"SOLVER.EPOCHS = {epochs}"
        )
    return CompositeParamScheduler(
        [LinearParamScheduler(0.001, 1.0), main],
        lengths=[warmup, 1 - warmup],
        interval_scaling=["rescaled", "fixed"],
    )
