from . import np_utils
from .np_utils import to_categorical
