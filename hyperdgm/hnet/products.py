"""Matrix products of the hypernetwork's long, thin shapes, threaded over their long reduction.

The output regularizer's Gram products are ``[m, K] @ [K, n]`` with ``m, n`` ~ 10 and ``K`` the chunk size
(10^4-10^5). A CPU BLAS threads such a product badly (split MNIST's four: 950 us on 2 threads against 500 us on
one). Here the reduction runs as a batch of one slice of ``K`` per thread (a ``bmm`` on views), summed after:
380 us on 2 threads. On one thread, on a GPU, or for short reductions, the plain product.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MIN_SPLIT", "split_k_mm"]

#: columns per slice below which the reduction is not split
MIN_SPLIT = 4096


def split_k_mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for 2-D ``a`` ``[m, K]``, ``b`` ``[K, n]``, the sum over ``K`` split into one slice per CPU thread.

    Same sums up to float round-off; any other input (batched, on a GPU, one thread, ``K`` < 2 * MIN_SPLIT) is
    the plain product."""
    c = torch.get_num_threads() if a.device.type == "cpu" and a.dim() == 2 and b.dim() == 2 else 1
    k = a.shape[-1] // max(c, 1)
    if c < 2 or k < MIN_SPLIT:
        return a @ b
    n = k * c
    x = a[:, :n].unflatten(1, (c, k)).transpose(0, 1)  # [c, m, k], a view
    y = b[:n].unflatten(0, (c, k))  # [c, k, n], a view
    out = torch.bmm(x, y).sum(0)
    if n < a.shape[-1]:
        out.addmm_(a[:, n:], b[n:])
    return out
