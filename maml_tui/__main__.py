"""``python -m maml_tui`` runs the same CLI as the ``maml-tui`` console script."""

from maml_tui.cli import main

main()
