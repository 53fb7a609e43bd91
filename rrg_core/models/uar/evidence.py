"""Where UAR's findings head reads each observation: gradient x input over the visual tokens.

Under ``label_context`` the decoder writes a finding's word because the findings head read that
finding: the head's evidence for the observation is what a radiologist needs to see behind the
word, more than the decoder's cross-attention. Each map is the gradient of the observation's logit
with respect to F^(I) (the visual tokens after CRA, before the Transformer encoder) times F^(I),
summed over the feature dimension: one signed value per token cell, positive where the cell raises
the logit (the Grad-CAM convention; displays clamp the negative part).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rrg_core.errors import RRGError
from rrg_core.models.uar.model import UAR
from rrg_core.observations import NUM_OBSERVATIONS


def findings_evidence(model: UAR, visual: Tensor, observations: Sequence[int] | None = None) -> Tensor:
    """(B, K, V, h, w): the findings head's evidence map of each of ``observations`` (indices into
    :data:`~rrg_core.observations.OBSERVATIONS`; None: all 14) for each study of ``visual`` (what
    :meth:`UAR.encode` takes). Put the model in eval mode first: dropout would mix the maps."""
    if model.findings_head is None:
        raise RRGError("this UAR model has no findings head (its config has lambda_findings = 0)")
    wanted = list(range(NUM_OBSERVATIONS)) if observations is None else [int(k) for k in observations]
    if not wanted or not all(0 <= k < NUM_OBSERVATIONS for k in wanted):
        raise RRGError(f"observations must be indices in [0, {NUM_OBSERVATIONS}), got {wanted}")
    with torch.enable_grad():
        features, grid = model.visual_features(visual)
        features = features.detach().requires_grad_(True)  # the model's own dtype: a half model stays half
        logits = model.findings_logits(model.encode_features(features, grid)).float()
        maps = []
        for n, k in enumerate(wanted):
            # Studies never mix in eval mode, so the batch's summed logit gives each study its own gradient.
            (gradient,) = torch.autograd.grad(logits[:, k].sum(), features, retain_graph=n + 1 < len(wanted))
            maps.append((gradient * features).float().sum(dim=-1))
    return torch.stack(maps, dim=1).detach().unflatten(-1, grid)
