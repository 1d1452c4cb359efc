"""torchvision 0.2.1 semantics for the transforms used by dataloaders/split_MNIST.py."""
import numpy as np
import torch
from PIL import Image


class Compose(object):
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToPILImage(object):
    """0.2.1 to_pil_image for a CxHxW tensor: float -> mul(255).byte(); 1 channel -> mode 'L'."""
    def __init__(self, mode=None):
        self.mode = mode

    def __call__(self, pic):
        if isinstance(pic, torch.Tensor):
            if pic.is_floating_point():
                pic = pic.mul(255).byte()
            npimg = np.transpose(pic.numpy(), (1, 2, 0))
        else:
            npimg = pic
        if npimg.shape[2] == 1:
            npimg = npimg[:, :, 0]
            assert npimg.dtype == np.uint8
            return Image.fromarray(npimg, mode='L')
        if npimg.shape[2] == 3:
            return Image.fromarray(npimg, mode='RGB')
        raise NotImplementedError('ToPILImage stand-in: only 1 or 3 channels')


class Resize(object):
    """0.2.1 resize: int size -> smaller edge = size, bilinear."""
    def __init__(self, size, interpolation=Image.BILINEAR):
        self.size = size
        self.interpolation = interpolation

    def __call__(self, img):
        size = self.size
        if isinstance(size, int):
            w, h = img.size
            if (w <= h and w == size) or (h <= w and h == size):
                return img
            if w < h:
                ow = size
                oh = int(size * h / w)
            else:
                oh = size
                ow = int(size * w / h)
            return img.resize((ow, oh), self.interpolation)
        return img.resize(size[::-1], self.interpolation)


class ToTensor(object):
    """0.2.1 to_tensor for PIL 'L'/'RGB' images: ByteTensor HxWxC -> CxHxW float / 255."""
    def __call__(self, pic):
        arr = np.array(pic, dtype=np.uint8, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        img = torch.from_numpy(arr).transpose(0, 1).transpose(0, 2).contiguous()
        return img.float().div(255)


class Normalize(object):
    """0.2.1 normalize: zip over channels (so a 3-tuple on a 1-channel tensor uses the first entry)."""
    def __init__(self, mean, std):
        self.mean = mean
        self.std = std

    def __call__(self, tensor):
        for t, m, s in zip(tensor, self.mean, self.std):
            t.sub_(m).div_(s)
        return tensor
