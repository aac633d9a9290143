"""Reports: agreement of estimates with the truth, model rankings, plots."""

from segqc.report.agreement import agreement
from segqc.report.plots import scatter_plots
from segqc.report.ranking import rank_by_estimate

__all__ = ["agreement", "rank_by_estimate", "scatter_plots"]
