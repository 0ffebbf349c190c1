"""sftlab: supervised instruction fine-tuning with an exact loss mask for every chat template."""

from sftlab.errors import SftlabError

__version__ = "0.1.0"
__all__ = ["SftlabError", "__version__"]
