"""DistillModule: one LightningModule for distillation, post-pruning healing and layer-wise distillation.

The student trains; the teacher is frozen (eval mode, no gradients) and deliberately *not* a
registered submodule, so it never enters ``state_dict``, checkpoints, hparams or the optimizer, and
Lightning's ``train()`` calls cannot flip it out of eval mode.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from transformers import PreTrainedModel

from distillab.data.token_alignment import TokenAligner
from distillab.errors import DistillabError
from distillab.objectives.cross_tokenizer import head_reproduces_logits
from distillab.objectives.objective import Objective
from distillab.objectives.signals import MASK, STUDENT_LOGITS, TARGETS
from distillab.objectives.terms import hard_label_ce
from distillab.training.on_policy import OnPolicy
from distillab.training.sharding import is_sharded, shard_model
from distillab.training.signal_providers import compute_signals
from distillab.versions import library_versions, version_drift

log = logging.getLogger(__name__)


class NonFiniteLoss(DistillabError):
    """A NaN or inf training loss: the run stops at once, naming the term and the step."""


class DistillModule(L.LightningModule):
    def __init__(
        self,
        student: PreTrainedModel,
        objective: Objective,
        teacher: PreTrainedModel | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        aligner: TokenAligner | None = None,
        on_policy: OnPolicy | None = None,
        student_tokenizer=None,
    ):
        """``aligner``: the teacher reads another tokenizer; each batch is encoded for it too.
        ``on_policy``: some training batches are the student's own samples (needs ``student_tokenizer``)."""
        super().__init__()
        self.aligner = aligner
        self._head_checked: bool | None = None  # see head_reproduces_logits
        self.on_policy = on_policy if on_policy is not None and on_policy.enabled else None
        self.flops_per_token: dict[str, float] | None = None  # set by training.fit (cost.py)
        # tokens trained on by this rank (checkpointed): an on-policy batch trains on its sampled
        # tokens only, not on a whole block, so steps x block size would overstate the budget
        self.trained_tokens = 0
        # on-policy cost (checkpointed; summed over ranks into results.json's "on_policy"): the
        # per-step log samples every log_every_n_steps, so an equal-wall-time comparison needs totals
        self.generation = {"sampled_steps": 0, "generated_tokens": 0, "generation_seconds": 0.0}
        if self.on_policy is not None:
            pad = student_tokenizer.pad_token_id
            self._sample_ids = (
                pad if pad is not None else student_tokenizer.eos_token_id,
                student_tokenizer.eos_token_id,
            )
        self.student = student
        self.objective = objective
        self._teacher = [freeze(teacher)] if teacher is not None else []  # a list hides it from nn.Module
        self.optimizer_factory = optimizer or (lambda params: torch.optim.AdamW(params, lr=1e-4))
        self.scheduler_factory = scheduler
        self.objective_summary = objective.setup(student, teacher)
        for line in self.objective_summary:  # layer maps printed once at start
            log.info("objective term %s", line)

    @property
    def teacher(self) -> PreTrainedModel | None:
        return self._teacher[0] if self._teacher else None

    def setup(self, stage: str) -> None:
        # Not a submodule, so Lightning does not move it for us; under FSDP it is sharded instead.
        if self.teacher is not None and not self._model_parallel():
            self.teacher.to(self.device).eval()

    def _model_parallel(self) -> bool:
        from lightning.pytorch.strategies import ModelParallelStrategy

        return self._trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy)

    def configure_model(self) -> None:
        """``trainer=fsdp`` (ModelParallelStrategy): shard student and teacher over the data-parallel mesh."""
        if self.device_mesh is None or is_sharded(self.student):
            return
        mesh = self.device_mesh["data_parallel"]
        shard_model(self.student, mesh)
        if self.teacher is not None:
            shard_model(self.teacher, mesh)

    def on_fit_start(self) -> None:
        # Loaded models come back in eval mode and Lightning keeps the modes it finds: the student
        # must train with its dropout (if any) on.
        self.student.train()

    def _step(self, batch: dict[str, torch.Tensor], split: str, on_policy: bool = False) -> torch.Tensor:
        """The objective on one batch: exactly the signals its terms read (training/signal_providers.py)."""
        kind = "on_policy" if on_policy else split
        wanted = self.objective.reads(kind) | {MASK}  # the mask also weighs the logged values
        if split == "val":  # held-out CE of the student whatever the objective, for val/ppl
            wanted |= {STUDENT_LOGITS, TARGETS}
        inputs = compute_signals(self, batch, kind, wanted)
        loss, terms = self.objective(inputs)
        if split == "train" and not torch.isfinite(loss):
            raise NonFiniteLoss(self._non_finite_message(loss, terms))
        self._log_losses(split, loss, terms, batch_size=batch["input_ids"].shape[0])
        if split == "val":
            ce = hard_label_ce(inputs.student_logits, inputs.targets, inputs.mask)
            tokens = int(inputs.mask.sum())
            self._val_nll, self._val_tokens = self._val_nll + float(ce) * tokens, self._val_tokens + tokens
        return loss

    def _log_losses(self, split: str, loss: torch.Tensor, terms: dict[str, torch.Tensor], batch_size: int):
        on_step = split == "train"
        sync = not on_step  # epoch-level (validation) values are averaged over DDP ranks
        values = {f"{split}/loss": loss} | {f"{split}/loss_{name}": value for name, value in terms.items()}
        for key, value in values.items():
            self.log(
                key,
                value,
                prog_bar=key == f"{split}/loss",
                on_step=on_step,
                on_epoch=sync,
                batch_size=batch_size,
                sync_dist=sync,
            )

    def head_reproduces_logits(self, input_ids: torch.Tensor) -> bool:
        """Checked once per run (see ``head_reproduces_logits``): if not, kd runs the whole teacher."""
        if self._head_checked is None:
            self._head_checked = head_reproduces_logits(self.teacher, input_ids)
            if not self._head_checked:
                log.warning("teacher: logits are not head(final hidden state); kd runs the whole teacher")
        return self._head_checked

    def _non_finite_message(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> str:
        bad = [f"train/loss_{k} = {float(v.detach())}" for k, v in terms.items() if not torch.isfinite(v)]
        callback = getattr(self.trainer, "checkpoint_callback", None)
        where = f"; the last good checkpoint stays in {callback.dirpath}" if callback is not None else ""
        return (
            f"{', '.join(bad) or f'train/loss = {float(loss.detach())}'} at step {self.global_step}: training "
            f"stopped{where}. Lower optimizer.lr, raise trainer.gradient_clip_val or check the data"
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.on_policy is None:
            self.trained_tokens += batch["input_ids"].numel()
            return self._step(batch, "train")
        sampled = self.on_policy.chosen(self.global_step)
        if not sampled:
            self.trained_tokens += batch["input_ids"].numel()
        if sampled:  # GKD: this batch is the student's own continuations of prompts cut from it
            batch, stats = self.on_policy.sample(self.student, batch, *self._sample_ids)
            self.trained_tokens += int(stats["generated_tokens"])
            self.generation["sampled_steps"] += 1
            self.generation["generated_tokens"] += int(stats["generated_tokens"])
            self.generation["generation_seconds"] += float(stats["generation_seconds"])
            for name, value in stats.items():
                self.log(
                    f"train/{name}",
                    value,
                    on_step=True,
                    on_epoch=False,
                    batch_size=batch["input_ids"].shape[0],
                )
        self.log(
            "train/on_policy",
            float(sampled),
            on_step=True,
            on_epoch=False,
            batch_size=batch["input_ids"].shape[0],
        )
        return self._step(batch, "train", on_policy=sampled)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["distillab_trained_tokens"] = self.trained_tokens
        checkpoint["distillab_generation"] = dict(self.generation)
        checkpoint["distillab_versions"] = library_versions()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.trained_tokens = int(checkpoint.get("distillab_trained_tokens", 0))
        self.generation |= checkpoint.get("distillab_generation", {})
        drift = version_drift({"versions": checkpoint.get("distillab_versions")})
        if drift:  # the resume still runs: an exact resume is promised for the same versions only
            log.warning(
                "resuming a checkpoint written with other library versions (%s): the run will not be "
                "bit-identical to an uninterrupted one",
                ", ".join(drift),
            )

    def on_fit_end(self) -> None:
        self.objective.teardown(self.student, self.teacher)  # e.g. restore the attention kernel

    def on_validation_epoch_start(self) -> None:
        self._val_nll, self._val_tokens = 0.0, 0

    def on_validation_epoch_end(self) -> None:
        # token-weighted over the whole val set (all DDP ranks), not a mean of batch means
        totals = torch.tensor(
            [self._val_nll, float(self._val_tokens)], dtype=torch.float64, device=self.device
        )
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if totals[1] > 0:
            nll = float(totals[0] / totals[1])
            self.log("val/ce", nll)
            self.log("val/ppl", math.exp(min(nll, 50.0)))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Lightning refuses to clip for a fused optimizer (``optimizer.fused``), because under fp16's
        GradScaler such an optimizer unscales the gradients itself. Without a scaler (float32, bf16)
        there is nothing to unscale: the gradients are clipped here, as Lightning would."""
        fused = getattr(optimizer, "_step_supports_amp_scaling", False)
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        if gradient_clip_val and fused and precision.startswith("16"):
            raise DistillabError(
                f"optimizer.fused: true cannot clip gradients under trainer.precision={precision} (its "
                "GradScaler unscales inside the fused step); set optimizer.fused=false"
            )
        if not gradient_clip_val or not fused:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]  # student + any learned objective params
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        # Schedules that decay to the end of training take its length; constant ones take none.
        accepts = inspect.signature(self.scheduler_factory).parameters
        length = {"num_training_steps": int(self.trainer.estimated_stepping_batches)}
        scheduler = self.scheduler_factory(optimizer, **(length if "num_training_steps" in accepts else {}))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode and no gradients, for good."""
    model.eval()
    model.requires_grad_(False)
    return model
