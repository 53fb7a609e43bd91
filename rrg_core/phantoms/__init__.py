"""Synthetic chest radiographs ("phantoms") with finding masks and templated or real reports.

``python -m train phantoms`` writes them as an R2Gen-layout data set; see :mod:`.writer`.
Modules: :mod:`.draw` (primitives), :mod:`.anatomy` (normal chest, both views), :mod:`.findings`
(one function per finding), :mod:`.reports` (templates), :mod:`.generate` (a study),
:mod:`.writer` (files).
"""

from rrg_core.phantoms.anatomy import FRONTAL, LATERAL, VIEWS, Body, Scene, render, sample_body
from rrg_core.phantoms.findings import EXTRAS, OVERLAYS, Finding, visible
from rrg_core.phantoms.generate import RenderedStudy, StudySpec, make_study, render_study, sample_study
from rrg_core.phantoms.writer import write_from_reports, write_phantoms

__all__ = [
    "EXTRAS",
    "FRONTAL",
    "LATERAL",
    "OVERLAYS",
    "VIEWS",
    "Body",
    "Finding",
    "RenderedStudy",
    "Scene",
    "StudySpec",
    "make_study",
    "render",
    "render_study",
    "sample_body",
    "sample_study",
    "visible",
    "write_from_reports",
    "write_phantoms",
]
