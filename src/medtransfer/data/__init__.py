"""Data loading: decode and cache images, read folder/CSV/npz sources, split and augment."""

from medtransfer.data.augment import AugmentConfig, Augmenter
from medtransfer.data.cache import ImageCache, default_cache_root
from medtransfer.data.demo import DEMO_CLASSES, DEMO_NAMES, DEMO_PREFIX, demo_path
from medtransfer.data.images import (
    IMAGE_EXTENSIONS,
    ColorMode,
    OnError,
    PreprocessConfig,
    decode_image,
    preprocess_array,
)
from medtransfer.data.sources import DataConfig, ImageSet, SourceKind, load_dataset
from medtransfer.data.splits import Split, SplitConfig, make_split

__all__ = [
    "DEMO_CLASSES",
    "DEMO_NAMES",
    "DEMO_PREFIX",
    "IMAGE_EXTENSIONS",
    "AugmentConfig",
    "Augmenter",
    "ColorMode",
    "DataConfig",
    "ImageCache",
    "ImageSet",
    "OnError",
    "PreprocessConfig",
    "SourceKind",
    "Split",
    "SplitConfig",
    "decode_image",
    "default_cache_root",
    "demo_path",
    "load_dataset",
    "make_split",
    "preprocess_array",
]
