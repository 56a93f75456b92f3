"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel, Levine 2017, arXiv:1703.03400).

theta' = theta - alpha * grad L_support(theta), repeated for every inner step; the outer loss is
L_query(theta') and its gradient flows back through every inner step, Hessian terms included
(exact second order). Every hook of ``base.Algorithm`` keeps its default answer.
"""

from engine.algorithms.base import Algorithm


class MAML(Algorithm):
    name = "maml"
