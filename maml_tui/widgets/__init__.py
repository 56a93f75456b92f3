"""The explorer's widgets: the fit plot, the metric charts, the settings panel and the status bar."""

from maml_tui.widgets.algorithm import AlgorithmPanel
from maml_tui.widgets.plots import FitPlot, GradientChart, InnerCurveChart, LossChart, TaskPlot, downsample
from maml_tui.widgets.settings import SettingsPanel
from maml_tui.widgets.status import StatusBar

__all__ = ["AlgorithmPanel", "FitPlot", "GradientChart", "InnerCurveChart", "LossChart", "SettingsPanel", "StatusBar", "TaskPlot", "downsample"]
