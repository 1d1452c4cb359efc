#!/usr/bin/env python3
"""Thin launcher for hypercl's ``mnist/train_splitMNIST.py``.

It runs the authors' entry point ``mnist.train_splitMNIST.run(mode='split')``
unchanged, with the paper configuration that the script forces through
``mnist/train_args_default.py::_set_default`` (i.e. ``--dont_set_default`` is
NOT passed). The only things this launcher adds are:

* torch intra/inter-op threads are fixed (env ``HYPERCL_THREADS``, default 2);
* optional env ``HYPERCL_N_ITER``: overrides ``config.n_iter`` (iterations per
  task) *after* ``_set_default`` ran, for short smoke runs. Unset = paper
  value (2000 for split MNIST);
* optional env ``HYPERCL_SHOW_PLOTS=0``: overrides the forced
  ``config.show_plots=True`` (matplotlib figures written to TensorBoard every
  100/200 iterations). Unset = paper configuration (plots on);
* it prints the resolved configuration and, at the end, the contents of the
  summary file ``performance_overview.txt`` written by the original code.

Usage (cwd does not matter):
    python hypercl_launch.py <repo_dir> [train_splitMNIST.py options...]
"""
import os
import sys
import time

if len(sys.argv) < 2 or not os.path.isdir(os.path.join(sys.argv[1], 'mnist')):
    sys.exit('usage: hypercl_launch.py <hypercl repo dir> [options...]')

repo = os.path.abspath(sys.argv[1])
mnist_dir = os.path.join(repo, 'mnist')
# The original scripts are meant to be started from within "mnist/": the
# forced data_dir '../datasets' and the sys.path hack in mnist/__init__.py both
# rely on that.
os.chdir(mnist_dir)
sys.path.insert(0, mnist_dir)
sys.argv = [os.path.join(mnist_dir, 'train_permutedMNIST.py')] + sys.argv[2:]

import torch  # noqa: E402

nthreads = int(os.environ.get('HYPERCL_THREADS', '2'))
torch.set_num_threads(nthreads)
torch.set_num_interop_threads(nthreads)

import __init__  # noqa: E402,F401  (mnist/__init__.py: puts repo root on path)
import mnist.train_splitMNIST as tsm  # noqa: E402

_orig_set_default = tsm._set_default


def _set_default_and_overrides(config):
    config = _orig_set_default(config)
    n_iter = os.environ.get('HYPERCL_N_ITER', '').strip()
    if n_iter:
        config.n_iter = int(n_iter)
    show_plots = os.environ.get('HYPERCL_SHOW_PLOTS', '').strip()
    if show_plots:
        config.show_plots = show_plots not in ('0', 'false', 'False', 'no')
    keys = ['experiment', 'cl_scenario', 'infer_task_id', 'infer_output_head',
            'num_tasks', 'n_iter', 'epochs', 'batch_size', 'random_seed',
            'data_dir', 'padding', 'class_fc_arch', 'class_net_act',
            'class_lr', 'class_lr_emb', 'class_beta', 'class_hnet_arch',
            'class_hnet_act', 'class_hyper_chunks', 'class_temb_size',
            'class_emb_size', 'train_class_embeddings', 'no_lookahead',
            'use_sgd_change', 'backprop_dt', 'soft_targets', 'hard_targets',
            'replay_method', 'latent_dim', 'conditional_replay',
            'conditional_dim', 'enc_fc_arch', 'dec_fc_arch', 'enc_lr',
            'dec_lr', 'dec_lr_emb', 'rp_beta', 'rp_hnet_arch', 'rp_hnet_act',
            'rp_hyper_chunks', 'rp_temb_size', 'rp_emb_size',
            'fake_data_full_range', 'l_rew', 'test_batch_size', 'val_iter',
            'show_plots', 'out_dir']
    print('HYPERCL_CONFIG ' + ' '.join('%s=%s' % (k, getattr(config, k, None))
                                       for k in keys), flush=True)
    print('HYPERCL_TORCH version=%s threads=%d interop=%d'
          % (torch.__version__, torch.get_num_threads(),
             torch.get_num_interop_threads()), flush=True)
    return config


tsm._set_default = _set_default_and_overrides

t0 = time.time()
tsm.run(mode='perm')
print('HYPERCL_RUN_SECONDS %.1f' % (time.time() - t0), flush=True)
