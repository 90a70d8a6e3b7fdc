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
from distillab.objectives.attention import take_captured_qk
from distillab.objectives.cross_tokenizer import CrossTokenizerInputs, head_reproduces_logits, teacher_head
from distillab.objectives.objective import Objective
from distillab.objectives.terms import TermInputs, hard_label_ce
from distillab.precision import current as current_precision
from distillab.precision import module_device_type
from distillab.training.on_policy import OnPolicy
from distillab.training.sharding import is_sharded, shard_model

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
        self._head_checked: bool | None = None  # see _head_reproduces_logits
        self.on_policy = on_policy if on_policy is not None and on_policy.enabled else None
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
        aligned = None
        if self.aligner is not None and self.teacher is not None:  # the teacher reads its own tokens
            aligned = self.aligner(batch["input_ids"], batch["attention_mask"])
        # Position t predicts token t+1. Targets are shifted left and the last position gets -100, so
        # logits keep their full, contiguous (B, T, V) shape: no copies of vocabulary-sized tensors.
        labels = batch["labels"]
        targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)
        mask = (targets != -100) & batch["attention_mask"].bool()
        mask[:, :-1] &= batch["attention_mask"][:, 1:].bool()
        model_inputs = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "output_hidden_states": self.objective.needs_hidden_states,
        }
        capture = self.objective.needs_attentions  # q/k kept by objectives/attention.py's kernel
        student_out = self.student(**model_inputs)
        student_qk = take_captured_qk(self.student) if capture else None
        teacher_out, teacher_qk, cross = None, None, None
        if aligned is not None and self.objective.needs_teacher:  # distill.check_cross_tokenizer_teacher
            with torch.no_grad(), current_precision().autocast(module_device_type(self.teacher)):
                hidden = self.teacher.base_model(
                    input_ids=aligned.teacher_ids, attention_mask=aligned.teacher_mask
                ).last_hidden_state
            cross = CrossTokenizerInputs(aligned.pairs, hidden, teacher_head(self.teacher))
        elif self.teacher is not None and self.objective.needs_teacher:
            # The frozen teacher runs in the run's precision even when the student trains in float32
            # (precision=auto with trainer.precision=32-true): its bf16 forward moved one KD step's
            # gradient by a cosine of 1e-5 (bench/bf16_numerics.py), the student's own by far more.
            # Without a term that reads its full logits, the teacher stops at its final hidden states:
            # kd forms the logits a chunk of positions at a time (a 262k vocabulary never exists whole).
            # (FSDP: the sharded root module's forward gathers the weights, so the whole model runs.)
            whole = (
                self.objective.needs_teacher_logits
                or is_sharded(self.teacher)
                or not self._head_reproduces_logits(batch["input_ids"])
            )
            teacher = self.teacher if whole else self.teacher.base_model
            with torch.no_grad(), current_precision().autocast(module_device_type(self.teacher)):
                teacher_out = teacher(**model_inputs)
            teacher_qk = take_captured_qk(self.teacher) if capture else None
        student_logits = student_out.logits
        inputs = TermInputs(
            student_logits=student_logits,
            targets=targets,
            mask=mask,
            teacher_logits=getattr(teacher_out, "logits", None),
            teacher_final_hidden=getattr(teacher_out, "last_hidden_state", None),
            teacher_head=teacher_head(self.teacher) if teacher_out is not None else None,
            student_hidden=student_out.hidden_states,
            teacher_hidden=teacher_out.hidden_states if teacher_out is not None else None,
            student_qk=student_qk,
            teacher_qk=teacher_qk,
            teacher_topk_logp=batch.get("teacher_topk_logp"),
            teacher_topk_ids=batch.get("teacher_topk_ids"),
            teacher_tail_logp=batch.get("teacher_tail_logp"),
            cross=cross,
            on_policy=on_policy,
        )
        loss, terms = self.objective(inputs)
        if split == "train" and not torch.isfinite(loss):
            raise NonFiniteLoss(self._non_finite_message(loss, terms))
        n = batch["input_ids"].shape[0]
        on_step = split == "train"
        sync = not on_step  # epoch-level (validation) values are averaged over DDP ranks
        self.log(
            f"{split}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=sync, batch_size=n, sync_dist=sync
        )
        for name, value in terms.items():
            self.log(
                f"{split}/loss_{name}", value, on_step=on_step, on_epoch=sync, batch_size=n, sync_dist=sync
            )
        if split == "val":  # held-out CE of the student whatever the objective, for val/ppl
            ce = hard_label_ce(student_logits, targets, mask)
            tokens = int(mask.sum())
            self._val_nll, self._val_tokens = self._val_nll + float(ce) * tokens, self._val_tokens + tokens
        return loss

    def _head_reproduces_logits(self, input_ids: torch.Tensor) -> bool:
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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.trained_tokens = int(checkpoint.get("distillab_trained_tokens", 0))
        self.generation |= checkpoint.get("distillab_generation", {})

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
