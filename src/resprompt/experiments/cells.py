"""Grid cells: the methods a cell may name, and a cell's settings resolved into run configurations."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ..prompt.config import REPARAMS
from ..training.runconfig import ConfigError, split_settings

BASELINES = ("head_only", "peft_prompt_tuning", "peft_p_tuning")
METHODS = REPARAMS + BASELINES
ALIASES = {"prompt_length": "num_tokens", "reparam": "method"}


@dataclass
class Cell:
    id: str
    experiment: str
    axes: dict  # axis name as written -> value
    seed: int
    settings: dict  # canonical merged settings (aliases resolved), with method and seed

    @property
    def key(self) -> str:
        """Hash of the resolved configurations: equal keys train exactly the same thing."""
        cfg, prompt_cfg, method = configs(self.settings)
        train = dataclasses.asdict(cfg)
        # Keys must stay equal for settings that train the same thing, so that finished cells keep
        # their key: report_to (which trackers log) replaced a tensorboard flag that was always off.
        train.pop("report_to", None)
        train["tensorboard"] = False
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        for name in LATER_FIELDS:  # options added later: at their default they leave older cells' keys as they were
            if train[name] == defaults[name]:
                del train[name]
        prompt = prompt_cfg.to_dict()
        if prompt["pooling"] == "native":  # the readout every cell ran with before the option existed
            del prompt["pooling"]
        blob = json.dumps([method, train, prompt], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


# TrainConfig fields added after grid cells were first keyed (eval_at_start; the generative-task settings)
LATER_FIELDS = ("eval_at_start", "target_field", "template", "chat", "messages_field", "max_target_length",
                "max_new_tokens", "stop", "metric", "eval_proxy")


def canonical(settings: dict, where: str = "settings") -> dict:
    """Settings keyed by their canonical names (``prompt-length`` -> ``num_tokens``); ConfigError for a
    value that is not a mapping, or two spellings of one setting (the last would win unseen)."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {settings!r:.80}")
    out, spelled = {}, {}
    for key, value in settings.items():
        name = str(key).replace("-", "_")
        name = ALIASES.get(name, name)
        if name in out:
            raise ConfigError(f"{where}: {spelled[name]!r} and {key!r} are one setting ({name}); keep one")
        out[name], spelled[name] = value, key
    return out


def configs(settings: dict):
    """(TrainConfig, ResidualPromptConfig, method) of canonical cell settings."""
    s = dict(settings)
    method = s.pop("method", "residual")
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is invalid: expected one of {', '.join(METHODS)}")
    s["reparam"] = method if method in REPARAMS else "none"
    cfg, prompt_cfg = split_settings(s)
    return cfg, prompt_cfg, method
