"""resprompt: Residual Prompt Tuning (Razdaibiedina et al., 2023) for Hugging Face transformers."""

from .formats import SavedPrompt, import_peft_prompt, read_prompt
from .io import PromptFileError
from .model import ResidualPromptModel
from .prompt.config import ResidualPromptConfig
from .prompt.encoders import MLPBlock, PromptEncoder
from .version import __version__

__all__ = [
    "__version__",
    "ResidualPromptConfig",
    "ResidualPromptModel",
    "PromptEncoder",
    "MLPBlock",
    "PromptFileError",
    "SavedPrompt",
    "import_peft_prompt",
    "read_prompt",
]
