"""The fault suite: hostile and broken input to every tool, unusable OUTPUT_DIRs, damaged and
foreign checkpoints, SIGTERM/SIGINT, a full disk, two runs on one OUTPUT_DIR, SIGKILL at
several points. Each fault must end in one line and a known exit status, never a traceback,
and must leave the run resumable."""
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.tools.test_train_net import (
    assert_bad_input,
    assert_same_final_state,
    load,
    read_metrics,
    snapshot_dir,
    train,
    train_command,
    write_cfg,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

# A job of a few iterations: each run here costs little more than Python's start-up.
SHORT_JOB = {
    "LOG_PERIOD": 1,
    "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16}},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05},
        "SCHEDULER": {"POLICY": "COSINE", "TOTAL_ITERS": 4, "STEPS": [], "WARM_UP_ITERS": 0},
        "SNAPSHOT_ITERS": 2,
    },
}
# A job that runs until it is stopped (no periodic checkpoints: only a stop writes one).
ENDLESS = {**SHORT_JOB, "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 0,
                                    "SCHEDULER": {**SHORT_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 10**7}}}

# ---------------------------------------------------------------------------------------------
# A corpus of malformed configs and overrides: (name, YAML text or bytes, overrides, fragment)
# ---------------------------------------------------------------------------------------------
OK_YAML = "MODEL: {TYPE: cnn}\n"
CORPUS = [
    ("not_utf8", b"MODEL: {TYPE: \xff\xfe}\n", [], "not UTF-8"),
    ("binary", bytes(range(256)), [], "not UTF-8"),
    ("alias", "A: &x {TYPE: cnn}\nMODEL: *x\n", [], "aliases"),
    ("billion_laughs", "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                       "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n", [], "aliases"),
    ("deep_lists", "SEED: " + "[" * 200 + "]" * 200 + "\n", [], "nested deeper"),
    ("deep_maps", "A:\n" + "".join(" " * i + " x:\n" for i in range(1, 60)) + "  " * 60 + "1\n", [], "nested deeper"),
    ("huge_file", "# " + "x" * (2 << 20) + "\n", [], "larger than"),
    ("section_twice", "SOLVER: {OPTIMIZER: {BASE_LR: 0.1}}\nSOLVER: {SNAPSHOT_ITERS: 5}\n", [], "given twice"),
    ("key_twice", "SEED: 1\nSEED: 2\n", [], "SEED is given twice"),
    ("nested_key_twice", "SOLVER:\n  OPTIMIZER: {BASE_LR: 0.1, BASE_LR: 0.2}\n", [], "BASE_LR is given twice"),
    ("top_list", "- 1\n- 2\n", [], "top level must be a mapping"),
    ("top_scalar", "hello\n", [], "top level must be a mapping"),
    ("bad_yaml", "MODEL: {TYPE: cnn\n", [], "not valid YAML"),
    ("tab_indent", "MODEL:\n\tTYPE: cnn\n", [], "not valid YAML"),
    ("python_tag", "SEED: !!python/object/apply:os.system ['true']\n", [], "not valid YAML"),
    ("unknown_key", "SOLVR: {}\n", [], "unknown config key SOLVR"),
    ("section_as_value", "SOLVER: 3\n", [], "is a section"),
    ("yaml_inf", "SOLVER: {OPTIMIZER: {BASE_LR: .inf}}\n", [], "finite number"),
    ("yaml_nan", "SOLVER: {OPTIMIZER: {WEIGHT_DECAY: .nan}}\n", [], "finite number"),
    ("yaml_neg_inf_list", "SOLVER: {SCHEDULER: {STEPS: [1, -.inf]}}\n", [], "finite number"),
    ("override_inf", OK_YAML, ["SOLVER.OPTIMIZER.BASE_LR", "1e400"], "finite number"),
    ("override_nan", OK_YAML, ["SOLVER.OPTIMIZER.BASE_LR", "float('nan')"], "expected a number"),
    ("override_inf_epochs", OK_YAML, ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "1e999"], "finite number"),
    ("override_inf_kwargs", OK_YAML, ["SOLVER.OPTIMIZER.KWARGS.eps", "1e999"], "finite number"),
    ("huge_int_float_key", OK_YAML, ["SOLVER.OPTIMIZER.BASE_LR", "9" * 400], "too large"),
    ("huge_override", OK_YAML, ["SEED", "1" * 20000], "longer than"),
    ("deep_override", OK_YAML, ["SOLVER.SCHEDULER.STEPS", "(" * 500 + ")" * 500], "SOLVER.SCHEDULER.STEPS"),
    ("odd_overrides", OK_YAML, ["SEED"], "no value"),
    ("seed_negative", OK_YAML, ["SEED", "-1"], "SEED: expected an integer >= 0"),
    ("seed_huge", OK_YAML, ["SEED", str(2 ** 64)], "SEED: must be <= 4294967295"),
    ("split_seed_huge", OK_YAML, ["DATA.SPLIT_SEED", str(2 ** 40)], "DATA.SPLIT_SEED: must be <="),
    ("threads_huge", OK_YAML, ["NUM_THREADS", "100000000"], "NUM_THREADS: must be <= 1024"),
    ("threads_negative", OK_YAML, ["NUM_THREADS", "-4"], "NUM_THREADS: expected an integer >= 0"),
    ("batch_huge", OK_YAML, ["DATA.BATCH_SIZE", str(2 ** 63)], "DATA.BATCH_SIZE: must be <="),
    ("hidden_huge", OK_YAML, ["MODEL.CNN.HIDDEN_DIM", str(2 ** 40)], "MODEL.CNN.HIDDEN_DIM: must be <="),
    ("mlp_ratio_huge", OK_YAML, ["MODEL.TRANSFORMER.MLP_RATIO", "1e30"],
     "MODEL.TRANSFORMER.MLP_RATIO: 1e+30 x MODEL.TRANSFORMER.EMBED_DIM 64 gives an MLP of 6.4e+31 units; "
     "allowed: 1 to 2147483647"),
    ("classes_below_labels", OK_YAML, ["MODEL.NUM_CLASSES", "5"], "MODEL.NUM_CLASSES: 5 is fewer than the 10 labels"),
    ("zero_iteration_schedule", OK_YAML, ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "0.001", "SOLVER.SCHEDULER.STEPS", "()",
                                         "SOLVER.SCHEDULER.WARM_UP_ITERS", "0"], "round to 0 iterations"),
    ("epoch_schedule_past_int", OK_YAML, ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "1e30"],
     "SOLVER.SCHEDULER.TOTAL_EPOCHS=1e+30: 1e+30 epochs of 44 iterations are 4.4e+31 iterations; at most 2147483647"),
    ("total_iters_zero", OK_YAML, ["SOLVER.SCHEDULER.TOTAL_ITERS", "0"], "TOTAL_ITERS"),
    ("lr_string", OK_YAML, ["SOLVER.OPTIMIZER.BASE_LR", "fast"], "SOLVER.OPTIMIZER.BASE_LR"),
    ("lr_negative", OK_YAML, ["SOLVER.OPTIMIZER.BASE_LR", "-1"], "SOLVER.OPTIMIZER.BASE_LR"),
    ("bool_for_int", OK_YAML, ["SEED", "True"], "SEED"),
    ("unknown_optimizer", OK_YAML, ["SOLVER.OPTIMIZER.TYPE", "SGDD"], "SOLVER.OPTIMIZER.TYPE"),
    ("unknown_model", OK_YAML, ["MODEL.TYPE", "resnet9000"], "MODEL.TYPE"),
    ("empty_output_dir", OK_YAML, ["OUTPUT_DIR", "' '"], "OUTPUT_DIR"),
    ("custom_import_missing", OK_YAML, ["CUSTOM_IMPORTS", "['no_such_module_xyz']"], "CUSTOM_IMPORTS"),
    ("keep_checkpoints_negative", OK_YAML, ["SOLVER.KEEP_CHECKPOINTS", "-1"],
     "SOLVER.KEEP_CHECKPOINTS: expected an integer >= 0, got -1"),
]
FILE_FAULTS = ["missing", "directory", "unreadable", "wrong_extension"]


def make_cfg_file(tmp_path: Path, text) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run_tool_in_process(tool: str, argv: list, capsys) -> str:
    """Run ``tools/<tool>.py``'s main; return stderr, asserting exit 2 and one ``error:`` line."""
    module = importlib.import_module(tool)
    with pytest.raises(SystemExit) as exited:
        module.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("tool", ["check_cfg", "explain_solver", "plot_lr"])
@pytest.mark.parametrize("name, text, overrides, fragment", CORPUS, ids=[c[0] for c in CORPUS])
def test_every_tool_refuses_the_corpus_with_one_line(tmp_path, capsys, tool, name, text, overrides, fragment):
    cfg_file = make_cfg_file(tmp_path, text)
    line = run_tool_in_process(tool, ["--cfg", str(cfg_file), *overrides], capsys)
    assert fragment in line


# What only the model tells (names that match none of its parameters or submodules, a
# scheduled key its optimizer lacks, a schedule a compiled step would recompile for): refused
# before training by every tool that builds the solver, as train_net refuses it.
# (name, YAML text, overrides, fragment, tools)
CHECKERS = ("check_cfg", "explain_solver", "plot_lr")
MODEL_FAULTS = [
    ("custom_key_matches_nothing", OK_YAML, ["SOLVER.OPTIMIZER.CUSTOM_KEYS", "[{'KEY': 'nothere', 'LR_MULT': 0.1}]"],
     "SOLVER.OPTIMIZER.CUSTOM_KEYS: KEY 'nothere' matches no trainable parameter", CHECKERS),
    ("freeze_matches_nothing", OK_YAML, ["SOLVER.OPTIMIZER.FREEZE", "['nothere']"],
     "SOLVER.OPTIMIZER.FREEZE: 'nothere' matches no parameter of DigitsCNN", CHECKERS),
    ("several_optimizers_without_train_step", OK_YAML, ["SOLVER.OPTIMIZERS.backbone.BASE_LR", "0.1"],
     "has no train_step(batch, optim_wrappers)", CHECKERS),
    ("optimizer_of_no_submodule", "MODEL: {TYPE: digits_gan}\n",
     ["SOLVER.OPTIMIZERS.generator.BASE_LR", "0.1", "SOLVER.OPTIMIZERS.critic.BASE_LR", "0.1"],
     "SOLVER.OPTIMIZERS.critic: DigitsGAN has no top-level submodule 'critic'", CHECKERS),
    ("scheduled_key_the_optimizer_lacks", OK_YAML,
     ["SOLVER.OPTIMIZER.TYPE", "AdamW", "SOLVER.SCHEDULER.PARAMS", "[{'PARAM': 'momentum', 'START': 0.9, 'END': 0.99}]"],
     "AdamW has no param-group key 'momentum'", CHECKERS),
    ("compiled_step_recompiling_each_change", OK_YAML,
     ["SOLVER.OPTIMIZER.COMPILE", "True", "SOLVER.OPTIMIZER.TYPE", "RMSprop", "SOLVER.SCHEDULER.POLICY", "ONE_CYCLE"],
     "SOLVER.OPTIMIZER.COMPILE: RMSprop takes the momentum", ("check_cfg", "explain_solver")),
]


@pytest.mark.parametrize("name, text, overrides, fragment, tools", MODEL_FAULTS, ids=[c[0] for c in MODEL_FAULTS])
def test_the_tools_refuse_what_only_the_model_tells(tmp_path, capsys, name, text, overrides, fragment, tools):
    for tool in tools:
        argv = ["--cfg", str(make_cfg_file(tmp_path, text)), *overrides]
        if tool == "plot_lr":
            argv += ["--out", str(tmp_path / "lr.png")]
        assert fragment in run_tool_in_process(tool, argv, capsys), tool
    assert not (tmp_path / "lr.png").exists()


def file_fault(tmp_path: Path, fault: str) -> Path:
    if fault == "missing":
        return tmp_path / "nope.yaml"
    if fault == "directory":
        (tmp_path / "dir.yaml").mkdir()
        return tmp_path / "dir.yaml"
    if fault == "wrong_extension":
        path = tmp_path / "job.json"
        path.write_text("{}")
        return path
    path = make_cfg_file(tmp_path, OK_YAML)
    path.chmod(0)
    return path


@pytest.mark.parametrize("fault", FILE_FAULTS)
def test_an_unusable_cfg_file_is_one_line(tmp_path, capsys, fault):
    if fault == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a file without read permission")
    line = run_tool_in_process("check_cfg", ["--cfg", str(file_fault(tmp_path, fault))], capsys)
    assert "--cfg" in line


TRAIN_CASES = [c for c in CORPUS if c[0] in (
    "not_utf8", "billion_laughs", "deep_lists", "section_twice", "override_inf", "seed_huge",
    "threads_huge", "classes_below_labels", "zero_iteration_schedule")]


@pytest.mark.parametrize("name, text, overrides, fragment", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_net_refuses_the_corpus_before_writing(tmp_path, name, text, overrides, fragment):
    cfg_file = make_cfg_file(tmp_path, text)
    before = snapshot_dir(tmp_path)
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", *overrides)
    assert_bad_input(result, fragment)
    assert snapshot_dir(tmp_path) == before


@pytest.mark.parametrize("output_dir, fragment", [
    ("/dev/null", "is not a directory"),
    ("job.yaml/out", "which is not a directory"),
    ("x" * 300, "longer than 255 bytes"),
    ("job.yaml", "is not a directory"),
])
def test_an_unusable_output_dir_is_one_line(tmp_path, output_dir, fragment):
    cfg_file = write_cfg(tmp_path, SHORT_JOB)
    before = snapshot_dir(tmp_path)
    assert_bad_input(train(tmp_path, cfg_file, "OUTPUT_DIR", output_dir), fragment)
    assert snapshot_dir(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Checkpoints: a hostile pointer, another optimizer, a weights-only file, leftovers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("short")
    cfg_file = write_cfg(cwd, SHORT_JOB)
    result = train(cwd, cfg_file, "OUTPUT_DIR", "out")
    assert result.returncode == 0, result.stderr
    return cwd, cfg_file


def copy_run(short_run, tmp_path: Path) -> Path:
    cwd, cfg_file = short_run
    subprocess.run(["cp", "-r", str(cwd / "out"), str(tmp_path / "out")], check=True)
    (tmp_path / "job.yaml").write_text(cfg_file.read_text())
    return tmp_path / "out"


@pytest.mark.parametrize("pointer", ["../elsewhere.pth", "/etc/passwd", "..", "link.pth"])
def test_a_pointer_outside_output_dir_is_refused(short_run, tmp_path, pointer):
    out = copy_run(short_run, tmp_path)
    (tmp_path / "elsewhere.pth").write_bytes((out / "model_final.pth").read_bytes())
    os.symlink(tmp_path / "elsewhere.pth", out / "link.pth")
    (out / "last_checkpoint").write_text(pointer)
    before = snapshot_dir(out)
    assert_bad_input(train(tmp_path, tmp_path / "job.yaml", "OUTPUT_DIR", "out", "--resume"),
                     "refusing to follow it")
    assert snapshot_dir(out) == before


def damage_file(path: Path, damage: str) -> None:
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "cannot be loaded (damaged or truncated: "),
    ("garbage", "cannot be loaded ("),
])
def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(short_run, tmp_path, damage, reason):
    """The run resumes from model_0000002.pth, says so in one line, and ends with the weights
    of the uninterrupted run (the state of short_run before the damage)."""
    out = copy_run(short_run, tmp_path)
    damage_file(out / "model_final.pth", damage)
    result = train(tmp_path, tmp_path / "job.yaml", "OUTPUT_DIR", "out", "--resume")
    assert result.returncode == 0, result.stderr
    # Warnings belong on standard error, as every other one-line message of the tools.
    assert not [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and f"skipped model_final.pth: {reason}" in warnings[0], result.stderr
    assert "resuming from out/model_0000002.pth (iteration 2)" in warnings[0]
    assert_same_final_state(out, short_run[0] / "out")


def test_a_damaged_checkpoint_that_resume_skipped_no_longer_counts_toward_retention(tmp_path):
    """A damaged newest periodic checkpoint that the resumed run does not rewrite (another
    SNAPSHOT_ITERS) is removed once a newer good one is on disk, so KEEP_CHECKPOINTS keeps
    good ones only."""
    job = {**SHORT_JOB, "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 2, "KEEP_CHECKPOINTS": 2,
                                   "SCHEDULER": {**SHORT_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 9}}}
    cfg_file = write_cfg(tmp_path, job)
    assert train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "SOLVER.SCHEDULER.TOTAL_ITERS", "7").returncode == 0
    out = tmp_path / "out"
    (out / "model_final.pth").unlink()
    (out / "last_checkpoint").unlink()
    damage_file(out / "model_0000006.pth", "garbage")  # resumes from model_0000004.pth
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume", "SOLVER.SNAPSHOT_ITERS", "4")
    assert result.returncode == 0, result.stderr
    assert "resuming from out/model_0000004.pth (iteration 4)" in result.stderr
    # The resumed run writes model_0000008.pth: the damaged 6 goes, the newest two good ones stay.
    assert sorted(p.name for p in out.glob("model_0*.pth")) == ["model_0000004.pth", "model_0000008.pth"]
    assert "Removed out/model_0000006.pth, which --resume skipped as unreadable" in (out / "log.txt").read_text()


def test_a_kill_between_the_final_checkpoint_and_its_pointer_resumes_from_the_final_one(tmp_path):
    """SNAPSHOT_ITERS 0: model_final.pth is the first checkpoint; a kill before last_checkpoint
    names it left nothing to resume. Now the final file is a candidate too, placed by its
    iterations among the periodic ones."""
    job = {**SHORT_JOB, "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 0}}
    cfg_file = write_cfg(tmp_path, job)
    assert train(tmp_path, cfg_file, "OUTPUT_DIR", "out").returncode == 0
    (tmp_path / "out" / "last_checkpoint").unlink()
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume", "SOLVER.SCHEDULER.TOTAL_ITERS", "6")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "warning: --resume: skipped last_checkpoint: missing or empty; resuming from out/model_final.pth "
        "(iteration 4), the newest readable checkpoint"]
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(6))


@pytest.mark.parametrize("damage, overrides, fragment", [
    ("none", ["SOLVER.OPTIMIZER.TYPE", "ADAMW"], "model_final.pth was saved by another optimizer type"),
    ("none", ["MODEL.CNN.HIDDEN_DIM", "32"], "model_final.pth was saved from a different model"),
    ("all", [], "no readable checkpoint in out; tried model_final.pth: cannot be loaded"),
    ("pointer_not_utf8", [], "cannot be read"),
])
def test_a_foreign_or_unusable_checkpoint_is_one_line_before_writing(short_run, tmp_path, damage,
                                                                    overrides, fragment):
    """A readable checkpoint of another model or optimizer (a config change) is refused, not
    skipped: the older ones are of the same run and would not fit either."""
    out = copy_run(short_run, tmp_path)
    if damage == "all":
        damage_file(out / "model_final.pth", "truncated")
        damage_file(out / "model_0000002.pth", "garbage")
    elif damage == "pointer_not_utf8":
        (out / "last_checkpoint").write_bytes(b"\xff\xfe.pth")
    before = snapshot_dir(out)
    result = train(tmp_path, tmp_path / "job.yaml", "OUTPUT_DIR", "out", "--resume", *overrides)
    assert_bad_input(result, fragment)
    if damage == "all":
        assert "model_0000002.pth: cannot be loaded" in result.stderr
    assert snapshot_dir(out) == before


def test_retention_keeps_the_newest_checkpoints_and_resume_falls_back_among_them(tmp_path):
    job = {**SHORT_JOB, "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 1, "KEEP_CHECKPOINTS": 2,
                                   "SCHEDULER": {**SHORT_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 5}}}
    cfg_file = write_cfg(tmp_path, job)
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.pth")) == [
        "model_0000003.pth", "model_0000004.pth", "model_best.pth", "model_final.pth"]
    subprocess.run(["cp", "-r", str(out), str(tmp_path / "reference")], check=True)
    # The two newest are damaged: the run resumes from the other kept one.
    damage_file(out / "model_final.pth", "truncated")
    damage_file(out / "model_0000004.pth", "garbage")
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume")
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # the warning, on standard error
    assert "skipped model_final.pth: cannot be loaded (damaged or truncated: " in result.stderr
    assert "; model_0000004.pth: cannot be loaded (" in result.stderr
    assert "resuming from out/model_0000003.pth (iteration 3)" in result.stderr
    assert_same_final_state(out, tmp_path / "reference")
    assert sorted(p.name for p in out.glob("*.pth")) == [
        "model_0000003.pth", "model_0000004.pth", "model_best.pth", "model_final.pth"]
    assert load(out / "model_0000004.pth")["iteration"] == 4  # rewritten whole


def test_leftovers_of_an_interrupted_write_are_removed(short_run, tmp_path):
    out = copy_run(short_run, tmp_path)
    (out / ".model_0000006.pth.tmp").write_bytes(b"half a checkpoint")
    (out / ".metrics.json.tmp").write_bytes(b"{")
    result = train(tmp_path, tmp_path / "job.yaml", "OUTPUT_DIR", "out", "--resume",
                   "SOLVER.SCHEDULER.TOTAL_ITERS", "6")
    assert result.returncode == 0, result.stderr
    assert not list(out.glob(".*.tmp"))
    assert "Removed 2 temporary file(s)" in (out / "log.txt").read_text()


# ---------------------------------------------------------------------------------------------
# Divergence and a full disk
# ---------------------------------------------------------------------------------------------
def test_non_finite_weights_never_reach_a_checkpoint(tmp_path):
    cfg_file = write_cfg(tmp_path, SHORT_JOB)
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "SOLVER.OPTIMIZER.BASE_LR", "1e38",
                   "SOLVER.SNAPSHOT_ITERS", "1", "SOLVER.OPTIMIZER.MOMENTUM", "0.0")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "last good checkpoint" in lines[0]
    for path in (tmp_path / "out").glob("*.pth"):
        assert all(torch.isfinite(t).all() for t in load(path)["model"].values()), path.name
    assert not list((tmp_path / "out").glob(".*.tmp"))


def limit_file_size(max_bytes: int):
    """preexec_fn: files of the child may not grow past ``max_bytes`` (a disk that fills up:
    write() fails with EFBIG, as it fails with ENOSPC on a full disk)."""
    def apply():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def one_line_on_a_full_disk(cwd: Path, cfg_file: Path, max_bytes: int) -> str:
    """Run ``cfg_file`` into OUTPUT_DIR out with files limited to ``max_bytes`` (writes past it
    fail as on a full disk); it must end with exit 1 and one line, which is returned."""
    result = subprocess.run(train_command(cfg_file, "OUTPUT_DIR", "out"), cwd=cwd,
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=limit_file_size(max_bytes))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
    line = one_line_on_a_full_disk(tmp_path, write_cfg(tmp_path, SHORT_JOB), 12_000)
    assert "cannot write" in line and "model_0000002.pth" in line
    assert not list((tmp_path / "out").glob(".*.tmp"))
    assert not (tmp_path / "out" / "model_0000002.pth").exists()


@pytest.mark.parametrize("writers, file", [
    (["json"], "out/metrics.json"), (["csv"], "out/metrics.csv"), ([], "out/log.txt"),
    (["tensorboard"], "out/events.out.tfevents.*"),
], ids=["metrics.json", "metrics.csv", "log.txt", "tensorboard"])
def test_a_full_disk_hitting_a_metrics_or_log_file_is_one_line_and_the_run_resumes(tmp_path, writers, file):
    """metrics.json, log.txt or the TensorBoard events fill the disk before a checkpoint does:
    one line naming the file and the last good checkpoint, exit 1; the run then resumes."""
    job = {**SHORT_JOB, "WRITERS": writers,
           "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 20,
                      "SCHEDULER": {**SHORT_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 3000}}}
    cfg_file = write_cfg(tmp_path, job)
    line = one_line_on_a_full_disk(tmp_path, cfg_file, 60_000)
    assert line.startswith(f"error: cannot write {file} (File too large); last good checkpoint: out/model_")
    done = load(tmp_path / "out" / (tmp_path / "out" / "last_checkpoint").read_text())["iteration"]
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume", "SOLVER.SCHEDULER.TOTAL_ITERS", str(done + 5))
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Signals and concurrent runs
# ---------------------------------------------------------------------------------------------
def start_endless_run(cwd: Path) -> subprocess.Popen:
    cfg_file = write_cfg(cwd, ENDLESS, "endless.yaml")
    process = subprocess.Popen(train_command(cfg_file, "OUTPUT_DIR", "out"), cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = cwd / "out" / "metrics.json"
    while not (metrics.exists() and metrics.stat().st_size > 0):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return process


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_checkpoints_and_says_how_to_resume(tmp_path, signum, status):
    process = start_endless_run(tmp_path)
    if signum == signal.SIGTERM:
        # A second run on the same OUTPUT_DIR is refused while the first one holds it.
        before = snapshot_dir(tmp_path / "out")
        second = train(tmp_path, tmp_path / "endless.yaml", "OUTPUT_DIR", "out")
        assert_bad_input(second, "another run is writing to it")
        assert set(snapshot_dir(tmp_path / "out")) == set(before)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"stopped by {signal.Signals(signum).name} after" in lines[0] and "--resume" in lines[0]
    done = load(tmp_path / "out" / (tmp_path / "out" / "last_checkpoint").read_text())["iteration"]
    assert f"model_{done:07d}.pth" in lines[0]
    assert read_metrics(tmp_path / "out")[-1]["iteration"] == done - 1
    result = train(tmp_path, tmp_path / "endless.yaml", "OUTPUT_DIR", "out", "--resume",
                   "SOLVER.SCHEDULER.TOTAL_ITERS", str(done + 2))
    assert result.returncode == 0, result.stderr
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(done + 2))


def sigkill_during_checkpoint_writes(cwd: Path, cfg_file: Path, kills: int) -> None:
    """Start the run of ``cfg_file`` (resuming once there is a checkpoint) and SIGKILL it
    ``kills`` times, each time 0, 3, 6... ms after its first new checkpoint: with
    SNAPSHOT_ITERS 1 a checkpoint write is always under way, so kills land inside writes."""
    pointer = cwd / "out" / "last_checkpoint"
    for kill in range(kills):
        args = ["OUTPUT_DIR", "out"] + (["--resume"] if pointer.exists() else [])
        process = subprocess.Popen(train_command(cfg_file, *args), cwd=cwd,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = pointer.read_text() if pointer.exists() else None
        deadline = time.monotonic() + 120
        while not pointer.exists() or pointer.read_text() == first:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(0.003 * kill)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before the kill"


def test_sigkill_at_several_points_always_resumes(tmp_path):
    """SIGKILL at 4 moments of a run (some inside checkpoint writes); every resume then
    finishes and leaves no temporary file."""
    job = {**SHORT_JOB, "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 1,
                                   "SCHEDULER": {**SHORT_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 120}}}
    cfg_file = write_cfg(tmp_path, job)
    sigkill_during_checkpoint_writes(tmp_path, cfg_file, kills=4)
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume")
    assert result.returncode == 0, result.stderr
    assert not list((tmp_path / "out").glob(".*.tmp"))
    # Every iteration logged once, in order (a metrics line precedes its checkpoint, so a kill
    # in between makes the resume rewrite it).
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(120))
    assert load(tmp_path / "out" / "model_final.pth")["iteration"] == 120
