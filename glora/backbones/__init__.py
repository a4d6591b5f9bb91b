"""The frozen pretrained backbone, and the one door to ``timm.create_model``.

    load      ModelConfig -> (model, BackboneSpec): the embedded default, a timm model from a
              local file, or one shipped inside a package (``package:<name>``)
    families  what differs between kinds of backbone (ViT, CNN): default GLoRA targets, how
              the input size reaches the model, the head
    packaged  converters of weights that ship inside registry packages (DINOv2, EfficientNet-Lite0)
    embedded  the embedded default backbone: made once, cached
"""
from .families import CNN_TARGETS, FAMILIES, Family, family_of
from .load import EMBEDDED, BackboneSpec, ModelConfig, build_model, classifier_name, create_model, load_backbone

__all__ = ["CNN_TARGETS", "EMBEDDED", "FAMILIES", "BackboneSpec", "Family", "ModelConfig", "build_model", "classifier_name", "create_model",
           "family_of", "load_backbone"]
