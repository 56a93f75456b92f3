"""``python -m maml_tui`` runs the same CLI as the ``maml-tui`` console script."""

from maml_tui.cli import main

if __name__ == "__main__":  # the explorer's engine process must never re-run the CLI on import
    main()
