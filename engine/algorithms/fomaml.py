"""First-order MAML (Finn, Abbeel, Levine 2017, arXiv:1703.03400, section 5.2).

Identical to MAML but the inner gradient is taken as a constant, so the meta-gradient is the query
gradient at the adapted parameters: d theta'/d theta is replaced by the identity and the Hessian
term disappears. Cheaper, and often nearly as good.
"""

from engine.algorithms.base import Algorithm


class FOMAML(Algorithm):
    name = "fomaml"
    first_order = True
