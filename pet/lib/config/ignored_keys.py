"""Keys that were set (differ from their defaults) but that the run will ignore: each one line
naming the key, for ``tools/check_cfg.py`` to warn about (the config is still valid)."""
from typing import List, Sequence, Tuple

from yacs.config import CfgNode

from pet.lib.config.defaults import get_cfg

_SCHED = "SOLVER.SCHEDULER"


def _changed(node: CfgNode, default: CfgNode, key: str) -> bool:
    return node[key] != default[key]


def replaced_keys(cfg: CfgNode) -> List[str]:
    """Iteration keys replaced by their epoch keys (TOTAL_ITERS by TOTAL_EPOCHS, ...)."""
    default, found = get_cfg(), []
    pairs = [(cfg.SOLVER.SCHEDULER, default.SOLVER.SCHEDULER, _SCHED, "TOTAL_ITERS", "TOTAL_EPOCHS"),
             (cfg.SOLVER.SCHEDULER, default.SOLVER.SCHEDULER, _SCHED, "WARM_UP_ITERS", "WARM_UP_EPOCHS"),
             (cfg.SOLVER, default.SOLVER, "SOLVER", "SNAPSHOT_ITERS", "SNAPSHOT_EPOCHS"),
             (cfg.TEST, default.TEST, "TEST", "EVAL_ITERS", "EVAL_EPOCHS")]
    for node, default_node, section, key, replacement in pairs:
        if node[replacement] is not None and _changed(node, default_node, key):
            found.append(f"{section}.{key}={node[key]} is ignored: {section}.{replacement} is set")
    return found


def ignored_scheduler_keys(scheduler: CfgNode, policy: str, uses_milestones: bool, uses_floor: bool,
                           warmup_iters: int, milestones: Sequence[int],
                           section: str = _SCHED) -> List[Tuple[str, str]]:
    """(key, line) for each key of ``scheduler`` (SOLVER.SCHEDULER, or an optimizer's merged
    one: ``section`` names it in the lines) that the selected ``policy`` does not read, and for
    milestones that fall inside the warm-up (``milestones`` and ``warmup_iters`` in
    iterations). PHASES reads the policy keys of its phases, so none of those is reported for it."""
    default = get_cfg().SOLVER.SCHEDULER
    found = []

    def unread(key: str, why: str) -> None:
        if _changed(scheduler, default, key):
            found.append((key, f"{section}.{key}={scheduler[key]} is ignored: {why}"))

    reads_policy_keys = policy == "PHASES"
    if not (uses_milestones or reads_policy_keys):
        unread("STEPS", f"POLICY {policy} has no milestones")
        unread("GAMMA", f"POLICY {policy} has no milestones")
    if policy not in ("POLY", "PHASES"):
        unread("LR_POW", f"POLICY {policy} is not POLY")
    if not uses_floor:
        unread("MIN_LR_FACTOR", f"POLICY {policy} has no floor")
        unread("MIN_LR", f"POLICY {policy} has no floor")
    if warmup_iters == 0:
        unread("WARM_UP_FACTOR", "there is no warm-up")
        unread("WARM_UP_METHOD", "there is no warm-up")
    early = [m for m in milestones if m < warmup_iters]
    if early:
        found.append(("STEPS", f"{section}.STEPS: milestone(s) at iteration(s) {', '.join(map(str, early))} "
                               f"fall inside the warm-up ({warmup_iters} iterations)"))
    for name, node in scheduler.items():
        if isinstance(node, CfgNode) and name != policy and not reads_policy_keys:
            found.extend((f"{name}.{key}", f"{section}.{name}.{key}={node[key]} is ignored: POLICY is {policy}")
                         for key in node if _changed(node, default[name], key))
    wsd = scheduler.WSD
    if policy == "WSD" and wsd.DECAY_ITERS is not None and _changed(wsd, default.WSD, "DECAY_FRACTION"):
        found.append(("WSD.DECAY_FRACTION", f"{section}.WSD.DECAY_FRACTION={wsd.DECAY_FRACTION} is ignored: "
                                            f"{section}.WSD.DECAY_ITERS is set"))
    return found
