"""Pet's training loader against a plain torch DataLoader, and train_net's wait for data.

1. ``loader_rows``: images/s of ``TrainLoader`` and of a plain ``DataLoader(batch_size=32,
   shuffle=True, drop_last=True)`` over the same data set object, at 0 and 2 workers, for the
   image folder on disk (cfgs/image_folder.py: one PGM file read, decoded and augmented per
   item) and the in-memory digits, both with MAX_SHIFT 1 so that they augment. What ours does
   beyond the plain loader: torch's, numpy's and ``random``'s generators seeded per item from
   (seed, epoch, index), in the training process their state saved and restored per batch
   (``SeededItems``); the collate's checks (``ItemCollator``); the plan's batch sampler. The
   issue's limit: at most MAX_SLOWER (3%) slower.
2. ``item_cost_rows``: where a difference comes from, per item in the training process: the
   data set's ``__getitem__`` against ``SeededItems``' (seeding included), and torch's
   ``default_collate`` against ``ItemCollator`` (checks included).
3. ``ready_batch_rows``: what ``next()`` costs, with 2 workers, for a batch they already have
   ready (the training process sleeps between batches): receiving it from a worker (unpickling,
   the shared memory's file descriptor passed over a socket). The floor of the wait below.
4. ``data_wait_rows``: train_net's own loop (``SolverLoop``) on cfgs/digits_folder_cnn.yaml cut
   short, with 2 workers and with 0 for contrast: the trainer's ``data_time`` (seconds waiting
   in ``next()`` on the loader) against the step's time. With workers that keep up the wait is
   about the floor of 3: the issue asks its median to stay under MAX_DATA_WAIT (2%) of the
   step.

The loaders are timed in interleaved rounds (the order alternating), each round a fixed number
of batches from one iterator made once per loader, after a few batches of warm-up, so that
worker start-up (reported apart as ``startup_s``) is not counted; each figure is the median of
the rounds. The plain loader keeps its workers between epochs (``persistent_workers``) and
runs epoch after epoch, as a training loop over it does: at each epoch's end its workers idle
while the last prefetched batches are consumed (ours runs the whole job as one sampler).

Selected by ``tools/benchmark_solver.py --data-loader``.
"""
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from pet.bench.loop_benchmark import SolverLoop
from pet.bench.step_benchmark import BackgroundLoad
from pet.data import BatchPlan, TrainLoader, build_datasets, num_classes
from pet.data.items import ItemCollator, SeededItems
from pet.engine.logger import close_logging
from pet.lib.config import get_cfg, load_cfg
from pet.lib.config.cli import import_custom_modules

BATCH_SIZE = 32
PREFETCH_FACTOR = 2
WORKER_COUNTS = (0, 2)
# The limits: ours at most 3% slower than the plain loader; with workers, train_net's
# median wait for data under 2% of its step.
MAX_SLOWER = 0.03
MAX_DATA_WAIT = 0.02
# (rounds, batches per round, warm-up batches) of the loader rows.
LOADER_ROUNDS = (9, 200, 5)
QUICK_LOADER_ROUNDS = (2, 5, 2)
# train_net's job for the wait rows: iterations, of which the first are left out (the workers'
# start and the first steps' allocations); the last, with the final evaluation and
# checkpoint, is left out too.
WAIT_ITERATIONS, WAIT_SKIPPED = 300, 10
QUICK_WAIT_ITERATIONS, QUICK_WAIT_SKIPPED = 20, 5
ITEM_REPEATS, QUICK_ITEM_REPEATS = 15, 2
# The ready-batch rows: batches (after the warm-up of the loader rows), and the sleep before
# each, long enough for 2 workers to refill their prefetch of the image folder's batches.
READY_BATCHES, QUICK_READY_BATCHES = 100, 5
READY_SLEEP_S = 0.01
FOLDER_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "cfgs", "digits_folder_cnn.yaml")
IMAGE_FOLDER = "image folder (disk)"
DIGITS = "digits (memory)"
PET = "pet TrainLoader"
PLAIN = "plain DataLoader"


def folder_cfg(root: str, overrides: List[str] = ()):
    """cfgs/digits_folder_cnn.yaml reading the folder ``root``, its CUSTOM_IMPORTS imported
    (its data set registered). Raises ConfigError as train_net would."""
    cfg = load_cfg(FOLDER_CFG, ["DATA.ROOT", root, *overrides])
    import_custom_modules(cfg)
    return cfg


def training_sets(root: str) -> Dict[str, Dataset]:
    """name -> training split: the image folder at ``root`` and the in-memory digits, each
    with DATA.MAX_SHIFT 1 (augmented)."""
    digits = get_cfg()
    digits.DATA.MAX_SHIFT = 1
    return {IMAGE_FOLDER: build_datasets(folder_cfg(root, ["DATA.MAX_SHIFT", "1"]).DATA)[0],
            DIGITS: build_datasets(digits.DATA)[0]}


def pet_batches(train: Dataset, workers: int, batches: int) -> Tuple[Iterator, Callable[[], None]]:
    """(``batches`` batches of our TrainLoader over ``train``, its close)."""
    loader = TrainLoader(train, BatchPlan(len(train), BATCH_SIZE, True, seed=0), seed=0,
                         num_workers=workers, prefetch_factor=PREFETCH_FACTOR)
    return loader.iterate(0, batches), loader.close


def plain_batches(train: Dataset, workers: int, batches: int) -> Tuple[Iterator, Callable[[], None]]:
    """(the batches of a plain shuffling DataLoader over ``train``, epoch after epoch, its
    close); ``batches`` is unused (it runs as long as asked)."""
    loader = DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, num_workers=workers,
                        prefetch_factor=PREFETCH_FACTOR if workers else None, persistent_workers=workers > 0)

    def epochs():
        while True:
            yield from loader

    def close():
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        loader._iterator = None

    return epochs(), close


LOADERS = {PET: pet_batches, PLAIN: plain_batches}


def _seconds_for(batches: Iterator, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return time.perf_counter() - start


def compare_loaders(train: Dataset, workers: int, rounds: int, round_batches: int, warmup: int) -> Dict:
    """Ours against the plain loader over ``train`` with ``workers``: per loader its start-up
    (seconds to the first batch), the images/s of each round and their median; then the ratio
    ours/plain of the medians, ``slower`` = 1 - ratio, and the ratio of each round's pair."""
    total = warmup + rounds * round_batches
    iterators, closers, startup = {}, [], {}
    try:
        for name, make in LOADERS.items():
            start = time.perf_counter()
            batches, close = make(train, workers, total)
            closers.append(close)
            next(batches)
            startup[name] = time.perf_counter() - start
            _seconds_for(batches, warmup - 1)
            iterators[name] = batches
        per_round = {name: [] for name in LOADERS}
        for index in range(rounds):
            names = list(LOADERS) if index % 2 == 0 else list(LOADERS)[::-1]
            for name in names:
                seconds = _seconds_for(iterators[name], round_batches)
                per_round[name].append(round_batches * BATCH_SIZE / seconds)
    finally:
        for close in closers:
            close()
    median = {name: statistics.median(values) for name, values in per_round.items()}
    ratio = median[PET] / median[PLAIN]
    return dict(workers=workers, pet_images_per_s=median[PET], plain_images_per_s=median[PLAIN],
                ratio=ratio, slower=1.0 - ratio,
                round_ratios=[ours / plain for ours, plain in zip(per_round[PET], per_round[PLAIN])],
                pet_rounds=per_round[PET], plain_rounds=per_round[PLAIN],
                pet_startup_s=startup[PET], plain_startup_s=startup[PLAIN])


def loader_rows(data_sets: Dict[str, Dataset], rounds: int, round_batches: int, warmup: int) -> List[Dict]:
    """One row per data set of ``data_sets`` and worker count of WORKER_COUNTS: its name and
    ``compare_loaders``' figures."""
    return [dict(dataset=name, **compare_loaders(train, workers, rounds, round_batches, warmup))
            for name, train in data_sets.items() for workers in WORKER_COUNTS]


def item_cost_rows(data_sets: Dict[str, Dataset], repeats: int) -> List[Dict]:
    """Per data set, microseconds per item in the training process, each the median of
    ``repeats`` rounds (the four reads in turn in each) over the same 10 batches: its
    ``__getitem__`` and ``SeededItems``' (``seeding_us``, their difference); torch's
    ``default_collate`` and ``ItemCollator`` (``checks_us``, their difference)."""
    rows = []
    for name, train in data_sets.items():
        order = np.random.default_rng(0).permutation(len(train))[:10 * BATCH_SIZE]
        batches = [[int(i) for i in batch] for batch in order.reshape(10, BATCH_SIZE)]
        items, collator = SeededItems(train, 0), ItemCollator(num_classes(train))
        fetched = [items.__getitems__([(0, index) for index in batch]) for batch in batches]
        reads = {"dataset_us": lambda: [[train[i] for i in batch] for batch in batches],
                 "seeded_us": lambda: [items.__getitems__([(0, i) for i in batch]) for batch in batches],
                 "collate_us": lambda: [default_collate(read[1]) for read in fetched],
                 "checked_collate_us": lambda: [collator(read) for read in fetched]}
        times = {key: [] for key in reads}
        for _ in range(repeats):
            for key, read in reads.items():
                start = time.perf_counter()
                read()
                times[key].append(1e6 * (time.perf_counter() - start) / (10 * BATCH_SIZE))
        row = dict(dataset=name, **{key: statistics.median(values) for key, values in times.items()})
        row["seeding_us"] = row["seeded_us"] - row["dataset_us"]
        row["checks_us"] = row["checked_collate_us"] - row["collate_us"]
        rows.append(row)
    return rows


def ready_batch_rows(train: Dataset, workers: int, batches: int, warmup: int) -> List[Dict]:
    """Per loader over ``train`` with ``workers``: the median seconds ``next()`` takes to hand
    over a batch the workers have ready (the training process sleeps READY_SLEEP_S before each,
    leaving the CPUs to them): the least a training loop with workers waits per step."""
    rows = []
    for name, make in LOADERS.items():
        batches_left, close = make(train, workers, warmup + batches)
        try:
            _seconds_for(batches_left, warmup)
            seconds = []
            for _ in range(batches):
                time.sleep(READY_SLEEP_S)
                seconds.append(_seconds_for(batches_left, 1))
        finally:
            close()
        rows.append(dict(loader=name, workers=workers, next_median_s=statistics.median(seconds),
                         next_mean_s=statistics.fmean(seconds)))
    return rows


def wait_job(iterations: int) -> List[str]:
    """Overrides cutting cfgs/digits_folder_cnn.yaml to ``iterations``: a short warm-up, one lr
    step, no evaluation or checkpoint before the last iteration."""
    return ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.TOTAL_ITERS", str(iterations),
            "SOLVER.SCHEDULER.STEPS", f"({iterations * 3 // 4},)",
            "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None",
            "SOLVER.SCHEDULER.WARM_UP_ITERS", str(max(1, iterations // 30)),
            "SOLVER.SNAPSHOT_EPOCHS", "None", "SOLVER.SNAPSHOT_ITERS", "0",
            "TEST.EVAL_EPOCHS", "None", "TEST.EVAL_ITERS", "0"]


def time_waits(cfg) -> Tuple[List[float], List[float]]:
    """(seconds of each step, the trainer's data_time of each) of ``cfg``'s job through
    train_net's loop; torch's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    steps, waits = [], []
    loop = None
    with tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as null:
        try:
            loop = SolverLoop(cfg, output_dir, null)
            for _ in range(loop.trainer.max_iter):
                start = time.perf_counter()
                loop.step()
                steps.append(time.perf_counter() - start)
                waits.append(loop.trainer.storage.latest()["data_time"])
        finally:
            if loop is not None:
                loop.close()
            close_logging()  # the log file lives in output_dir
            torch.set_num_threads(threads)
    return steps, waits


def data_wait_rows(root: str, iterations: int, skipped: int) -> List[Dict]:
    """train_net's job of cfgs/digits_folder_cnn.yaml over the folder ``root``, cut to
    ``iterations``, with 2 workers and with 0: per worker count the mean step seconds, the mean
    and median data_time and their fractions of the mean step, over the iterations after the
    first ``skipped`` and before the last (the final evaluation and checkpoint)."""
    rows = []
    for workers in (2, 0):
        cfg = folder_cfg(root, ["DATA.NUM_WORKERS", str(workers), *wait_job(iterations)])
        steps, waits = time_waits(cfg)
        steps, waits = steps[skipped:-1], waits[skipped:-1]
        step_s = statistics.fmean(steps)
        mean_wait, median_wait = statistics.fmean(waits), statistics.median(waits)
        rows.append(dict(workers=workers, iterations=len(steps), step_s=step_s,
                         median_step_s=statistics.median(steps), data_time_mean_s=mean_wait,
                         data_time_median_s=median_wait, data_time_max_s=max(waits),
                         mean_fraction=mean_wait / step_s, median_fraction=median_wait / step_s))
    return rows


def data_loader_section(quick: bool, write_folder: Callable[[str], object]) -> Dict:
    """``--data-loader``: the loader rows, the per-item costs, the ready-batch rows and the wait
    rows (each function above), over the image folder that ``write_folder(out_dir)`` writes
    into a temporary directory (the digits in ImageFolder layout: tools/write_image_folder.py,
    which pet.bench may not import), and the background load meanwhile. Short rounds and a
    20-iteration job with ``quick``: a smoke test."""
    rounds, round_batches, warmup = QUICK_LOADER_ROUNDS if quick else LOADER_ROUNDS
    iterations, skipped = (QUICK_WAIT_ITERATIONS, QUICK_WAIT_SKIPPED) if quick else (WAIT_ITERATIONS, WAIT_SKIPPED)
    with tempfile.TemporaryDirectory() as parent:
        root = os.path.join(parent, "digits_folder")
        write_folder(root)
        data_sets = training_sets(root)
        # The workers are joined before the block ends: their time counts as this process's.
        with BackgroundLoad() as load:
            section = dict(batch_size=BATCH_SIZE, prefetch_factor=PREFETCH_FACTOR, rounds=rounds,
                           round_batches=round_batches, warmup_batches=warmup, max_slower=MAX_SLOWER,
                           max_data_wait=MAX_DATA_WAIT,
                           loaders=loader_rows(data_sets, rounds, round_batches, warmup),
                           item_costs=item_cost_rows(data_sets, QUICK_ITEM_REPEATS if quick else ITEM_REPEATS),
                           ready_batch=ready_batch_rows(data_sets[IMAGE_FOLDER], 2, QUICK_READY_BATCHES if quick
                                                        else READY_BATCHES, warmup),
                           data_wait=data_wait_rows(root, iterations, skipped))
    section["background_cores"] = load.cores
    return section


def format_data_loader(section: Dict) -> str:
    """The section as four text tables: loaders, per-item costs, the ready batch, train_net's
    wait for data."""
    lines = [f"data loader, images/s, median of {section['rounds']} interleaved rounds of "
             f"{section['round_batches']} batches of {section['batch_size']} (limit: ours at most "
             f"{section['max_slower']:.0%} slower); background load {_cores(section['background_cores'])}:",
             f"{'data set':<20} {'workers':>7}  {'pet':>8}  {'plain':>8}  {'ratio':>6}  {'slower':>7}  "
             f"{'rounds':>11}  {'start-up s':>11}  within"]
    for r in section["loaders"]:
        spread = f"{min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f}"
        lines.append(f"{r['dataset']:<20} {r['workers']:7d}  {r['pet_images_per_s']:8.0f}  "
                     f"{r['plain_images_per_s']:8.0f}  {r['ratio']:6.3f}  {r['slower']:+7.1%}  {spread:>11}  "
                     f"{r['pet_startup_s']:5.2f}/{r['plain_startup_s']:<5.2f}  "
                     f"{'yes' if r['slower'] <= section['max_slower'] else 'NO'}")
    lines += ["", "per item in the training process (us): the data set, with per-item seeding, collate, checked:",
              f"{'data set':<20} {'getitem':>8}  {'seeded':>8}  {'seeding':>8}  {'collate':>8}  {'checked':>8}"]
    for r in section["item_costs"]:
        lines.append(f"{r['dataset']:<20} {r['dataset_us']:8.1f}  {r['seeded_us']:8.1f}  {r['seeding_us']:+8.1f}  "
                     f"{r['collate_us']:8.1f}  {r['checked_collate_us']:8.1f}")
    lines += ["", f"next() on a batch the workers have ready ({IMAGE_FOLDER}, the least a step waits "
                  f"with workers):"]
    lines += [f"{r['loader']:<20} {r['workers']:7d} workers  median {1e3 * r['next_median_s']:6.3f} ms  "
              f"mean {1e3 * r['next_mean_s']:6.3f} ms" for r in section["ready_batch"]]
    lines += ["", f"train_net's wait for data (cfgs/digits_folder_cnn.yaml; limit with workers: median "
                  f"data_time under {section['max_data_wait']:.0%} of the step):",
              f"{'workers':>7}  {'iters':>5}  {'step ms':>8}  {'data ms mean':>12}  {'median':>8}  "
              f"{'max':>8}  {'mean/step':>9}  {'median/step':>11}  within"]
    for r in section["data_wait"]:
        lines.append(f"{r['workers']:7d}  {r['iterations']:5d}  {1e3 * r['step_s']:8.2f}  "
                     f"{1e3 * r['data_time_mean_s']:12.3f}  {1e3 * r['data_time_median_s']:8.3f}  "
                     f"{1e3 * r['data_time_max_s']:8.2f}  {r['mean_fraction']:9.1%}  {r['median_fraction']:11.1%}  "
                     f"{_within(r, section['max_data_wait'])}")
    return "\n".join(lines)


def _cores(cores) -> str:
    return "unknown" if cores is None else f"{cores:.2f} cores"


def _within(row: Dict, max_data_wait: float) -> str:
    if not row["workers"]:
        return "-"  # the loading is the step's own work: no limit
    return "yes" if row["median_fraction"] < max_data_wait else "NO"
