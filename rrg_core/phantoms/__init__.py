"""Synthetic chest radiographs ("phantoms") with finding masks and templated or real reports.

``python -m train phantoms`` writes them as an R2Gen-layout data set; see :mod:`.writer`.
Modules: :mod:`.draw` (primitives), :mod:`.anatomy` (the normal chest both views share),
:mod:`.ribs`, :mod:`.frontal` and :mod:`.lateral` (the views), :mod:`.overlay` and
:mod:`.findings` (one function per finding), :mod:`.reports` (templates), :mod:`.generate` (a
study: a view, its findings, the report), :mod:`.writer` (files). Each imports only those before
it, and of the rest of rrg_core only :mod:`rrg_core.data`, :mod:`rrg_core.labeler`,
:mod:`rrg_core.observations` and :mod:`rrg_core.errors`.
"""

from rrg_core.phantoms.anatomy import FRONTAL, LATERAL, VIEWS, Body, Scene, sample_body
from rrg_core.phantoms.findings import EXTRAS, OVERLAYS, Finding, visible
from rrg_core.phantoms.generate import (
    RenderedStudy,
    StudySpec,
    make_study,
    render,
    render_study,
    sample_study,
)
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
