"""maml-tui: a terminal explorer for meta-learning, and the typer CLI around the engine."""

__version__ = "0.1.0"
