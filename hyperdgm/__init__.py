"""hyperdgm: hypernetwork-centric continual learning for PyTorch.

The public entry points most users need:

* :class:`WeightGenerator` -- a task-conditioned (chunked) hypernetwork that generates every weight
  of one or several target networks (hypnettorch ``mnets`` or any ``torch.nn.Module``).
* :class:`OutputRegularizer` -- keeps the weights generated for earlier tasks fixed (Eq. 2 of
  von Oswald et al., ICLR 2020).
* ``python -m hyperdgm.run`` -- the Hydra command line running any method on any benchmark.
"""
from .hnet import OutputRegularizer, WeightGenerator, adam_lookahead, trainable_parameters

__version__ = "0.1.0"
__all__ = ["WeightGenerator", "OutputRegularizer", "adam_lookahead", "trainable_parameters", "__version__"]
