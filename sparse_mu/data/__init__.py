"""Data sets as tensors, fixed splits, forget sets and batch loaders."""

from sparse_mu.data.dataset import ImageData, prepare
from sparse_mu.data.forget import ClassForget, ForgetSet, RandomForget
from sparse_mu.data.loader import Augment, TensorLoader
from sparse_mu.data.sources import Digits, ImageArrays, Npz, Source, Torchvision

__all__ = [
    "Augment", "ClassForget", "Digits", "ForgetSet", "ImageArrays", "ImageData", "Npz",
    "RandomForget", "Source", "TensorLoader", "Torchvision", "prepare",
]
