"""``ResidualPromptTrainer``: ``transformers.Trainer`` that saves the prompt, never the frozen backbone.

Stock ``Trainer._save`` calls ``save_pretrained`` only on a ``PreTrainedModel`` or ``PeftModel``
(an ``isinstance`` check, no hook); any other module gets its whole ``state_dict`` written as
``model.safetensors``: the backbone too, and GPT-2's tied embeddings make safetensors refuse it.
This subclass overrides the three methods that touch model files:

- ``_save`` (``save_model`` and every checkpoint): ``model.save_pretrained`` (the folded prompt and
  its head: ``prompt.safetensors`` + ``resprompt_config.json``, what ``ResidualPromptModel.from_pretrained``
  loads) plus the trainable state (raw P, network, head) in ``trainable/``, for resuming;
- ``_load_from_checkpoint`` (``train(resume_from_checkpoint=...)``) and ``_load_best_model``
  (``load_best_model_at_end``): read ``trainable/`` back.

Everything else is stock Trainer. Give the three parameter groups their learning rates with
``optimizers=(torch.optim.AdamW(optimizer_param_groups(model, lr=..., lr_head=...)), None)``
(``resprompt.model.optimizer_param_groups``). Other models fall through to Trainer's own code.
Imported only by users: nothing in ``resprompt`` imports this module (it loads ``transformers.Trainer``).
"""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer

from ..formats import read_prompt
from ..io import PromptFileError
from ..model import ResidualPromptModel

TRAINABLE_DIR = "trainable"  # inside a saved folder: the trainable state (``save_trainable``) for resuming
TRAINING_ARGS_NAME = "training_args.json"  # Trainer writes a pickle (training_args.bin); resprompt writes JSON


class ResidualPromptTrainer(Trainer):
    """``transformers.Trainer`` for ``ResidualPromptModel``: saves and reloads the prompt only.

    Not for FSDP or DeepSpeed (the prompt is folded from the local parameters); DDP saves on the main
    process only, as Trainer does (not tested here). A folded model (``from_pretrained``) trains its head:
    ``load_best_model_at_end`` reads the best checkpoint's head back, but its checkpoints cannot be resumed.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self._prompt_model(), ResidualPromptModel) and (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            raise ValueError("ResidualPromptTrainer does not support FSDP or DeepSpeed: the prompt is folded from "
                             "the local parameters; use DDP (only the prompt and head train)")

    def _prompt_model(self, model=None):
        return self.accelerator.unwrap_model(self.model if model is None else model, keep_torch_compile=False)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self._prompt_model()
        if not isinstance(model, ResidualPromptModel):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        # state_dict (given under FSDP / DeepSpeed only, refused above) is not needed: the model folds itself
        model.save_pretrained(output_dir)
        if not model.is_folded:
            model.save_trainable(Path(output_dir) / TRAINABLE_DIR)
        tokenizer = self.processing_class or getattr(self.data_collator, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(output_dir)
        Path(output_dir, TRAINING_ARGS_NAME).write_text(self.args.to_json_string())  # no pickle

    def _load_trainable(self, folder: str, model=None) -> None:
        path = Path(folder) / TRAINABLE_DIR
        if not path.is_dir():
            raise PromptFileError(f"{folder}: no {TRAINABLE_DIR}/ (the trainable state ResidualPromptTrainer saves); "
                                  "a folded prompt cannot be trained further from its checkpoint")
        self._prompt_model(model).load_trainable(path)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not isinstance(self._prompt_model(model), ResidualPromptModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_trainable(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        model = self._prompt_model()
        if not isinstance(model, ResidualPromptModel):
            return super()._load_best_model()
        best = self.state.best_model_checkpoint
        if model.is_folded:  # it trains its head only: the checkpoint's prompt file holds it (no trainable/)
            model.load_head_state(read_prompt(best).head, str(best))
            return
        self._load_trainable(best)
