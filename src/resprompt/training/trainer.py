"""The training loop: AdamW on prompt / network / head, evaluation, best-prompt selection, resume.

Built on Accelerate, so ``accelerate launch`` runs it on several processes (batches are split
across them: ``--batch-size`` is the global batch). Evaluation runs on the main process; its
score is broadcast so every process takes the same early-stopping decision. Metrics go to
``metrics.jsonl`` and to Accelerate's trackers (``--report-to tensorboard,wandb,mlflow,...``).

The loop is five named steps over one ``Run``: ``setup`` (everything a user can get wrong is
checked before the run folder is touched), ``optimizer_step`` (one step over its accumulated
micro-batches), ``evaluate_and_select`` (score, keep the best folded prompt, early stopping),
``checkpoint`` and ``finish`` (final scores, ``results.json``). The task is any ``TrainTask``
(``tasks.prepared``): classification here, generation with the same loop.

Run folder: see ``training.runfolder``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .. import faults
from ..io import PromptFileError, write_json
from ..model import ResidualPromptModel
from ..prompt.config import ResidualPromptConfig
from ..tasks.features import length_grouped_order
from ..tasks.prepared import TrainTask
from . import runfolder
from .checkpoint import STATE_FILE, load_checkpoint, save_checkpoint
from .runconfig import ConfigError, TrainConfig
from .setup import prepare_backbone, prepare_task

log = logging.getLogger(__name__)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint (``trainer_state.json``)."""

    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0
    best_score: float = -math.inf
    best_step: int = -1
    best_metrics: dict | None = None
    evals_since_best: int = 0
    elapsed: float = 0.0
    stopped_early: bool = False
    initial_metrics: dict | None = None  # the untrained prompt's scores (--eval-at-start)


@dataclass
class Run:
    """Everything one training run holds."""

    cfg: TrainConfig
    prompt_cfg: ResidualPromptConfig
    out: Path
    accelerator: Any
    task: TrainTask
    model: Any  # as prepared by Accelerate (possibly wrapped)
    core: Any  # the unwrapped model: ResidualPromptModel or a baseline
    family: str
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int
    micro_per_epoch: int
    log: runfolder.MetricsLog
    prog: Progress = field(default_factory=Progress)
    segment_start: float = field(default_factory=time.perf_counter)
    train_time: float = 0.0
    train_tokens: int = 0
    lock: runfolder.RunLock | None = None
    step_lr: float = 0.0  # the prompt group's learning rate the last step used (logged with it)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def make_optimizer(model: ResidualPromptModel, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = model.parameter_groups()
    settings = {
        "prompt": (cfg.lr, cfg.weight_decay),
        "network": (cfg.lr_network if cfg.lr_network is not None else cfg.lr, cfg.weight_decay_network),
        "head": (cfg.lr_head, cfg.weight_decay_head),
    }
    param_groups = [
        {"params": groups[name], "lr": lr, "weight_decay": wd, "name": name}
        for name, (lr, wd) in settings.items() if groups[name]
    ]
    return torch.optim.AdamW(param_groups)


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    warm, total = cfg.warmup_steps, max(total_steps, 1)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)



# ----------------------------------------------------------------------------------- setup
def _accelerator(cfg: TrainConfig, out: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    trackers = cfg.trackers()
    if trackers:
        from accelerate.tracking import get_available_trackers

        available = {str(t) for t in get_available_trackers()}
        missing = [t for t in trackers if t != "all" and t not in available]
        if missing:
            raise ConfigError(f"--report-to {','.join(missing)}: not installed (pip install {' '.join(missing)})")
    # cpu=True when there is no accelerator: Accelerate then runs torchrun / `accelerate launch`
    # processes as a gloo process group (MULTI_CPU) instead of silently training N copies.
    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    # Accelerate keeps a process-wide singleton; forget the previous run's mixed precision so
    # several runs (benchmark grids, tests) can share one process. The process group is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=no_gpu, log_with=trackers or None,
                       project_dir=str(out), dataloader_config=DataLoaderConfiguration(split_batches=True))


def _build(cfg: TrainConfig, prompt_cfg: ResidualPromptConfig, build_model, task):
    """The backbone, the model and the prepared task (data read and tokenised)."""
    backbone, tokenizer, family, definition = prepare_backbone(cfg)
    model = (build_model or _default_model)(backbone, prompt_cfg, tokenizer, family)
    max_len = min(cfg.max_length, model.max_text_length)
    if max_len < 1:
        raise ConfigError(f"prompt-length={prompt_cfg.num_tokens} leaves no room for text: the backbone takes "
                          f"{model.max_text_length + prompt_cfg.num_tokens} positions")
    task = task or prepare_task(cfg, definition, family, tokenizer, max_len)
    if hasattr(model, "task"):
        model.task = task.metadata()
    return model, family, task


def setup(cfg: TrainConfig, prompt_cfg: ResidualPromptConfig, build_model=None, task=None) -> Run:
    """Checks everything, then creates (or reopens, with ``--resume``) the run folder; returns the Run."""
    out = runfolder.check_output(cfg)
    lock = runfolder.RunLock(out)
    if _is_main_process():
        lock.acquire()
    try:
        if cfg.resume:
            runfolder.check_resume(out)
        return _setup(cfg, prompt_cfg, build_model, task, out, lock)
    except BaseException:
        lock.release()
        raise


def _is_main_process() -> bool:
    """Process rank 0 (``torchrun`` / ``accelerate launch`` set RANK), before Accelerate starts."""
    return os.environ.get("RANK", "0") == "0"


def _setup(cfg, prompt_cfg, build_model, task, out: Path, lock) -> Run:
    from accelerate.utils import set_seed

    settings = runfolder.run_settings(cfg, prompt_cfg)
    if cfg.resume:
        runfolder.check_resume_settings(out, settings, runfolder.setting_defaults(cfg, prompt_cfg))
    accelerator = _accelerator(cfg, out)
    if cfg.batch_size % accelerator.num_processes:  # split_batches cuts each batch across processes
        raise ConfigError(f"batch-size={cfg.batch_size} does not split evenly across {accelerator.num_processes} "
                          "processes: pick a multiple of the process count")
    set_seed(cfg.seed)
    model, family, task = _build(cfg, prompt_cfg, build_model, task)
    micro_per_epoch = math.ceil(len(task.train_features) / cfg.batch_size)
    total_steps = cfg.max_steps or cfg.epochs * math.ceil(micro_per_epoch / cfg.grad_accum)
    if cfg.warmup_steps > total_steps:  # checked before the run folder is touched
        raise ConfigError(f"warmup-steps={cfg.warmup_steps} is more than the run's {total_steps} steps: the "
                          "learning rate would never reach --lr")
    if accelerator.is_main_process:
        runfolder.create(out, cfg, {**settings, "family": family, "train_data": getattr(task, "train_source", ""),
                                    "eval_data": getattr(task, "eval_source", "")})
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    prog = Progress()
    if cfg.resume:
        prog = _progress(out / "checkpoint", load_checkpoint(out / "checkpoint", model, optimizer, scheduler,
                                                             cfg.allow_backbone_mismatch))
        log.info("resumed from step %d (epoch %d)", prog.step, prog.epoch)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    if cfg.trackers():
        accelerator.init_trackers("resprompt", config=_scalars({**asdict(cfg), **prompt_cfg.to_dict()}))
    metrics_log = runfolder.MetricsLog(out, accelerator, accelerator.is_main_process,
                                       prog.step if cfg.resume else None)
    return Run(cfg, prompt_cfg, out, accelerator, task, wrapped, accelerator.unwrap_model(wrapped), family,
               optimizer, scheduler, total_steps, micro_per_epoch, metrics_log, prog, lock=lock)


def _progress(path: Path, saved) -> Progress:
    """The checkpoint's progress record as a ``Progress``; a damaged or foreign one is an error naming it."""
    known = {f.name for f in fields(Progress)}
    if not isinstance(saved, dict) or not set(saved) <= known or "step" not in saved:
        raise PromptFileError(f"{path / STATE_FILE}: 'progress' is not a resprompt progress record "
                              f"(expected keys among {sorted(known)})")
    return Progress(**saved)


def _scalars(d: dict) -> dict:
    """The settings trackers accept as hyperparameters (numbers, strings, booleans)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}


# ----------------------------------------------------------------------------------- steps
def _step_batches(run: Run) -> Iterator[list[dict]]:
    """The micro-batches of each optimizer step, epoch after epoch, from where ``run.prog`` stands.

    An epoch's order is a pure function of (seed, epoch); a step takes ``grad_accum`` micro-batches
    (fewer at the end of an epoch). The caller advances ``prog.epoch`` between epochs.
    """
    cfg, prog = run.cfg, run.prog
    pad_to = run.task.max_len if cfg.pad_to_max_length else None  # --max-length capped beside the prompt
    while True:
        order = length_grouped_order(run.task.lengths(), cfg.batch_size, cfg.seed * 100003 + prog.epoch)
        items = [run.task.train_features[i] for i in order]
        # a generator of its own: creating the iterator draws no number from torch's global RNG
        loader = DataLoader(items, batch_size=cfg.batch_size, shuffle=False,
                            generator=torch.Generator().manual_seed(cfg.seed + prog.epoch),
                            collate_fn=lambda b: run.task.collate(b, pad_to))
        if run.accelerator.num_processes > 1:
            loader = run.accelerator.prepare_data_loader(loader)
        if prog.micro_in_epoch:
            loader = run.accelerator.skip_first_batches(loader, prog.micro_in_epoch)
        group: list[dict] = []
        for batch in loader:
            prog.micro_in_epoch += 1
            group.append(batch)
            if prog.micro_in_epoch % cfg.grad_accum == 0 or prog.micro_in_epoch >= run.micro_per_epoch:
                yield group
                group = []
        if group:
            yield group
        if prog.micro_in_epoch:  # the loader ended before micro_per_epoch (several processes)
            prog.epoch += 1
            prog.micro_in_epoch = 0


def optimizer_step(run: Run, micro_batches: list[dict]) -> float:
    """Forward/backward over the step's micro-batches, clip, step. Returns their mean loss."""
    acc, cfg = run.accelerator, run.cfg
    tick = time.perf_counter()
    losses = []
    for i, batch in enumerate(micro_batches):
        run.train_tokens += int(batch["attention_mask"].sum())
        inputs = {k: v.to(acc.device) for k, v in batch.items() if k in MODEL_INPUTS}
        last = i == len(micro_batches) - 1
        ctx = acc.no_sync(run.model) if not last else contextlib.nullcontext()
        with ctx, acc.autocast():
            loss = run.model(**inputs).loss
            acc.backward(loss / len(micro_batches))
        losses.append(loss.detach())
    # every process's losses: all stop together. Under fp16 the gradients are still multiplied by the loss
    # scale here: an overflow is the scaler's to skip (it lowers the scale), not a divergence
    check_finite(run, acc.gather(torch.stack(losses)), gradients=acc.scaler is None)
    if cfg.max_grad_norm:
        acc.clip_grad_norm_(list(run.core.trainable_parameters().values()), cfg.max_grad_norm)
    run.step_lr = run.optimizer.param_groups[0]["lr"]  # before the scheduler moves it on to the next step's
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.prog.step += 1
    run.train_time += time.perf_counter() - tick
    return acc.reduce(torch.stack(losses).mean(), "mean").item()


class TrainingDiverged(ValueError):
    """The loss or a gradient is not finite: the run stops before the optimizer applies it."""


def check_finite(run: Run, losses: torch.Tensor, gradients: bool = True) -> None:
    """Raises ``TrainingDiverged`` naming the step and the parameter groups whose gradients are not
    finite, before the optimizer step: best/ and the last checkpoint keep the last good state.
    ``gradients=False`` checks the losses only (fp16 loss scaling skips overflowing steps itself)."""
    step = run.prog.step + 1
    bad = [g["name"] for g in run.optimizer.param_groups if gradients
           and any(p.grad is not None and not torch.isfinite(p.grad).all() for p in g["params"])]
    if torch.isfinite(losses).all() and not bad:
        return
    loss = ", ".join(f"{v:.4g}" for v in losses.tolist())
    where = f"non-finite gradients in group(s) {', '.join(bad)}" if bad else "gradients finite"
    raise TrainingDiverged(
        f"training diverged at step {step}: loss {loss}; {where} (learning rates: "
        + ", ".join(f"{g['name']} {g.get('initial_lr', g['lr']):.3g}" for g in run.optimizer.param_groups)
        + f"); {run.out / 'best'} and the last checkpoint are left as they were: lower --lr / --lr-head")


def _prompt_norm(core) -> dict:
    """{"prompt_norm": mean L2 norm of the prompt vectors the backbone sees}, P' as folded (eval
    mode); {} for models without a foldable prompt (the PEFT and head-only baselines)."""
    if not hasattr(core, "fold"):
        return {}
    prompt = core.fold()  # [n, d]
    return {"prompt_norm": round(float(prompt.norm(dim=-1).mean()), 4)} if prompt.numel() else {}


def scores(run: Run) -> dict:
    """The current prompt's validation metrics, on the main process ({} elsewhere)."""
    return run.task.evaluate(run.core, run.cfg.eval_batch_size) if run.main else {}


def full_scores(run: Run, metrics: dict | None = None) -> dict:
    """The complete evaluation where the task's regular one is a proxy (a generative task's
    ``evaluate_full``: generation), merged into ``metrics``; the selection ``score`` stays the proxy's."""
    full = getattr(run.task, "evaluate_full", None)
    if not run.main or full is None or not getattr(run.task, "proxy", False):
        return metrics if metrics is not None else scores(run)
    metrics = dict(metrics) if metrics is not None else scores(run)
    metrics.update({k: v for k, v in full(run.core, run.cfg.eval_batch_size).items() if k != "score"})
    return metrics


def evaluate_and_select(run: Run) -> bool:
    """Evaluates, keeps the best folded prompt, checkpoints; returns True to stop early."""
    from accelerate.utils import broadcast

    prog, acc = run.prog, run.accelerator
    metrics = scores(run)
    faults.point("eval")
    score = broadcast(torch.tensor([metrics.get("score", 0.0)], device=acc.device)).item()
    improved = math.isfinite(score) and score > prog.best_score  # a NaN score is never the best
    if improved:
        metrics = full_scores(run, metrics)
        prog.best_score, prog.best_step, prog.best_metrics, prog.evals_since_best = score, prog.step, metrics, 0
        if run.main:
            run.core.save_pretrained(run.out / "best")
            faults.point("best")
    else:
        prog.evals_since_best += 1
    norm = _prompt_norm(run.core) if run.main else {}
    run.log({"type": "eval", "step": prog.step, "epoch": prog.epoch, **metrics, **norm, "best": improved})
    prog.stopped_early = run.cfg.patience is not None and prog.evals_since_best >= run.cfg.patience
    checkpoint(run)
    return prog.stopped_early


def checkpoint(run: Run) -> None:
    """Writes the resumable checkpoint (main process), with the elapsed time up to now."""
    now = time.perf_counter()
    run.prog.elapsed += now - run.segment_start
    run.segment_start = now
    if run.main:
        save_checkpoint(run.out / "checkpoint", run.core, run.optimizer, run.scheduler, asdict(run.prog))
    run.accelerator.wait_for_everyone()


def _evaluate_initial(run: Run) -> None:
    """The untrained prompt (``--eval-at-start``): a reference point, never a candidate for best.
    It consumes no random numbers."""
    if run.cfg.eval_at_start and run.prog.step == 0 and run.prog.initial_metrics is None:
        run.prog.initial_metrics = full_scores(run)
        norm = _prompt_norm(run.core) if run.main else {}
        run.log({"type": "eval", "step": 0, "epoch": 0, **run.prog.initial_metrics, **norm, "initial": True,
                 "best": False})


def _after_optimizer_step(run: Run, loss: float, bar) -> bool:
    """Logging, epoch accounting, evaluation and periodic checkpoints after a step; True when done."""
    cfg, prog = run.cfg, run.prog
    _after_step(prog.step)
    faults.point("step")
    run.log({"type": "train", "step": prog.step, "epoch": prog.epoch, "loss": loss,
             "lr": run.step_lr})
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", best=f"{prog.best_score:.4f}")
    end_of_epoch = prog.micro_in_epoch >= run.micro_per_epoch
    if end_of_epoch:
        prog.epoch += 1
        prog.micro_in_epoch = 0
    due = (cfg.eval_every and prog.step % cfg.eval_every == 0) or (not cfg.eval_every and end_of_epoch)
    if (due or prog.step >= run.total_steps) and evaluate_and_select(run):
        return True
    if cfg.checkpoint_every and prog.step % cfg.checkpoint_every == 0:
        checkpoint(run)
    return prog.step >= run.total_steps


def finish(run: Run, started: float) -> dict:
    """Final scores and ``results.json``; closes the trackers. Returns the results."""
    prog, task = run.prog, run.task
    final = full_scores(run) if run.main else None
    prog.elapsed += time.perf_counter() - run.segment_start
    results = {
        "task": task.name, "model": run.cfg.model, "family": run.family, "method": run.prompt_cfg.reparam,
        "num_tokens": run.prompt_cfg.num_tokens, "seed": run.cfg.seed,
        "best": prog.best_metrics, "best_step": prog.best_step, "final": final, "steps": prog.step,
        "initial": prog.initial_metrics,
        "epochs_completed": prog.epoch, "stopped_early": prog.stopped_early,
        "train_examples": len(getattr(task, "train", task.train_features)),
        "eval_examples": len(getattr(task, "evaluation", ())),
        "trainable_parameters": run.core.num_trainable(), "wall_time_s": round(prog.elapsed, 3),
        "s_per_step": round(prog.elapsed / max(prog.step, 1), 4), "processes": run.accelerator.num_processes,
        # this session only (not across --resume): time inside training steps, real tokens seen
        "train_time_s": round(run.train_time, 3), "train_tokens": run.train_tokens,
        "train_tokens_per_s": round(run.train_tokens / run.train_time, 1) if run.train_time else None,
    }
    if run.main:
        write_json(run.out / "results.json", results)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    log.info("done in %.1fs", time.perf_counter() - started)
    return results


# ----------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, prompt_cfg: ResidualPromptConfig, build_model=None, task: TrainTask | None = None) -> dict:
    """Trains a prompt; returns the content of ``results.json``. Raises ValueError subclasses on bad input.

    ``build_model(backbone, prompt_cfg, tokenizer, family)`` replaces ``ResidualPromptModel`` (the
    benchmark's baselines use it); the object must offer what the loop uses of it:
    ``forward``, ``trainable_parameters``, ``parameter_groups``, ``max_text_length``,
    ``save_pretrained``, ``save_trainable`` / ``load_trainable``, ``num_trainable``.
    ``task`` replaces the task ``cfg`` names (any ``TrainTask``, e.g. a generative one).
    """
    started = time.perf_counter()
    run = setup(cfg, prompt_cfg, build_model, task)
    try:
        return _loop(run, started)
    finally:
        run.lock.release()


def _loop(run: Run, started: float) -> dict:
    """Optimizer steps until the budget is spent or patience runs out; then ``finish``."""
    cfg, prompt_cfg = run.cfg, run.prompt_cfg
    run.model.train()
    run.segment_start = time.perf_counter()
    _evaluate_initial(run)
    bar = None
    if cfg.progress and run.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.total_steps, initial=run.prog.step, desc=f"{run.task.name} {prompt_cfg.reparam}",
                   dynamic_ncols=True)
    done = run.prog.step >= run.total_steps or run.prog.stopped_early
    steps = _step_batches(run)
    while not done:
        loss = optimizer_step(run, next(steps))
        done = _after_optimizer_step(run, loss, bar)
    if bar is not None:
        bar.close()
    return finish(run, started)


def _default_model(backbone, prompt_cfg, tokenizer, family) -> ResidualPromptModel:
    return ResidualPromptModel(backbone, prompt_cfg, tokenizer=tokenizer, family=family)


def _after_step(step: int) -> None:
    """Fault-injection point for tests (a simulated kill after an optimizer step); does nothing."""
