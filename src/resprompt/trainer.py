"""The training loop: AdamW on prompt / network / head, evaluation, best-prompt selection, resume.

Built on Accelerate, so ``accelerate launch`` runs it on several processes (batches are split
across them: ``--batch-size`` is the global batch). Evaluation runs on the main process; its
score is broadcast so every process takes the same early-stopping decision.

Run folder (``output_dir``): ``best/`` (best folded prompt + head), ``checkpoint/`` (resumable),
``config.json`` (resolved settings), ``metrics.jsonl`` (one JSON line per step and per
evaluation), ``results.json`` (best and final metrics, step of the best, wall time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint, save_checkpoint
from .config import ResidualPromptConfig
from .evaluation import evaluate, load_split, prepare_backbone
from .features import collate, featurize, length_grouped_order
from .io import write_json
from .model import ResidualPromptModel
from .runconfig import ConfigError, TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Progress:
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


def _prepare_output(cfg: TrainConfig) -> Path:
    if not cfg.output_dir:
        raise ConfigError("output-dir is required")
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output-dir {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"output-dir {out} is not empty: pass --resume to continue it or --overwrite to replace it")
    if cfg.resume and not (out / "checkpoint").is_dir():
        raise ConfigError(f"--resume: no checkpoint in {out}")
    parent = out if out.is_dir() else out.parent
    while not parent.exists():
        parent = parent.parent
    probe = parent / f".resprompt-write-test-{time.time_ns()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output-dir {out} is not writable ({e.strerror})") from None
    return out


class _Logger:
    def __init__(self, out: Path, enabled: bool, tensorboard: bool, keep_until: int | None):
        self.enabled, self.path, self.tb = enabled, out / "metrics.jsonl", None
        if not enabled:
            return
        if keep_until is not None and self.path.exists():  # resume: drop lines after the checkpoint
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= keep_until]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif keep_until is None:
            self.path.write_text("")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))

    def __call__(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['type']}/{k}", v, record["step"])


def train(cfg: TrainConfig, prompt_cfg: ResidualPromptConfig, build_model=None) -> dict:
    """Trains a prompt; returns the content of ``results.json``. Raises ValueError subclasses on bad input.

    ``build_model(backbone, prompt_cfg, tokenizer, family)`` replaces ``ResidualPromptModel`` (the
    benchmark's baselines use it); the object must offer what the loop uses of it:
    ``forward``, ``trainable_parameters``, ``parameter_groups``, ``max_text_length``,
    ``save_pretrained``, ``save_trainable`` / ``load_trainable``, ``num_trainable``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration, broadcast, set_seed

    start = time.perf_counter()
    out = _prepare_output(cfg)
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'resprompt[tensorboard]'")
    # cpu=True when there is no accelerator: Accelerate then runs torchrun / `accelerate launch`
    # processes as a gloo process group (MULTI_CPU) instead of silently training N copies.
    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    # Accelerate keeps a process-wide singleton; forget the previous run's mixed precision so
    # several runs (benchmark grids, tests) can share one process. The process group is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=no_gpu,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    main = accelerator.is_main_process
    set_seed(cfg.seed)
    # Everything a user can get wrong is checked before the run folder is touched.
    backbone, tokenizer, family, task = prepare_backbone(cfg)
    train_inst, train_desc = load_split(cfg, task, family, train=True)
    eval_inst, eval_desc = load_split(cfg, task, family, train=False)
    model = (build_model or _default_model)(backbone, prompt_cfg, tokenizer, family)
    max_len = min(cfg.max_length, model.max_text_length)
    train_feats = featurize(train_inst, tokenizer, family, max_len, train=True)
    eval_feats = featurize(eval_inst, tokenizer, family, max_len, train=False)

    if main:
        if cfg.overwrite and out.exists() and not cfg.resume:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {"train": dataclasses.asdict(cfg), "prompt": prompt_cfg.to_dict(),
                                         "family": family, "train_data": train_desc, "eval_data": eval_desc})
    micro_per_epoch = math.ceil(len(train_feats) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    prog = Progress()
    if cfg.resume:
        prog = Progress(**load_checkpoint(out / "checkpoint", model, optimizer, scheduler))
        log.info("resumed from step %d (epoch %d)", prog.step, prog.epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    core: ResidualPromptModel = accelerator.unwrap_model(model)
    logger = _Logger(out, main, cfg.tensorboard, prog.step if cfg.resume else None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(f.input_ids) for f in train_feats]
    trainable = list(core.trainable_parameters().values())
    pad_to = max_len if cfg.pad_to_max_length else None
    train_time, train_tokens = 0.0, 0

    def scores() -> dict:
        """The current prompt's validation metrics, on the main process ({} elsewhere)."""
        return evaluate(core, task, family, eval_inst, eval_feats, tokenizer, cfg.eval_batch_size)[0] if main else {}

    def prompt_norm() -> dict:
        """{"prompt_norm": mean L2 norm of the prompt vectors the backbone sees}, P' as folded (eval
        mode); {} for models without a foldable prompt (the PEFT and head-only baselines)."""
        if not main or not hasattr(core, "fold"):
            return {}
        prompt = core.fold()  # [n, d]
        return {"prompt_norm": round(float(prompt.norm(dim=-1).mean()), 4)} if prompt.numel() else {}

    def run_eval() -> bool:
        """Evaluates, keeps the best folded prompt, checkpoints; returns True to stop early."""
        metrics = scores()
        score = broadcast(torch.tensor([metrics.get("score", 0.0)], device=accelerator.device)).item()
        improved = score > prog.best_score
        if improved:
            prog.best_score, prog.best_step, prog.best_metrics, prog.evals_since_best = score, prog.step, metrics, 0
            if main:
                core.save_pretrained(out / "best")
        else:
            prog.evals_since_best += 1
        logger({"type": "eval", "step": prog.step, "epoch": prog.epoch, **metrics, **prompt_norm(), "best": improved})
        prog.stopped_early = cfg.patience is not None and prog.evals_since_best >= cfg.patience
        checkpoint()
        return prog.stopped_early

    def checkpoint() -> None:
        prog.elapsed += time.perf_counter() - start_segment[0]
        start_segment[0] = time.perf_counter()
        if main:
            save_checkpoint(out / "checkpoint", core, optimizer, scheduler, dataclasses.asdict(prog))
        accelerator.wait_for_everyone()

    start_segment = [time.perf_counter()]
    model.train()
    if cfg.eval_at_start and prog.step == 0 and prog.initial_metrics is None:
        # The untrained prompt: how much the backbone (and a decoder's verbaliser) gives for free.
        # A reference point only, not a candidate for the best prompt; it consumes no random numbers.
        prog.initial_metrics = scores()
        logger({"type": "eval", "step": 0, "epoch": 0, **prog.initial_metrics, **prompt_norm(), "initial": True,
                "best": False})
    done = prog.step >= total_steps or prog.stopped_early
    bar = None
    if cfg.progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=prog.step, desc=f"{task.name} {prompt_cfg.reparam}", dynamic_ncols=True)
    while not done:
        order = length_grouped_order(lengths, cfg.batch_size, cfg.seed * 100003 + prog.epoch)
        loader = DataLoader([train_feats[i] for i in order], batch_size=cfg.batch_size, shuffle=False,
                            collate_fn=lambda b: collate(b, pad_id, family, pad_to))
        loader = accelerator.prepare_data_loader(loader) if accelerator.num_processes > 1 else loader
        if prog.micro_in_epoch:
            loader = accelerator.skip_first_batches(loader, prog.micro_in_epoch)
        tick = time.perf_counter()
        for batch in loader:
            prog.micro_in_epoch += 1
            train_tokens += int(batch["attention_mask"].sum())
            last_micro = prog.micro_in_epoch % cfg.grad_accum == 0 or prog.micro_in_epoch == micro_per_epoch
            inputs = {k: v.to(accelerator.device) for k, v in batch.items()
                      if k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
            ctx = accelerator.no_sync(model) if not last_micro else contextlib.nullcontext()
            with ctx, accelerator.autocast():
                loss = model(**inputs).loss / cfg.grad_accum
                accelerator.backward(loss)
            if not last_micro:
                continue
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            prog.step += 1
            train_time += time.perf_counter() - tick
            _after_step(prog.step)
            loss_value = accelerator.reduce(loss.detach() * cfg.grad_accum, "mean").item()
            logger({"type": "train", "step": prog.step, "epoch": prog.epoch, "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0]})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", best=f"{prog.best_score:.4f}")
            end_of_epoch = prog.micro_in_epoch == micro_per_epoch
            if end_of_epoch:
                prog.epoch += 1
                prog.micro_in_epoch = 0
            due = (cfg.eval_every and prog.step % cfg.eval_every == 0) or (not cfg.eval_every and end_of_epoch)
            if (due or prog.step >= total_steps) and run_eval():
                done = True
                break
            if cfg.checkpoint_every and prog.step % cfg.checkpoint_every == 0:
                checkpoint()
            if prog.step >= total_steps:
                done = True
                break
            tick = time.perf_counter()
        else:
            if prog.micro_in_epoch == 0:
                continue
            prog.epoch += 1  # an epoch ending on a partial accumulation
            prog.micro_in_epoch = 0
    if bar is not None:
        bar.close()
    final = scores() if main else None
    prog.elapsed += time.perf_counter() - start_segment[0]
    results = {
        "task": task.name, "model": cfg.model, "family": family, "method": prompt_cfg.reparam,
        "num_tokens": prompt_cfg.num_tokens, "seed": cfg.seed,
        "best": prog.best_metrics, "best_step": prog.best_step, "final": final, "steps": prog.step,
        "initial": prog.initial_metrics,
        "epochs_completed": prog.epoch, "stopped_early": prog.stopped_early,
        "train_examples": len(train_inst), "eval_examples": len(eval_inst),
        "trainable_parameters": core.num_trainable(), "wall_time_s": round(prog.elapsed, 3),
        "s_per_step": round(prog.elapsed / max(prog.step, 1), 4), "processes": accelerator.num_processes,
        # this session only (not across --resume): time inside training steps, real tokens seen
        "train_time_s": round(train_time, 3), "train_tokens": train_tokens,
        "train_tokens_per_s": round(train_tokens / train_time, 1) if train_time else None,
    }
    if main:
        write_json(out / "results.json", results)
    accelerator.wait_for_everyone()
    log.info("done in %.1fs", time.perf_counter() - start)
    return results


def _default_model(backbone, prompt_cfg, tokenizer, family) -> ResidualPromptModel:
    return ResidualPromptModel(backbone, prompt_cfg, tokenizer=tokenizer, family=family)


def _after_step(step: int) -> None:
    """Fault-injection point for tests (a simulated kill after an optimizer step); does nothing."""

