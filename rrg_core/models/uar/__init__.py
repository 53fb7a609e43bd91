"""UAR (Unify, Align and then Refine): a dVAE tokenizer (LSU), the cross-modal aligner (CRA), the
text-to-image refiner (TIR), two-stage training, and Table 2's ablation rows.

- :mod:`.config`: :class:`UARConfig`, :data:`ABLATIONS`, the default preprocessing
- :mod:`.dvae`, :mod:`.feature_tokenizer`: the tokenizers; :mod:`.cra`: the aligner; :mod:`.model`: the
  whole model; :mod:`.decoding`: what its decoding returns and how a draft is picked;
  :mod:`.evidence`: where the findings head reads each observation
- :mod:`.losses`: the dVAE's objective, eq 13 per stage, eq 10
- :mod:`.io`: checkpoint save and load (UAR and its dVAE)
"""

from rrg_core.models.uar.config import ABLATIONS, UARConfig, ablation_config, check_tokenizer
from rrg_core.models.uar.decoding import UARGeneration
from rrg_core.models.uar.dvae import DVAE, DVAEConfig, DVAEEncoder
from rrg_core.models.uar.evidence import findings_evidence
from rrg_core.models.uar.io import load_dvae, load_uar, read_preprocess, save_tokenizer, save_uar
from rrg_core.models.uar.losses import UAROutput, stage_loss
from rrg_core.models.uar.model import UAR

__all__ = [
    "ABLATIONS",
    "DVAE",
    "UAR",
    "DVAEConfig",
    "DVAEEncoder",
    "UARConfig",
    "UARGeneration",
    "UAROutput",
    "ablation_config",
    "check_tokenizer",
    "findings_evidence",
    "load_dvae",
    "load_uar",
    "read_preprocess",
    "save_tokenizer",
    "save_uar",
    "stage_loss",
]
