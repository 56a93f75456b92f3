"""The explorer's screens: the main screen, the help screen and the small dialogs."""

from maml_tui.screens.algorithm import AlgorithmScreen
from maml_tui.screens.batch import BatchScreen
from maml_tui.screens.gradients import GradientScreen
from maml_tui.screens.dialogs import ConfirmDialog, PathDialog, QuitDialog
from maml_tui.screens.help import HelpScreen
from maml_tui.screens.main import MainScreen
from maml_tui.screens.messages import MessagesScreen

__all__ = ["AlgorithmScreen", "BatchScreen", "ConfirmDialog", "GradientScreen", "HelpScreen", "MainScreen", "MessagesScreen", "PathDialog", "QuitDialog"]
