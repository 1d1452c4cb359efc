"""No-op tensorflow stand-in for utils/logger.py (TensorBoard summaries are not written).
The logger's own numpy work (e.g. np.histogram in histo_summary) still runs; only the protobuf/FileWriter part is a no-op."""


class _Anything(object):
    """Accepts any construction / attribute / call; list-like fields support append."""
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        if name in ('bucket_limit', 'bucket'):
            v = []
        else:
            v = _Anything()
        object.__setattr__(self, name, v)
        return v


class _FileWriter(object):
    def __init__(self, *args, **kwargs):
        pass

    def add_summary(self, *args, **kwargs):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class _SummaryNS(object):
    FileWriter = _FileWriter


summary = _SummaryNS()


class Summary(_Anything):
    Value = _Anything
    Image = _Anything


HistogramProto = _Anything
SummaryMetadata = _Anything
string = 'string'


def make_tensor_proto(*args, **kwargs):
    return _Anything()
