# usage: summarize.py RUN_LOG SHELL_WALL_S NITER THREADS METHOD  (called by run_official.sh)
import re, sys
log, wall, niter, threads, method = sys.argv[1:]
lines = open(log, errors='replace').read().splitlines()
tasks = {}; cur = None; accs = []
for ln in lines:
    m = re.match(r'\[timing\] task (\d+) start n_train=(\d+) iters_per_epoch=(\d+) niter=(\d+) iters=(\d+)', ln)
    if m:
        cur = int(m.group(1)); accs = []
        tasks[cur] = dict(n=int(m.group(2)), ipe=int(m.group(3)), iters=int(m.group(5)))
        continue
    m = re.match(r'\| test on task:(\d+) : acc=([\d.]+)% \|', ln)
    if m:
        if m.group(1) == '0': accs = []
        accs.append(float(m.group(2)))
        continue
    m = re.match(r'\[timing\] task (\d+) breakdown: pre_epochs\(replay gen\)=([\d.]+) valid\+test=([\d.]+) \((\d+) calls\) log_epoch=([\d.]+) save_image=([\d.]+) \(\d+ calls\) post_task=([\d.]+) => iteration_loop=([-\d.]+) s = ([-\d.]+) s/iter', ln)
    if m:
        t = int(m.group(1)); tasks[t].update(pre=float(m.group(2)), valid=float(m.group(3)), nvalid=int(m.group(4)),
            log=float(m.group(5)), img=float(m.group(6)), post=float(m.group(7)), loop=float(m.group(8)), spi=float(m.group(9)))
        continue
    m = re.match(r'\[timing\] task (\d+) train_wall_s=([\d.]+)', ln)
    if m:
        t = int(m.group(1)); tasks[t]['wall'] = float(m.group(2)); tasks[t]['acc'] = list(accs)
pw = [re.search(r'python_process_wall_s=([\d.]+)', l) for l in lines]
pw = [m.group(1) for m in pw if m]
print('method=%s niter=%s threads=%s' % (method, niter, threads))
print('task  n_train  iters/epoch  iters  train_wall_s  s/iter   test acc (%) on tasks 0..t after the task')
tot_it = 0
for t in sorted(tasks):
    d = tasks[t]; tot_it += d['iters']
    if 'wall' in d:
        print('%4d  %7d  %11d  %5d  %12.2f  %6.3f   %s' % (t, d['n'], d['ipe'], d['iters'], d['wall'], d['wall'] / d['iters'],
              ' '.join('%.1f' % a for a in d['acc'])))
    else:
        print('%4d  %7d  %11d  %5d  (did not finish)' % (t, d['n'], d['ipe'], d['iters']))
done = [d for d in tasks.values() if 'wall' in d]
print('tasks finished: %d/10  total iterations: %d  sum of per-task train wall: %.2f s' % (len(done), tot_it, sum(d['wall'] for d in done)))
print('whole-process wall time (shell, incl. python start-up and data load): %.2f s' % float(wall))
if pw: print('python-process wall time (from launcher start): %s s' % pw[-1])
print()
print('breakdown of each task wall time (s): pre = replay-set generation + setup; valid = App.valid (valid+test sets, 2 calls per even epoch + 2 at the end);')
print('log = write_log_epoch_*; img = save_image; post = mask binarisation/expansion; loop = the rest (training iterations)')
print('task    wall     pre   valid     log     img    post    loop  loop s/iter')
for t in sorted(tasks):
    d = tasks[t]
    if 'loop' in d:
        print('%4d %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f  %7.4f' % (t, d['wall'], d['pre'], d['valid'], d['log'], d['img'], d['post'], d['loop'], d['spi']))
