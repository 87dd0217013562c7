"""torch.distributed helpers: the same code runs as one process or under torchrun."""

from __future__ import annotations

import atexit
import os
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_from_env() -> torch.device:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK) and pick the device.

    NCCL on GPUs, gloo on CPU; without torchrun's variables nothing is initialised.
    """
    use_cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        timeout = timedelta(minutes=30)
        store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            store=_attempt_store(store),
            rank=rank,
            world_size=world_size,
            timeout=timeout,
        )
        # Tear the group down before the interpreter does: a rank that exits with gloo's
        # threads still up aborts ("terminate called without an active exception", SIGABRT),
        # and torchrun then reports a finished run as failed.
        atexit.register(_destroy_process_group)
    if use_cuda:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _destroy_process_group() -> None:
    if is_distributed():
        dist.destroy_process_group()


def _attempt_store(store: dist.Store) -> dist.Store:
    """The store the process group is built on: one namespace per torchrun attempt.

    torchrun shares its rendezvous store with the workers and keeps it across restarts, so a
    restarted rank can read the previous attempt's gloo/NCCL addresses and fail to connect
    (pytorch/pytorch#135712). On one node the restart count is the same for every rank and
    namespaces the keys; across nodes it is counted per node, so there the fix is
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 on torchrun's side (a warning says so).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return store
    if os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get("WORLD_SIZE"):
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return dist.PrefixStore(f"unimoco/attempt_{attempt}", store)
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0 and os.environ.get("RANK") == "0":
        warnings.warn(
            "torchrun --max-restarts across several nodes with a shared rendezvous store: "
            "restarted ranks may read the previous attempt's addresses and fail to connect "
            "(pytorch/pytorch#135712); launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
            stacklevel=2,
        )
    return store


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order (no gradient)."""
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
