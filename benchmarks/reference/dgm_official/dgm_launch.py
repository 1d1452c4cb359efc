"""Launcher for the official DGM code (SAP/machine-learning-dgm @ 3a4f429) on CPU, unchanged computation.

Runs code/run.py via runpy in the current directory (a run dir holding cfg/*.yml copies with niter overridden,
dat -> shared data cache, logs/, outputs/). Applied here, without editing the exported code:
  * torch.Tensor.cuda / torch.nn.Module.cuda -> return self (CPU shim for the unconditional .cuda() calls)
  * Module.zero_grad / Optimizer.zero_grad default set_to_none=False (torch 1.0 semantics: grads zeroed, not None)
  * yaml.load(f) without Loader (PyYAML>=6 needs one) -> Loader=yaml.FullLoader
  * utils.logger.Logger.histo_summary: values cast to float64 (numpy>=1.2x 'Too many bins' error on float32 masks)
  * torch.set_num_threads(DGM_THREADS), torch.set_num_interop_threads(DGM_THREADS)
  * wall-clock timestamps around every App.train(...) call (the call in run.py's task loop), plus a breakdown
    (time inside App.valid / write_log_epoch_* / vutils.save_image, before the first epoch, after the last valid)
usage: python dgm_launch.py METHOD            (cwd = run dir)
       python dgm_launch.py --prep-data       (only build the dat/split_mnist_32 cache)
"""
import os
import sys
import time
import math
import runpy

T0 = time.time()
CODE = os.environ.get('DGM_CODE', '/tmp/ref/dgm/code')
THREADS = int(os.environ.get('DGM_THREADS', '1'))

import torch
import torch.nn
torch.set_num_threads(THREADS)
try:
    torch.set_num_interop_threads(THREADS)
except RuntimeError:
    pass


def _cuda_noop(self, *args, **kwargs):
    return self


torch.Tensor.cuda = _cuda_noop
torch.nn.Module.cuda = _cuda_noop
assert not torch.cuda.is_available()

# torch 1.0 (the authors' version) zeroed .grad in place; torch>=2.0 sets it to None by default, which makes Adam
# skip parameters that got no gradient in a step (e.g. disc_linear in the aux-classifier steps, aux_linear in the
# critic step) instead of moving them by their momentum. Restore the 1.0 behaviour so the computation is unchanged.
_mod_zero_grad = torch.nn.Module.zero_grad
_opt_zero_grad = torch.optim.Optimizer.zero_grad


def _module_zero_grad(self, set_to_none=False):
    return _mod_zero_grad(self, set_to_none=set_to_none)


def _optim_zero_grad(self, set_to_none=False):
    return _opt_zero_grad(self, set_to_none=set_to_none)


torch.nn.Module.zero_grad = _module_zero_grad
torch.optim.Optimizer.zero_grad = _optim_zero_grad

import yaml
_yaml_load = yaml.load


def _yaml_load_compat(stream, Loader=None):
    return _yaml_load(stream, Loader=Loader or yaml.FullLoader)


yaml.load = _yaml_load_compat

sys.path.insert(0, CODE)

if len(sys.argv) > 1 and sys.argv[1] == '--prep-data':
    from dataloaders import split_MNIST
    split_MNIST.get(seed=0, data_root='dat/split_mnist_32', n_classes=1, imageSize=32)
    print('[prep] data cache built in %.1f s' % (time.time() - T0))
    sys.exit(0)

METHOD = sys.argv[1] if len(sys.argv) > 1 else 'DGMw'

from approaches import DGMw as _a_w, DGMa as _a_a

TASK_TIMES = []
# breakdown of one App.train call (wall time of the authors' own helper methods, measured from outside)
BD = {}


def _timed(name, orig):
    def f(*args, **kwargs):
        t0 = time.time()
        if name == 'log_epoch_start' and BD.get('first_epoch_at') is None:
            BD['first_epoch_at'] = t0
        try:
            return orig(*args, **kwargs)
        finally:
            t1 = time.time()
            BD[name] = BD.get(name, 0.0) + (t1 - t0)
            BD['n_' + name] = BD.get('n_' + name, 0) + 1
            if name == 'valid':
                BD['last_valid_end'] = t1
    return f


def _wrap_train(orig):
    def train(self, data, t, *args, **kwargs):
        n_train = int(data[t]['train']['x'].shape[0])
        ipe = int(math.ceil(n_train / float(self.batchSize)))
        print('[timing] task %d start n_train=%d iters_per_epoch=%d niter=%d iters=%d'
              % (t, n_train, ipe, self.niter, ipe * self.niter), flush=True)
        BD.clear()
        t0 = time.time()
        out = orig(self, data, t, *args, **kwargs)
        t1 = time.time()
        dt = t1 - t0
        TASK_TIMES.append((t, dt, n_train, ipe))
        print('[timing] task %d train_wall_s=%.2f best_selected_test_acc=%s' % (t, dt, out[0]), flush=True)
        pre = BD.get('first_epoch_at', t0) - t0           # optimiser/head setup + replay-set generation (t>0)
        post = t1 - BD.get('last_valid_end', t1)          # mask binarisation, expansion, write_log_task_end
        other = sum(BD.get(k, 0.0) for k in ('valid', 'log_epoch_start', 'log_epoch_end', 'save_image'))
        loop = dt - pre - post - other
        print('[timing] task %d breakdown: pre_epochs(replay gen)=%.2f valid+test=%.2f (%d calls) log_epoch=%.2f '
              'save_image=%.2f (%d calls) post_task=%.2f => iteration_loop=%.2f s = %.4f s/iter'
              % (t, pre, BD.get('valid', 0.0), BD.get('n_valid', 0),
                 BD.get('log_epoch_start', 0.0) + BD.get('log_epoch_end', 0.0), BD.get('save_image', 0.0),
                 BD.get('n_save_image', 0), post, loop, loop / (ipe * self.niter)), flush=True)
        return out
    return train


# utils/logger.py histo_summary: np.histogram(values, bins=1000) on float32 mask values. numpy 1.14.5 (the authors')
# accepted a tiny data range; numpy >= 1.2x raises "Too many bins for data range" (hit by DGMa at s=1e-5, where all
# masks are 0.5 +- a few ulp). Cast to float64 first; the logger writes nothing here anyway (tensorflow shim).
import numpy as _np
import utils.logger as _ulog
_histo = _ulog.Logger.histo_summary


def _histo_f64(self, tag, values, step, bins=1000):
    return _histo(self, tag, _np.asarray(values, dtype=_np.float64), step, bins=bins)


_ulog.Logger.histo_summary = _histo_f64

for _m in (_a_w, _a_a):
    _m.App.valid = _timed('valid', _m.App.valid)
    _m.App.write_log_epoch_start = _timed('log_epoch_start', _m.App.write_log_epoch_start)
    _m.App.write_log_epoch_end = _timed('log_epoch_end', _m.App.write_log_epoch_end)
import torchvision.utils as _tvu
_tvu.save_image = _timed('save_image', _tvu.save_image)


_a_w.App.train = _wrap_train(_a_w.App.train)
_a_a.App.train = _wrap_train(_a_a.App.train)

sys.argv = [os.path.join(CODE, 'run.py'), '--dataset', 'mnist', '--method', METHOD]
print('[launch] torch %s threads=%d interop=%d method=%s cwd=%s'
      % (torch.__version__, torch.get_num_threads(), torch.get_num_interop_threads(), METHOD, os.getcwd()), flush=True)
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
finally:
    total = time.time() - T0
    print('[timing] summary: task, train_wall_s, n_train, iters_per_epoch', flush=True)
    for t, dt, n, ipe in TASK_TIMES:
        print('[timing] task %d %.2f %d %d' % (t, dt, n, ipe))
    print('[timing] sum_train_wall_s=%.2f python_process_wall_s=%.2f' % (sum(x[1] for x in TASK_TIMES), total), flush=True)
