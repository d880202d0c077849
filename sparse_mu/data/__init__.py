"""Data sets as tensors, fixed splits, forget sets and batch loaders."""

from sparse_mu.data.backdoor import BackdoorForget
from sparse_mu.data.dataset import ImageData, prepare
from sparse_mu.data.folder import Folder, FolderData
from sparse_mu.data.forget import ClassForget, ForgetSet, ForgetSpec, RandomForget, SubClassForget
from sparse_mu.data.loader import Augment, EpochSampler, TensorLoader
from sparse_mu.data.memorised import MemorisedForget
from sparse_mu.data.sequential import SequentialForget
from sparse_mu.data.sources import Digits, ImageArrays, Npz, Source, Torchvision

__all__ = [
    "Augment", "BackdoorForget", "ClassForget", "Digits", "EpochSampler", "Folder", "FolderData", "ForgetSet",
    "ForgetSpec", "ImageArrays", "ImageData", "MemorisedForget", "Npz", "RandomForget", "SequentialForget", "SubClassForget", "Source", "TensorLoader", "Torchvision",
    "prepare",
]
