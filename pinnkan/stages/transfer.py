"""`pinnkan transfer`: Hydra entry point of the transfer stage."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pinnkan.run import runner
from pinnkan.stages.entry import run_stage
from pinnkan.stages.schema import register

register()


@hydra.main(version_base="1.3", config_path="pkg://pinnkan.conf", config_name="transfer")
def main(cfg: DictConfig) -> float | None:
    return run_stage(cfg, runner.transfer)
