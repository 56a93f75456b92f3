"""The explorer's widgets: the fit plot, the classification episode, the metric charts, the settings panel and the status bar."""

from maml_tui.widgets.algorithm import AlgorithmPanel
from maml_tui.widgets.episode import AccuracyChart, EpisodeView
from maml_tui.widgets.plots import FitPlot, GradientChart, InnerCurveChart, LossChart, TaskPlot, downsample
from maml_tui.widgets.settings import SettingsPanel
from maml_tui.widgets.status import StatusBar

__all__ = ["AccuracyChart", "AlgorithmPanel", "EpisodeView", "FitPlot", "GradientChart", "InnerCurveChart", "LossChart", "SettingsPanel", "StatusBar", "TaskPlot", "downsample"]
