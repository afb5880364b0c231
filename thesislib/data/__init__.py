"""Data sets of the thesis: Fashion-MNIST (offline), CIFAR-10 / ImageNet readers on a user's
folder, and super-resolution photos and folders.

``DATASETS`` names what :func:`load` understands.
"""

from __future__ import annotations

from thesislib.data.fashion import FashionLoaders, fashion_loaders, fashion_mnist

__all__ = ["DATASETS", "FashionLoaders", "fashion_loaders", "fashion_mnist", "load"]

DATASETS: tuple[str, ...] = ("fashion-mnist", "cifar10", "imagenet", "sr-photos", "sr-folder")


def load(name: str, **kwargs):
    """Load a data set by name; an unknown name raises a ValueError listing :data:`DATASETS`."""
    if name == "fashion-mnist":
        return fashion_mnist(**kwargs)
    if name == "cifar10":
        from thesislib.data.vision import cifar10

        return cifar10(**kwargs)
    if name == "imagenet":
        from thesislib.data.vision import imagenet

        return imagenet(**kwargs)
    if name == "sr-photos":
        from thesislib.data.sr import sr_photos

        return sr_photos(**kwargs)
    if name == "sr-folder":
        from thesislib.data.sr import sr_folder

        return sr_folder(**kwargs)
    raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
