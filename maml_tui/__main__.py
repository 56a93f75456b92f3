"""``python -m maml_tui``: the same as the ``maml-tui`` command."""

from maml_tui.launch import main

if __name__ == "__main__":
    main()
