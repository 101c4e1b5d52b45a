"""Every layer type, registered by importing its module (one layer per file)."""

from mochapy.layers import (  # noqa: F401  (imported for registration)
    concat,
    contrast_level,
    element_wise,
    gaussian_kl_loss,
    gaussian_recon_loss,
    hdf5_data,
    hdf5_output,
    inner_product,
    memory_data,
    memory_output,
    noise_level,
    power,
    random_normal,
    slice,
    split,
    square_loss,
)
from mochapy.layers.base import LAYER_TYPES, Layer, LayerConfig, NetContext, register_layer

__all__ = ["LAYER_TYPES", "Layer", "LayerConfig", "NetContext", "register_layer"]
