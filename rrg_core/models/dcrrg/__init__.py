"""DCRRG (Divide and Conquer RRG): observation-level pretraining, DCCLIP with the calibrated semantic
matching loss, observation descriptions, and prompt-tuned report writing.

- :mod:`.config`: :class:`DCCLIPConfig`, :class:`DCRRGConfig`, the default preprocessing
- :mod:`.dcclip`: Steps 1-2's encoders and heads; :mod:`.model`: the whole model (Steps 3-4)
- :mod:`.losses`: what each of the four steps minimises
- :mod:`.io`: checkpoint save and load
"""

from rrg_core.models.dcrrg.config import FULL_REPORT, DCCLIPConfig, DCRRGConfig, default_preprocess
from rrg_core.models.dcrrg.io import load_dcrrg, read_preprocess, save_dcrrg
from rrg_core.models.dcrrg.model import DCRRG, Descriptions, EncoderFeatures

__all__ = [
    "DCRRG",
    "FULL_REPORT",
    "DCCLIPConfig",
    "DCRRGConfig",
    "Descriptions",
    "EncoderFeatures",
    "default_preprocess",
    "load_dcrrg",
    "read_preprocess",
    "save_dcrrg",
]
