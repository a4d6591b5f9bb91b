"""Backbone families: what differs between kinds of pretrained model, in one place.

A family owns the GLoRA targets a space takes when ``space.targets`` is left unset, how
``model.img_size`` reaches the model (a ViT is built at that size and its position
embeddings are resampled; a CNN is size-agnostic, so only the preprocessing changes), and
how a fresh head is put on (its module name is ``spaces.classifier_name``'s). Everything else about a backbone
(building, weights, preprocessing statistics) is timm's and goes through ``load``.

A family is picked from the timm module that defines the architecture; a model of a module
no family claims is handled as a ViT (timm's transformers name their layers alike).
"""
from __future__ import annotations

from dataclasses import dataclass

import timm
from torch import nn

from glora.spaces import DEFAULT_TARGETS

__all__ = ["CNN_TARGETS", "FAMILIES", "Family", "family_of"]

#: Every 1×1 convolution of an EfficientNet / MobileNet in timm: the expansion and projection
#: of each inverted residual (``conv_pw`` / ``conv_pwl``; block 0's ``conv_pw`` too) and the
#: final ``conv_head``. The 3×3 stem and the depthwise convs are not linear maps over channels.
CNN_TARGETS = r"(.*\.)?(blocks\.\d+\.\d+\.(conv_pw|conv_pwl)|conv_head)"


@dataclass(frozen=True)
class Family:
    """One kind of backbone."""

    name: str
    targets: str  # the GLoRA targets (a regex over module names) when space.targets is unset
    size_in_kwargs: bool  # model.img_size is a create_model kwarg (True) or only the preprocessing's size

    def build_kwargs(self, kwargs: dict, img_size: int | None) -> dict:
        """``create_model``'s kwargs for ``model.img_size``."""
        return {**kwargs, "img_size": img_size} if img_size and self.size_in_kwargs else dict(kwargs)

    @staticmethod
    def reset_head(model: nn.Module, num_classes: int) -> None:
        """A fresh ``num_classes`` head (0: none, the features)."""
        model.reset_classifier(num_classes)


FAMILIES: dict[str, Family] = {
    "vit": Family("vit", DEFAULT_TARGETS, size_in_kwargs=True),
    "cnn": Family("cnn", CNN_TARGETS, size_in_kwargs=False),
}

#: timm's module of an architecture -> its family.
_BY_MODULE = {"vision_transformer": "vit", "efficientnet": "cnn", "mobilenetv3": "cnn"}


def family_of(model_name: str) -> Family:
    """The family of timm architecture ``model_name`` (the embedded default is a timm ViT)."""
    if not timm.is_model(model_name):  # "embedded", or a bad name that create_model reports
        return FAMILIES["vit"]
    module = timm.models.model_entrypoint(model_name).__module__
    return FAMILIES[_BY_MODULE.get(module.rsplit(".", 1)[-1], "vit")]
