"""ANIL: Almost No Inner Loop (Raghu, Raghu, Bengio, Vinyals 2020, arXiv:1909.09157).

Only the model's head adapts in the inner loop; the body is meta-learned in the outer loop but
stays fixed during adaptation. The meta-gradient is exact second order through the head's steps.
"""

from engine.algorithms.base import Algorithm


class ANIL(Algorithm):
    name = "anil"
    paper = "Raghu, Raghu, Bengio, Vinyals 2020, arXiv:1909.09157"

    def adapt_names(self) -> list[str]:
        return list(self.model.head_names)
