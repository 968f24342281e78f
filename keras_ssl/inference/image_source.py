"""`ImageSource`: the images of a folder or an array file, batch by batch."""

import os

import numpy as np

# What `tf.io.decode_image` reads.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _list_files(folder):
    """Image files under `folder`, recursively, sorted by relative path."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.relpath(os.path.join(root, n), folder)
            for n in sorted(names)
            if n.lower().endswith(EXTENSIONS) and not n.startswith(".")
        ]
    return sorted(found)


def _load_array(path):
    """The images of a `.npy` (memory-mapped) or `.npz` file."""
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    with np.load(path) as archive:
        keys = list(archive.keys())
        key = keys[0] if len(keys) == 1 else None
        key = key or next((k for k in ("images", "x") if k in keys), None)
        if key is None:
            raise ValueError(
                "An .npz `images` file must hold one array, or one named "
                f"`images` or `x`. Received: images={path!r} with arrays "
                f"{keys}"
            )
        return archive[key]


def _check_array(array, path):
    shape = array.shape
    if array.dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(
            "An array `images` file must hold uint8 images (N, H, W, 3) or "
            f"(N, H, W, 1). Received: images={path!r} with dtype "
            f"{array.dtype} and shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"`images` holds no image. Received: images={path!r}")
    return array


class ImageSource:
    """The images to run a model on: a folder or an array file.

    A folder's image files (JPEG, PNG, BMP, GIF, WebP, in sub-folders
    too) are named by their path relative to the folder and read batch by
    batch; only the list of names is held. An `.npy` file is
    memory-mapped; an `.npz` file's array (the only one, or `images` or
    `x`) is loaded. An array's images are named by their index.

    Args:
        path: str. A folder, or a `.npy` / `.npz` file of uint8 images
            `(N, H, W, 3)` or `(N, H, W, 1)`.
    """

    def __init__(self, path):
        self.path = path
        self.array = None
        self.files = None
        if os.path.isdir(path):
            self.files = _list_files(path)
            if not self.files:
                raise ValueError(
                    f"`images` holds no image file ({', '.join(EXTENSIONS)})."
                    f" Received: images={path!r}"
                )
        elif path.endswith((".npy", ".npz")) and os.path.isfile(path):
            self.array = _check_array(_load_array(path), path)
        else:
            raise ValueError(
                "`images` must be a folder of image files or an existing "
                f".npy / .npz file. Received: images={path!r}"
            )

    def __len__(self):
        return len(self.files) if self.files is not None else len(self.array)

    def batches(self, batch_size):
        """Yields `(names, items)`: file names and their bytes (a
        folder), or indices as str and a uint8 RGB array (an array)."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            if self.files is None:
                images = np.asarray(self.array[start:stop])
                if images.shape[-1] == 1:
                    images = np.repeat(images, 3, axis=-1)
                yield [str(i) for i in range(start, stop)], images
                continue
            names = self.files[start:stop]
            contents = []
            for name in names:
                with open(os.path.join(self.path, name), "rb") as f:
                    contents.append(f.read())
            yield names, contents
