"""resprompt: Residual Prompt Tuning (Razdaibiedina et al., 2023) for Hugging Face transformers."""

__version__ = "0.1.0"

from .config import ResidualPromptConfig  # noqa: E402
from .encoders import MLPBlock, PromptEncoder  # noqa: E402
from .export import import_peft_prompt  # noqa: E402
from .io import PromptFileError  # noqa: E402
from .model import ResidualPromptModel  # noqa: E402

__all__ = [
    "__version__",
    "ResidualPromptConfig",
    "ResidualPromptModel",
    "PromptEncoder",
    "MLPBlock",
    "PromptFileError",
    "import_peft_prompt",
]
