import numpy as np
import torch
from PIL import Image, ImageOps


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToPILImage:
    def __init__(self, mode=None):
        self.mode = mode

    def __call__(self, pic):
        arr = np.asarray(pic)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        return Image.fromarray(arr, mode=self.mode)


class Pad:
    def __init__(self, padding, fill=0):
        self.padding, self.fill = padding, fill

    def __call__(self, img):
        return ImageOps.expand(img, border=self.padding, fill=self.fill) if self.padding else img


class ToTensor:
    def __call__(self, pic):
        arr = np.array(pic, copy=True)
        t = torch.from_numpy(arr).view(pic.size[1], pic.size[0], len(pic.getbands()))
        return t.permute(2, 0, 1).contiguous().float().div(255)


class Lambda:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)
