#!/usr/bin/env python
"""Train a model with Pet's solver.

    python tools/train_net.py --cfg cfgs/digits_cnn_sgd_step.yaml [KEY VALUE ...]
    python tools/train_net.py --cfg cfgs/digits_cnn_sgd_step.yaml --resume
    python tools/train_net.py --cfg cfgs/digits_cnn_sgd_step.yaml --eval-only \
        MODEL.WEIGHTS ckpts/digits_cnn_sgd_step/model_final.pth
    torchrun --nproc_per_node 2 tools/train_net.py --cfg cfgs/digits_cnn_sgd_step.yaml \
        SOLVER.ACCUMULATION_STEPS 2 SOLVER.AMP.ENABLED True

The path of a run: config -> model -> Optimizer -> LearningRateScheduler -> step seam
(OptimWrapper) -> hooks -> loop. The run writes config.yaml, log.txt, metrics.json and
checkpoints to OUTPUT_DIR. Bad input (file, key, type, value, an OUTPUT_DIR that holds another
run, a checkpoint that does not fit) exits with status 2 and one line on stderr, before anything
is written.
"""
import os
import signal


def _stopped_while_importing(signum, frame):
    """Ctrl-C or SIGTERM while the modules load (a second or two; nothing is written yet): one
    line and the shell's status, not a traceback out of whichever import it hit."""
    name = "interrupted" if signum == signal.SIGINT else "terminated"
    os.write(2, f"{name} before training started\n".encode())
    os._exit(130 if signum == signal.SIGINT else 143)


# Only where the signals have their defaults: a background job starts with SIGINT ignored.
_IMPORT_HANDLERS = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
for _sig, _handler in _IMPORT_HANDLERS.items():
    if _handler in (signal.default_int_handler, signal.SIG_DFL):
        signal.signal(_sig, _stopped_while_importing)


def _end_with_the_launcher() -> None:
    """torchrun starts each worker in a session of its own: a torchrun killed with SIGKILL (the
    OOM killer, a scheduler) would leave its workers behind, training on (gloo needs no
    launcher) and writing checkpoints into the directory a restarted job resumes from, or
    waiting on peers that never answer. Linux kills a worker the moment its launcher dies (the
    parent-death signal, which belongs to the thread that sets it: this is the main thread);
    elsewhere a thread notices within a second."""
    import ctypes  # here, not above: the handlers above come first
    import threading
    import time

    launcher_pid = os.getppid()
    try:
        if ctypes.CDLL(None).prctl(1, signal.SIGKILL) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != launcher_pid:  # gone before the signal was set
                os._exit(1)
            return
    except (OSError, AttributeError):  # not Linux
        pass

    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(1.0)
        os.write(2, b"error: torchrun, which started this process, is gone; stopping\n")
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun
    _end_with_the_launcher()

import io  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pet.data import (  # noqa: E402
    DataItemError,
    build_datasets,
    build_eval_loader,
    is_worker_failure,
    worker_failure_line,
)
from pet.engine import evaluate  # noqa: E402
from pet.engine.training_run import build_trainer, build_training_run  # noqa: E402
from pet.engine.output_dir import (  # noqa: E402
    check_output_dir,
    log_config_changes,
    prepare_output_dir,
)
from pet.lib.config.cli import build_parser, exit_on_config_error, parse_cfg  # noqa: E402
from pet.lib.config.errors import ConfigError, first_line  # noqa: E402
from pet.engine.job import validate_job  # noqa: E402
from pet.engine.checkpointer import (  # noqa: E402
    FINAL_NAME,
    Checkpointer,
    CheckpointWriteError,
    last_checkpoint_path,
)
from pet.engine.preemption import StopRequest, TrainingStopped  # noqa: E402
from pet.engine.device import configure_numerics, resolve_device  # noqa: E402
from pet.engine.distributed import (  # noqa: E402
    all_gather_objects,
    lost_a_peer,
    barrier,
    destroy_process_group,
    init_process_group,
    process_info,
)
from pet.engine.logger import (  # noqa: E402
    OutputWriteError,
    ProgressBar,
    format_seconds,
    run_header,
    setup_logging,
)
from pet.engine.seed import seed_everything  # noqa: E402
from pet.models import build_model  # noqa: E402

EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C
EXIT_TERMINATED = 143  # as a shell reports a SIGTERM


def parse_args(argv=None):
    """(args, merged and frozen config); exits 2 on a bad config file, key or type."""
    parser = build_parser("Train a model on the config's data set with Pet's solver.")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUTPUT_DIR from its last_checkpoint")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate MODEL.WEIGHTS (or, with --resume, the last checkpoint)")
    args, cfg = parse_cfg(parser, argv)
    cfg.freeze()
    return args, cfg


def main(argv=None) -> int:
    args, cfg = parse_args(argv)
    process = process_info()
    progress_bar = ProgressBar() if process.is_main else ProgressBar(stream=io.StringIO())  # silent
    logger = setup_logging(progress_bar, main_process=process.is_main)
    with exit_on_config_error():
        # --eval-only trains nothing: an fsdp run's config evaluates in one process.
        iter_per_epoch = validate_job(cfg, world_size=None if args.eval_only else process.world_size)
        device = resolve_device(cfg.MODEL.DEVICE, process)
        configure_numerics(cfg.DETERMINISTIC, cfg.TF32, device)
        if args.eval_only:
            return eval_only(cfg, args, device)
        check_output_dir(cfg.OUTPUT_DIR, args.resume)
    logger.debug("%s", run_header(sys.argv if argv is None else [sys.argv[0], *argv], device,
                                  cfg.NUM_THREADS or torch.get_num_threads(), process.world_size,
                                  args.cfg_file))
    # Every process validated the same config alike: joining the group cannot hang on a typo.
    init_process_group(process, device)
    try:
        status = train(cfg, args, process, device, iter_per_epoch, progress_bar, logger)
        if status == 0:
            # Every process finished: they leave the group together. A process tearing gloo
            # down while another was still writing the final checkpoint aborted (SIGABRT) once.
            barrier()
        return status
    finally:
        destroy_process_group()


def train(cfg, args, process, device, iter_per_epoch, progress_bar, logger) -> int:
    """The training run of every process; rank 0 writes the files and prints."""
    with exit_on_config_error():
        run = build_training_run(cfg, process, device, iter_per_epoch, resume=args.resume)
    checkpointer, eval_hook, scheduler = run.checkpointer, run.eval_hook, run.scheduler
    if args.resume:
        log_config_changes(checkpointer.checkpoint.get("config", {}), cfg)

    # Every check passed: from here on the run writes to OUTPUT_DIR (rank 0 for the job).
    refusal = None
    if process.is_main:
        try:
            prepare_output_dir(cfg, resume=args.resume)
        except ConfigError as e:
            refusal = str(e)
    # Every process learns whether rank 0 could write: a refusal ends them all, with exit 2.
    refusals = [r for r in all_gather_objects(refusal) if r]
    if refusals:
        with exit_on_config_error():
            raise ConfigError(refusals[0])
    logger.info("Training %s (%d parameters) on %d items (%d held out), %d iterations per epoch, "
                "%d iterations; %s; writing to %s", cfg.MODEL.TYPE,
                sum(p.numel() for p in run.model.parameters()), len(run.train_split),
                len(run.test_split), iter_per_epoch, scheduler.max_iter,
                describe_step(cfg, process, device), cfg.OUTPUT_DIR)
    stop_request = StopRequest()
    trainer = build_trainer(run, progress_bar, stop_request)
    started = time.perf_counter()
    stop_request.install()
    try:
        trainer.train()
    except TrainingStopped as e:
        return stopped(progress_bar, process, f"{e}; saved {e.checkpoint}; continue with: "
                       f"{resume_command()}", signal_exit_status(e.signal_name))
    except FloatingPointError as e:  # a non-finite loss, or weights that became non-finite
        hint = "" if "last good checkpoint" in str(e) else last_good_checkpoint(cfg.OUTPUT_DIR)
        return stopped(progress_bar, process, f"error: {e}{hint}", EXIT_DIVERGED)
    except CheckpointWriteError as e:
        return stopped(progress_bar, process, f"error: {e}", EXIT_DIVERGED)
    except (OutputWriteError, DataItemError) as e:  # log.txt, metrics.json, ...; an item
        return stopped(progress_bar, process, f"error: {e}{last_good_checkpoint(cfg.OUTPUT_DIR)}",
                       EXIT_DIVERGED)
    except RuntimeError as e:
        if is_worker_failure(e):  # a DataLoader worker killed by the OS (out of memory, a kill)
            return stopped(progress_bar, process, f"error: {worker_failure_line(e)}"
                           f"{last_good_checkpoint(cfg.OUTPUT_DIR)}", EXIT_DIVERGED)
        if not lost_a_peer(e):
            raise
        # Another process ended (rank 0 on a full disk, a killed worker): its line says why;
        # this one leaves at once, without a traceback (torchrun reports every exit status).
        return stopped(progress_bar, process, "error: another process of this torchrun job ended "
                       f"({first_line(e)}); see its own line above", EXIT_DIVERGED)
    except KeyboardInterrupt:
        return stopped(progress_bar, process, interrupted_message(cfg.OUTPUT_DIR), EXIT_INTERRUPTED)
    finally:
        stop_request.restore()
        run.test_loader.close()
    logger.info("Done: held-out accuracy %.2f%% (best %.2f%% at epoch %d) after %d iterations in %s; "
                "final model: %s", eval_hook.accuracy, eval_hook.best_accuracy, eval_hook.best_epoch,
                scheduler.iteration, format_seconds(time.perf_counter() - started),
                checkpointer.checkpoint_path(FINAL_NAME))
    if run.checkpointer.sharded:
        logger.info("model_final.dcp holds each process's shards; python tools/convert_checkpoint.py "
                    "%s writes its plain weights as one .pth file", checkpointer.checkpoint_path(FINAL_NAME))
    if run.ema is not None:
        logger.info("model_final.pth holds the trained weights under 'model' and their EMA under 'ema'")
    return 0


def stopped(progress_bar, process, line: str, status: int) -> int:
    """Close the progress bar, print ``line`` (rank 0) and return ``status``."""
    progress_bar.close()
    if process.is_main:
        print(line, file=sys.stderr)
    return status


def last_good_checkpoint(output_dir: str) -> str:
    """The end of a line that stops a run: where it can resume from."""
    return f"; last good checkpoint: {last_checkpoint_path(output_dir) or 'none'}"


def signal_exit_status(signal_name: str) -> int:
    return EXIT_TERMINATED if signal_name == "SIGTERM" else EXIT_INTERRUPTED


def resume_command() -> str:
    """This process's command line with --resume (added once), to resume the run; under
    torchrun, as a torchrun command with this node's number of processes."""
    argv = [arg for arg in sys.argv if arg != "--resume"]
    launcher = ["python"]
    if "LOCAL_WORLD_SIZE" in os.environ:  # set by torchrun
        launcher = ["torchrun", f"--nproc_per_node={os.environ['LOCAL_WORLD_SIZE']}"]
    return " ".join(shlex.quote(arg) for arg in [*launcher, *argv, "--resume"])


def interrupted_message(output_dir: str) -> str:
    """The line after a second Ctrl-C: where to resume from, or that nothing can be resumed."""
    last = last_checkpoint_path(output_dir) if os.path.isdir(output_dir) else None
    if last is None:
        return ("interrupted before the first checkpoint; nothing to resume: run the same "
                "command again without --resume")
    return f"interrupted; continue from {last} with: {resume_command()}"


def describe_step(cfg, process, device) -> str:
    """How each step runs, for the log: device, processes, micro-batches, precision."""
    k = cfg.SOLVER.ACCUMULATION_STEPS
    micro = cfg.DATA.BATCH_SIZE // (process.world_size * k)
    fsdp = process.distributed and cfg.SOLVER.DISTRIBUTED.STRATEGY == "fsdp"
    precision = cfg.SOLVER.AMP.DTYPE + (" parameters" if fsdp else " autocast") if cfg.SOLVER.AMP.ENABLED else "float32"
    layout = " (fsdp: the model sharded over them)" if fsdp else ""
    return (f"{device}, {process.world_size} process(es){layout} x {k} micro-batch(es) of {micro} "
            f"images per step, {precision}")


def eval_only(cfg, args, device) -> int:
    """Evaluate MODEL.WEIGHTS, or the last checkpoint with --resume; writes nothing."""
    if not args.resume and not cfg.MODEL.WEIGHTS:
        raise ConfigError("--eval-only needs MODEL.WEIGHTS (a .pth file) or --resume")
    seed_everything(cfg.SEED, cfg.NUM_THREADS)
    _, test_split = build_datasets(cfg.DATA)
    model = build_model(cfg).to(device)
    checkpointer = Checkpointer(cfg.OUTPUT_DIR, resume=args.resume, weights=cfg.MODEL.WEIGHTS,
                                model=model)
    checkpointer.load()
    test_loader = build_eval_loader(cfg, test_split, device)
    try:
        results = evaluate(model, test_loader, len(test_split))
    finally:
        test_loader.close()
    print(f"{checkpointer.source}: held-out accuracy {results['accuracy']:.2f}% "
          f"({len(test_split)} items), test loss {results['test_loss']:.4f}")
    return 0


class Terminated(Exception):
    """SIGTERM outside the training loop (whose own handler checkpoints and stops)."""


def _terminate(signum, frame):
    raise Terminated()


def install_startup_handlers() -> None:
    """From here until the loop's own handlers take over (and again after them): Ctrl-C is
    KeyboardInterrupt and SIGTERM raises Terminated, both ending the run with one line, the
    files written so far complete (every write is atomic) and the lock released."""
    for sig, before in _IMPORT_HANDLERS.items():
        if before in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else _terminate)


def exit_process(status: int) -> None:
    """End the process with ``status``. A torchrun worker leaves without the interpreter's
    teardown: gloo's threads, destroyed then, aborted a finished worker (SIGABRT, "terminate
    called without an active exception") a few times in this project's tests. Every file the
    run writes is flushed as it is written; the log is flushed here."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def run_main() -> int:
    """``main()``'s exit status, the one-line stops outside the training loop included."""
    try:
        return main()
    except KeyboardInterrupt:  # Ctrl-C before the loop started: nothing was trained
        print("interrupted before training started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated by SIGTERM outside the training loop; the last checkpoint, if any, "
              "is complete", file=sys.stderr)
        return EXIT_TERMINATED
    except OutputWriteError as e:  # log.txt before the loop (the config's, the header)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except SystemExit as e:  # a refusal (exit 2): its line is printed already
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        raise


if __name__ == "__main__":
    install_startup_handlers()
    exit_process(run_main())
