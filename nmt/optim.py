"""Optimizers and learning-rate schedules, chosen by ``train.optimizer`` and ``train.lr_schedule``."""

from __future__ import annotations

import logging
import math

import torch

from nmt.config import OptimConfig
from nmt.errors import SettingError, check_choice

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adadelta")
LR_SCHEDULES = ("constant", "inverse_sqrt", "plateau")


def check_optim_settings(cfg: OptimConfig) -> None:
    """Refuse an optimizer or schedule this module cannot build, naming the setting."""
    check_choice("train.optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("train.lr_schedule", cfg.lr_schedule, LR_SCHEDULES)
    if cfg.optimizer == "adam" and len(cfg.betas) != 2:
        raise SettingError(f"train.betas={list(cfg.betas)}: Adam takes two, e.g. train.betas=[0.9,0.98]")
    if cfg.lr_schedule == "inverse_sqrt" and not cfg.warmup_steps:
        raise SettingError("train.lr_schedule=inverse_sqrt needs train.warmup_steps > 0 (it decays after warmup)")


class LearningRateSchedule:
    """constant | inverse_sqrt (linear warmup, then decay with 1/sqrt(step)) | plateau.

    ``plateau`` multiplies the rate by ``lr_decay`` after ``lr_patience`` validations
    without improvement, down to ``min_lr``. All three may have a linear warmup.
    """

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer):
        check_optim_settings(cfg)
        self.cfg, self.optimizer = cfg, optimizer
        self.base_lr = cfg.lr
        self.bad_validations = 0

    def step(self, step: int) -> float:
        lr, warmup = self.base_lr, self.cfg.warmup_steps
        if warmup and step <= warmup:
            lr = self.base_lr * step / warmup
        elif self.cfg.lr_schedule == "inverse_sqrt" and warmup:
            lr = self.base_lr * math.sqrt(warmup / step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def validated(self, improved: bool) -> None:
        if self.cfg.lr_schedule != "plateau":
            return
        self.bad_validations = 0 if improved else self.bad_validations + 1
        if self.bad_validations > self.cfg.lr_patience:
            self.base_lr = max(self.cfg.min_lr, self.base_lr * self.cfg.lr_decay)
            self.bad_validations = 0
            log.info("validation stalled: learning rate now %.3g", self.base_lr)

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        self.base_lr, self.bad_validations = state["base_lr"], state["bad_validations"]


def build_optimizer(cfg: OptimConfig, params, device: torch.device | None = None) -> torch.optim.Optimizer:
    """Adam is fused (one kernel for all parameters) on CUDA and CPU: fewer launches, and
    it can skip a step on the device (``found_inf``), which ``Trainer.train_step`` uses."""
    check_optim_settings(cfg)
    if cfg.optimizer == "adam":
        fused = device is not None and device.type in ("cuda", "cpu")
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused or None
        )
    return torch.optim.Adadelta(params, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps, weight_decay=cfg.weight_decay)


def restore_optimizer_kind(optimizer: torch.optim.Optimizer, fused: list) -> None:
    """After ``load_state_dict``: keep the implementation ``build_optimizer`` chose.

    ``load_state_dict`` takes ``fused`` / ``foreach`` from the saved param groups, so a
    checkpoint from a non-fused optimizer (older versions, or another device) would
    bring the host-checked path back. Fused Adam keeps its step counts as float32 on
    the parameters' device; the plain one as CPU tensors.
    """
    for group, want in zip(optimizer.param_groups, fused):
        if group.get("fused") == want:
            continue
        group["fused"], group["foreach"] = want, None
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(param.device if want else "cpu", torch.float32)
        log.info("optimizer state loaded into %s Adam", "fused" if want else "plain")


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours ``optimizer.found_inf`` (fused Adam does: it then
    leaves weights, moments and step count as they were, without the host looking)."""
    return isinstance(optimizer, torch.optim.Adam) and all(g.get("fused") for g in optimizer.param_groups)
