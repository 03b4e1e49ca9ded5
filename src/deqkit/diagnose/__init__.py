"""Equilibrium health of a trained DEQ: does it reach its fixed point, is J_f contractive
there, does the adjoint solve converge, and does the metric hold at convergence?

``deqkit diagnose CHECKPOINT`` runs :func:`diagnose_checkpoint` and writes ``diagnose.json``
and PNGs into the run directory; :func:`diagnose` does the same for a model built in Python.
"""

from .api import diagnose, diagnose_checkpoint
from .measure import DiagnoseOptions
from .report import format_table, write_report
from .verdict import verdict

__all__ = [
    "DiagnoseOptions",
    "diagnose",
    "diagnose_checkpoint",
    "format_table",
    "verdict",
    "write_report",
]
