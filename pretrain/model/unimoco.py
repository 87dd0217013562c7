"""The UniMoCo model: query/key encoders, momentum update, key + label queues, shuffle BN.

With every label -1 (or LOSS.NAME infonce) it is MoCo v1/v2; with labels, a query's positives
are its own key plus every queued key of its label (docs/methods.md §2).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed as du
from .. import losses
from .resnet import build_resnet, feature_dim
from .split_bn import convert_to_split_bn

# LOSS.NAME of the losses that use labels -> the loss; "infonce" (MoCo) ignores them.
LABEL_LOSSES = {"unicon": losses.unicon, "unicon_mean": losses.unicon_mean_positives}
LOSSES = (*LABEL_LOSSES, "infonce")


def build_encoder(arch: str, dim: int, head: str, cifar_stem: bool = False) -> nn.Module:
    """A ResNet whose ``fc`` is the projection head: linear (MoCo v1) or 2-layer MLP (v2)."""
    encoder = build_resnet(arch, num_classes=dim, cifar_stem=cifar_stem)
    if head == "mlp":
        width = feature_dim(encoder)
        encoder.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), encoder.fc)
    elif head != "fc":
        raise ValueError(f"unknown head {head!r}; expected 'fc' or 'mlp'")
    return encoder


class UniMoCo(nn.Module):
    """MoCo with a label queue beside the key queue; the loss is UniCon or InfoNCE, plus CO2.

    ``forward`` returns the losses and the batch's keys and labels; the caller enqueues them with
    :meth:`enqueue` after the backward pass (so the queue the loss saw is not modified under
    autograd, and no copy of it is needed).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        dim: int = 128,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
        head: str = "mlp",
        cifar_stem: bool = False,
        loss: str = "unicon",
        co2_alpha: float = 0.0,
        co2_temperature: float = 0.05,
        bn_splits: int = 1,
        shuffle_bn: bool = True,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
        self.queue_size = queue_size
        self.momentum = momentum
        self.temperature = temperature
        self.loss_name = loss
        self.co2_alpha = co2_alpha
        self.co2_temperature = co2_temperature
        self.shuffle_bn = shuffle_bn
        self.symmetric = symmetric

        self.encoder_q = build_encoder(arch, dim, head, cifar_stem)
        if bn_splits > 1:
            convert_to_split_bn(self.encoder_q, bn_splits)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad = False

        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg) -> UniMoCo:
        """Build from a pretraining config; split BN only on one process (docs/methods.md §4)."""
        single_process = du.get_world_size() == 1
        return cls(
            arch=cfg.MODEL.ARCH,
            dim=cfg.MODEL.DIM,
            queue_size=cfg.MOCO.K,
            momentum=cfg.MOCO.M,
            temperature=cfg.MOCO.T,
            head=cfg.MODEL.HEAD,
            cifar_stem=cfg.MODEL.CIFAR_STEM,
            loss=cfg.LOSS.NAME,
            co2_alpha=cfg.CO2.ALPHA if cfg.CO2.ENABLED else 0.0,
            co2_temperature=cfg.CO2.T,
            bn_splits=cfg.MOCO.BN_SPLITS if (single_process and cfg.MOCO.SHUFFLE_BN) else 1,
            shuffle_bn=cfg.MOCO.SHUFFLE_BN,
            symmetric=cfg.LOSS.SYMMETRIC,
        )

    @torch.no_grad()
    def momentum_update(self) -> None:
        """θk ← m·θk + (1 − m)·θq; buffers (BN statistics) are the key encoder's own."""
        params_q = list(self.encoder_q.parameters())  # read under no_grad: no detach needed
        params_k = list(self.encoder_k.parameters())
        torch._foreach_mul_(params_k, self.momentum)
        torch._foreach_add_(params_k, params_q, alpha=1.0 - self.momentum)

    def compile_encoders(self, **options) -> None:
        """``torch.compile`` both encoders in place; parameter and state-dict names stay."""
        self.encoder_q.compile(**options)
        self.encoder_k.compile(**options)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Gather the keys and labels of every rank and write them over the oldest entries."""
        keys = du.concat_all_gather(keys.detach().to(self.queue.dtype))
        labels = du.concat_all_gather(labels.to(self.queue_labels.dtype))
        positions = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % self.queue_size
        self.queue.index_copy_(0, positions, keys)
        self.queue_labels.index_copy_(0, positions, labels)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % self.queue_size)

    @torch.no_grad()
    def _encode_keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Key embeddings with shuffle BN: the batch is permuted (across ranks when distributed)
        before the key encoder and restored after, so BN statistics do not leak the positive."""
        if not self.shuffle_bn:
            return F.normalize(self.encoder_k(im_k), dim=1)
        if du.get_world_size() == 1:
            perm = torch.randperm(len(im_k), device=im_k.device)
            keys = F.normalize(self.encoder_k(im_k[perm]), dim=1)
            return keys[torch.argsort(perm)]
        all_images = du.concat_all_gather(im_k)
        perm = torch.randperm(len(all_images), device=im_k.device)
        torch.distributed.broadcast(perm, src=0)
        local = perm.view(du.get_world_size(), -1)[du.get_rank()]
        keys = F.normalize(self.encoder_k(all_images[local]), dim=1)
        all_keys = du.concat_all_gather(keys)
        return all_keys[torch.argsort(perm)].view(du.get_world_size(), -1, keys.shape[1])[
            du.get_rank()
        ]

    def _losses(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The contrastive loss of queries ``q`` against their keys ``k`` and the queue, and CO2's
        consistency term (None when CO2 is off); fp32 outside autocast, since bf16 logits over a
        65536-entry queue are too coarse."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            q32, k32 = q.float(), k.float()
            if self.loss_name == "infonce":
                contrast = losses.info_nce(q32, k32, self.queue, self.temperature)
            else:
                label_loss = LABEL_LOSSES[self.loss_name]
                contrast = label_loss(
                    q32, k32, self.queue, labels, self.queue_labels, self.temperature
                )
            co2 = (
                losses.co2(q32, k32, self.queue, self.co2_temperature)
                if self.co2_alpha > 0
                else None
            )
        return contrast, co2

    def forward(
        self, im_q: torch.Tensor, im_k: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Losses for one batch of query/key crops; ``labels`` int64 with -1 for unlabeled.

        Symmetric (MoCo's CIFAR demo, MoCo v3): each crop is also the query of the other, the
        losses are the mean of the two directions and both key batches are returned for the
        queue. Also returns the contrastive loss's uniform-similarity value and the keys' mean
        pairwise cosine (no gradient), which tell a plateau or a collapse from learning."""
        if labels is None:
            labels = torch.full((len(im_q),), -1, dtype=torch.long, device=im_q.device)
        q = F.normalize(self.encoder_q(im_q), dim=1)
        if self.symmetric:
            q_of_k = F.normalize(self.encoder_q(im_k), dim=1)
        with torch.no_grad():
            self.momentum_update()
            k = self._encode_keys(im_k)
            if self.symmetric:
                k_of_q = self._encode_keys(im_q)
        contrast, co2 = self._losses(q, k, labels)
        keys, key_labels = k, labels
        if self.symmetric:
            contrast_back, co2_back = self._losses(q_of_k, k_of_q, labels)
            contrast = 0.5 * (contrast + contrast_back)
            co2 = None if co2 is None else 0.5 * (co2 + co2_back)
            keys, key_labels = torch.cat([k, k_of_q]), torch.cat([labels, labels])
        out = {"loss_contrast": contrast}
        loss = contrast
        if co2 is not None:
            out["loss_co2"] = co2
            loss = loss + self.co2_alpha * co2
        out["loss"] = loss
        with torch.no_grad():  # the collapse monitor's inputs, on the queue the loss saw
            uniform_labels = torch.full_like(labels, -1) if self.loss_name == "infonce" else labels
            out["uniform_loss"] = losses.uniform_similarity_loss(
                uniform_labels, self.queue_labels, mean_positives=self.loss_name == "unicon_mean"
            )
            out["key_cosine"] = losses.mean_pairwise_cosine(k)
        out["keys"] = keys
        out["labels"] = key_labels
        return out
