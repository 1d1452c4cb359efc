"""Minimal torchvision stand-in for the DGM official code (torchvision cannot be used with this CPU torch).
Only what split_MNIST.py / approaches/*.py import: transforms (Compose, ToPILImage, Resize, ToTensor, Normalize),
datasets (imported, unused), utils.save_image. Semantics follow torchvision 0.2.1 (the version in requierements.txt)."""
from . import transforms, datasets, utils
