"""Data loading: decode and cache images, read folder/CSV/npz sources, split and augment."""

from medtransfer.data.augment import AugmentConfig, Augmenter
from medtransfer.data.cache import ImageCache, default_cache_root
from medtransfer.data.config import DataConfig, SourceKind
from medtransfer.data.demo import DEMO_CLASSES, DEMO_NAMES, DEMO_PREFIX, demo_path
from medtransfer.data.folds import make_folds
from medtransfer.data.images import (
    IMAGE_EXTENSIONS,
    ColorMode,
    OnError,
    PreprocessConfig,
    decode_image,
    preprocess_array,
)
from medtransfer.data.sampling import Sampling
from medtransfer.data.sources import FileIndex, ImageSet, list_files, load_dataset
from medtransfer.data.splits import Split, SplitConfig, group_leaks, make_split

__all__ = [
    "DEMO_CLASSES",
    "DEMO_NAMES",
    "DEMO_PREFIX",
    "IMAGE_EXTENSIONS",
    "AugmentConfig",
    "Augmenter",
    "ColorMode",
    "DataConfig",
    "FileIndex",
    "ImageCache",
    "ImageSet",
    "OnError",
    "PreprocessConfig",
    "Sampling",
    "SourceKind",
    "Split",
    "SplitConfig",
    "decode_image",
    "default_cache_root",
    "demo_path",
    "group_leaks",
    "list_files",
    "load_dataset",
    "make_folds",
    "make_split",
    "preprocess_array",
]
