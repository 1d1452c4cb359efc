"""keras.datasets.mnist.load_data() reading the genuine MNIST idx files (no download).
Returns (x_train, y_train), (x_test, y_test): uint8 arrays (60000,28,28), (60000,), (10000,28,28), (10000,) as keras does."""
import gzip
import os
import numpy as np

MNIST_RAW = os.environ.get('DGM_MNIST_RAW', '/work/shared/data/MNIST/raw')


def _read(name, offset, shape):
    with gzip.open(os.path.join(MNIST_RAW, name), 'rb') as f:
        buf = f.read()
    return np.frombuffer(buf, dtype=np.uint8, offset=offset).reshape(shape).copy()


def load_data(path='mnist.npz'):
    x_train = _read('train-images-idx3-ubyte.gz', 16, (-1, 28, 28))
    y_train = _read('train-labels-idx1-ubyte.gz', 8, (-1,))
    x_test = _read('t10k-images-idx3-ubyte.gz', 16, (-1, 28, 28))
    y_test = _read('t10k-labels-idx1-ubyte.gz', 8, (-1,))
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    return (x_train, y_train), (x_test, y_test)
