"""What a computation keeps for its backward pass: the memory that grows with K in an NCDPO update."""

from collections.abc import Callable
from typing import TypeVar

import torch as th

T = TypeVar("T")


def saved_tensor_bytes(function: Callable[[], T]) -> tuple[int, T]:
    """
    Run ``function`` and count the bytes of the distinct storages that autograd saves for the backward pass while it
    runs (each storage once, however many saved tensors view it).

    :param function: The computation (with gradient)
    :return: The bytes kept, and what ``function`` returned
    """
    # Each storage is held until the count is done, so that no address is freed and reused by another one meanwhile.
    storages: dict[int, th.UntypedStorage] = {}

    def pack(tensor: th.Tensor) -> th.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage
        return tensor

    with th.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = function()
    return sum(storage.nbytes() for storage in storages.values()), result
