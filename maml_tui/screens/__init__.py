"""The explorer's screens: the main screen, the help screen and the small dialogs."""

from maml_tui.screens.algorithm import AlgorithmScreen
from maml_tui.screens.dialogs import ConfirmDialog, PathDialog
from maml_tui.screens.help import HelpScreen
from maml_tui.screens.main import MainScreen

__all__ = ["AlgorithmScreen", "ConfirmDialog", "HelpScreen", "MainScreen", "PathDialog"]
