"""Defaults of the ``SOLVER`` section: the reference documentation of every solver key.

Units are named in each comment: "iterations" means optimizer steps, "epochs" means passes over
the training set (converted to iterations with the data loader's length).
"""
from yacs.config import CfgNode as CN

SOLVER = CN()

# ---------------------------------------------------------------------------------------------
# Optimizer: how parameters are grouped and which torch.optim class updates them.
# ---------------------------------------------------------------------------------------------
SOLVER.OPTIMIZER = CN()
# A name in the OPTIMIZERS registry (pet.lib.utils.optimizers_torch), case-insensitive: every
# torch.optim class (SGD, ADAMW, ADAM, RMSPROP, ADAMAX, NADAM, RADAM, ADAGRAD, ADADELTA,
# ADAFACTOR, ASGD, RPROP, SPARSEADAM for sparse gradients only), MUON (Muon for the 2-D hidden
# matrices + AdamW for the rest, see MUON below), or a class registered with
# @OPTIMIZERS.register() in a CUSTOM_IMPORTS module. LBFGS is refused: its step needs a closure.
SOLVER.OPTIMIZER.TYPE = "SGD"
# Which torch kernel runs the step: "auto" (fused where torch supports it for the optimizer,
# device and dtype, else foreach on CUDA, else the per-tensor loop; the loop when an
# embedding has sparse=True, which only SGD steps, unclipped), or force one of
# "fused", "foreach", "loop".
SOLVER.OPTIMIZER.IMPLEMENTATION = "auto"
# Compile the optimizer step (clipping included) with torch.compile, once: every group's lr is
# held as a tensor the schedules write into, and so are SGD's momentum and weight decay and
# Adam's/AdamW's betas and weight decay (they step through our branch-free copy of torch's
# update, pet/lib/utils/tensor_updates.py), so no schedule recompiles it. Other optimizers keep
# momentum and weight decay as numbers: a schedule of those is refused. Takes the per-tensor
# loop implementation (compile generates the fused kernel); not with float16's GradScaler.
SOLVER.OPTIMIZER.COMPILE = False
# Learning rate of the default parameter group at the top of the schedule (no unit; the
# scheduler multiplies it by the schedule's factor every iteration).
SOLVER.OPTIMIZER.BASE_LR = 0.1
# lr multiplier for biases that are not norm or embedding parameters: lr = BASE_LR * factor
# (MMEngine's bias_lr_mult).
SOLVER.OPTIMIZER.BIAS_LR_FACTOR = 1.0
# lr multiplier for every parameter under the top-level module `backbone` (applied on top of
# the rule's lr).
SOLVER.OPTIMIZER.BACKBONE_LR_FACTOR = 1.0
# Weight decay (L2 for SGD/ADAM/RMSPROP/..., decoupled for ADAMW and MUON) of the default
# parameters. Classes that take none (RPROP, SPARSEADAM) need every weight decay key at 0.
SOLVER.OPTIMIZER.WEIGHT_DECAY = 1e-4
# Weight decay of biases that are not norm or embedding parameters.
SOLVER.OPTIMIZER.WEIGHT_DECAY_BIAS = 0.0
# Weight decay of the weights and biases of normalization layers (BatchNorm, GroupNorm,
# InstanceNorm, LayerNorm, LocalResponseNorm, RMSNorm and their subclasses).
SOLVER.OPTIMIZER.WEIGHT_DECAY_NORM = 0.0
# Weight decay of embedding parameters (nn.Embedding weights and names matching EMBED_KEYWORDS).
SOLVER.OPTIMIZER.WEIGHT_DECAY_EMBED = 0.0
# A parameter whose last name component contains one of these words is an embedding parameter.
SOLVER.OPTIMIZER.EMBED_KEYWORDS = (
    "pos_embed",
    "position_embedding",
    "absolute_pos_embed",
    "cls_token",
    "dist_token",
    "relative_position_bias_table",
)
# Weight-decay multiplier of depth-wise convolution weights (groups == in_channels):
# WEIGHT_DECAY * mult, rule "dwconv" (MMEngine's dwconv_decay_mult; 1.0 = off).
SOLVER.OPTIMIZER.DWCONV_DECAY_MULT = 1.0
# Weight-decay multiplier of every 1-D (or scalar) parameter that no norm/embed/bias/dwconv
# rule took (layer scales, gates): WEIGHT_DECAY * mult, rule "flat" (MMEngine's
# flat_decay_mult; 1.0 = off). 0 with the default WEIGHT_DECAY_BIAS/NORM = 0 gives timm's "no
# weight decay on any 1-D parameter".
SOLVER.OPTIMIZER.FLAT_DECAY_MULT = 1.0
# The rules tried, in order, on each parameter that no CUSTOM_KEYS entry took; the first that
# matches wins, none gives "default". Names of the PARAM_RULES registry
# (pet.lib.utils.param_rules): norm, embed, bias, dwconv, flat, or a rule registered in a
# CUSTOM_IMPORTS module (list it here to use it).
SOLVER.OPTIMIZER.RULES = ("norm", "embed", "bias", "dwconv", "flat")
# Rules by parameter name (MMEngine's custom_keys): a list of mappings
# {KEY: name substring, LR_MULT: x, DECAY_MULT: y} (either mult may be left out: 1.0). A
# parameter whose full name contains KEY gets the "custom" rule: lr = BASE_LR * LR_MULT and
# weight decay = WEIGHT_DECAY * DECAY_MULT, in place of its other rule (the longest matching KEY
# wins; the modifiers below still apply). A KEY that matches no trainable parameter is an
# error. E.g. [{KEY: head, LR_MULT: 10.0}]. LR_MULT 0 freezes nothing: use FREEZE.
SOLVER.OPTIMIZER.CUSTOM_KEYS = ()
# Name substrings of parameters to freeze: they get requires_grad=False and no param group. A
# substring that matches no parameter is an error. E.g. ["backbone.pixel_embed"].
SOLVER.OPTIMIZER.FREEZE = ()
# Layer-wise lr decay (BEiT/MAE fine-tuning; 1.0 = off), on top of the rules: with L blocks,
# everything before the first block (embeddings) gets lr x decay^(L+1), block i lr x
# decay^(L-i), everything after the last block x 1.
SOLVER.OPTIMIZER.LAYER_DECAY = 1.0
# Regular expression whose first group is a parameter's block number (searched in its full
# name); the default finds "blocks.N.", "layers.N." and "layer.N." (timm, the shipped
# transformer's "backbone.blocks.layers.N.").
SOLVER.OPTIMIZER.LAYER_DECAY_BLOCK_PATTERN = r"(?:^|\.)(?:blocks|layers|layer)\.(\d+)\."
# Global multiplier of every parameter's lr, after every rule and modifier (shown as "+global"
# by tools/explain_solver.py; 1.0 = off).
SOLVER.OPTIMIZER.LR_MULT = 1.0
# Global multiplier of every parameter's weight decay, likewise.
SOLVER.OPTIMIZER.DECAY_MULT = 1.0
# A name in the PARAM_GROUPS_BUILDERS registry (pet.lib.utils.param_groups): "default" (the
# rules above, groups merged by identical hyper-parameters), or a function (model,
# GroupingSpec) -> param groups registered in a CUSTOM_IMPORTS module (MMEngine's constructor).
SOLVER.OPTIMIZER.PARAM_GROUPS_BUILDER = "default"
# Momentum of SGD and RMSPROP (0 disables it).
SOLVER.OPTIMIZER.MOMENTUM = 0.9
# Use Nesterov momentum in SGD (needs MOMENTUM > 0).
SOLVER.OPTIMIZER.NESTEROV = False
# (beta1, beta2) of ADAM, ADAMW, ADAMAX, NADAM, RADAM and MUON's AdamW part: decay rates of the
# first and second moment estimates.
SOLVER.OPTIMIZER.BETAS = (0.9, 0.999)
# Term added to the denominator for numerical stability, for every class that takes an eps
# (ADAM, ADAMW, RMSPROP, ADAGRAD, ADADELTA, ...; not ADAFACTOR, whose eps is a pair: KWARGS);
# None keeps each class's own default (1e-8 for Adam, AdamW and RMSprop).
SOLVER.OPTIMIZER.EPS = None
# AMSGrad variant of ADAM, ADAMW and MUON's AdamW part.
SOLVER.OPTIMIZER.AMSGRAD = False
# Centered RMSPROP (normalizes by the gradient's estimated variance).
SOLVER.OPTIMIZER.CENTERED = False
# Smoothing constant of RMSPROP's squared-gradient average.
SOLVER.OPTIMIZER.RMSPROP_ALPHA = 0.99
# Any other keyword argument of the chosen class, by torch's name, e.g. for ADAGRAD
# `KWARGS: {lr_decay: 0.01, initial_accumulator_value: 0.1}` or on the command line
# `SOLVER.OPTIMIZER.KWARGS.lr_decay 0.01`. A keyword the class does not take, or one that has a
# typed key above, is an error listing the allowed ones.
SOLVER.OPTIMIZER.KWARGS = CN(new_allowed=True)

# TYPE MUON: torch.optim.Muon steps the 2-D hidden weight matrices, AdamW (BETAS, EPS, AMSGRAD)
# every other parameter; both follow the rules above (lr, weight decay) and the schedule.
SOLVER.OPTIMIZER.MUON = CN()
# Momentum of the Muon part.
SOLVER.OPTIMIZER.MUON.MOMENTUM = 0.95
# Nesterov momentum in the Muon part.
SOLVER.OPTIMIZER.MUON.NESTEROV = True
# Newton-Schulz iterations that orthogonalize each update.
SOLVER.OPTIMIZER.MUON.NS_STEPS = 5
# How Muon scales its lr by the matrix shape: "match_rms_adamw" (0.2 sqrt(max(rows, cols)):
# updates of AdamW's size, so one BASE_LR serves both parts) or "original" (Keller Jordan's
# sqrt(max(1, rows/cols)), which wants a Muon lr about 50x AdamW's: lower ADAMW_LR_MULT).
SOLVER.OPTIMIZER.MUON.ADJUST_LR_FN = "match_rms_adamw"
# lr of the AdamW part = its rule's lr x this.
SOLVER.OPTIMIZER.MUON.ADAMW_LR_MULT = 1.0
# Name substrings of 2-D weights stepped by AdamW all the same (the output head; embeddings
# always are).
SOLVER.OPTIMIZER.MUON.ADAMW_KEYS = ("head", "classifier")

# Gradient clipping, applied inside optimizer.step() to the real (unscaled) gradients.
SOLVER.OPTIMIZER.CLIP_GRADIENTS = CN()
# Clip gradients at every step (all optimizer types).
SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED = False
# A name in the CLIP_TYPES registry (pet.lib.utils.grad_clip):
# "value": clamp every gradient element to [-CLIP_VALUE, CLIP_VALUE];
# "norm": clip each parameter's gradient separately to norm CLIP_VALUE;
# "full_model": clip all gradients jointly to total norm CLIP_VALUE.
SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
# The bound: a maximum absolute value ("value") or a maximum norm ("norm", "full_model").
SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
# The p of the p-norm for "norm" and "full_model" (> 0; .inf for the max-norm).
SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE = 2.0

# ---------------------------------------------------------------------------------------------
# Scheduler: the learning-rate factor as a closed-form function of the iteration.
# ---------------------------------------------------------------------------------------------
SOLVER.SCHEDULER = CN()
# A name in the LR_POLICIES registry (pet.lib.utils.lr_scheduler), case-insensitive: STEP,
# COSINE, STEP_COSINE, POLY; EXPONENTIAL, LINEAR, COSINE_RESTARTS, ONE_CYCLE, CYCLIC (torch's
# schedulers, each configured in the sub-node of its name below); WSD (warmup-stable-decay);
# PHASES (the list SOLVER.SCHEDULER.PHASES); or a function (schedule, i) -> factor registered
# with @LR_POLICIES.register().
SOLVER.SCHEDULER.POLICY = "STEP"
# Length of the schedule in iterations (used when TOTAL_EPOCHS is None).
SOLVER.SCHEDULER.TOTAL_ITERS = 1000
# Length of the schedule in epochs; when set, the schedule is epoch-based: TOTAL_ITERS is
# ignored and STEPS are read in epochs.
SOLVER.SCHEDULER.TOTAL_EPOCHS = None
# Milestones where STEP and STEP_COSINE multiply the lr by GAMMA, sorted, in iterations (or in
# epochs when TOTAL_EPOCHS is set). STEP_COSINE switches to cosine at the last one.
SOLVER.SCHEDULER.STEPS = (600, 800)
# Factor applied at each milestone (> 0).
SOLVER.SCHEDULER.GAMMA = 0.1
# Length of the warm-up in iterations (used when WARM_UP_EPOCHS is None; 0 disables warm-up).
SOLVER.SCHEDULER.WARM_UP_ITERS = 50
# Length of the warm-up in epochs; when set, it replaces WARM_UP_ITERS.
SOLVER.SCHEDULER.WARM_UP_EPOCHS = None
# lr factor at the first warm-up iteration, in [0, 1].
SOLVER.SCHEDULER.WARM_UP_FACTOR = 1.0 / 3
# CONSTANT (factor WARM_UP_FACTOR during the warm-up) or LINEAR (from WARM_UP_FACTOR to 1).
SOLVER.SCHEDULER.WARM_UP_METHOD = "LINEAR"
# An lr change whose ratio (new/old or old/new) exceeds this is written to the log.
SOLVER.SCHEDULER.LOG_LR_CHANGE_THRESHOLD = 1.1
# Power of the POLY decay.
SOLVER.SCHEDULER.LR_POW = 0.9
# Floor of the policies that decay to one (COSINE, POLY, the cosine part of STEP_COSINE,
# COSINE_RESTARTS, WSD, and those inside PHASES), as a fraction of each group's lr, in [0, 1].
SOLVER.SCHEDULER.MIN_LR_FACTOR = 0.0
# The same floor as an absolute lr, one for every group (torch's and MMEngine's eta_min), >= 0;
# None: MIN_LR_FACTOR decides. Set MIN_LR or MIN_LR_FACTOR, not both. A group whose lr is 0
# stays at 0.
SOLVER.SCHEDULER.MIN_LR = None

# Each torch-like policy reads the sub-node of its name; the keys are torch's argument names
# upper-cased. BASE_LR (times each group's factors) is torch's base lr, or its max_lr for
# ONE_CYCLE and CYCLIC. A configured warm-up runs first; the policy runs over the rest of the
# schedule. Lengths are in the schedule's unit: iterations, or epochs when TOTAL_EPOCHS is set.
# EXPONENTIAL (torch ExponentialLR): factor GAMMA ** (iterations since the warm-up), or
# GAMMA ** (epochs completed since the warm-up) in epoch mode.
SOLVER.SCHEDULER.EXPONENTIAL = CN()
# Multiplier per iteration (per epoch in epoch mode), in (0, 1].
SOLVER.SCHEDULER.EXPONENTIAL.GAMMA = 0.999
# LINEAR (torch LinearLR as a decay): a straight line from START_FACTOR to END_FACTOR over the
# schedule (after the warm-up).
SOLVER.SCHEDULER.LINEAR = CN()
# Factor at the first iteration after the warm-up, in (0, 1].
SOLVER.SCHEDULER.LINEAR.START_FACTOR = 1.0
# Factor at the end of the schedule, in [0, 1].
SOLVER.SCHEDULER.LINEAR.END_FACTOR = 0.0
# COSINE_RESTARTS (torch CosineAnnealingWarmRestarts): cosine cycles from 1 down to the floor,
# each restarting at 1; floor MIN_LR_FACTOR or MIN_LR (torch's eta_min).
SOLVER.SCHEDULER.COSINE_RESTARTS = CN()
# Length of the first cycle, in the schedule's unit (> 0).
SOLVER.SCHEDULER.COSINE_RESTARTS.T_0 = 100
# Each cycle is T_MULT times as long as the one before (an integer >= 1).
SOLVER.SCHEDULER.COSINE_RESTARTS.T_MULT = 1
# ONE_CYCLE (torch OneCycleLR, max_lr = BASE_LR, total_steps = the schedule's length): up from
# BASE_LR / DIV_FACTOR to BASE_LR, then down to BASE_LR / DIV_FACTOR / FINAL_DIV_FACTOR.
SOLVER.SCHEDULER.ONE_CYCLE = CN()
# Fraction of the schedule spent increasing the lr, in (0, 1).
SOLVER.SCHEDULER.ONE_CYCLE.PCT_START = 0.3
# The lr starts at BASE_LR / DIV_FACTOR (> 0).
SOLVER.SCHEDULER.ONE_CYCLE.DIV_FACTOR = 25.0
# The lr ends at BASE_LR / DIV_FACTOR / FINAL_DIV_FACTOR (> 0).
SOLVER.SCHEDULER.ONE_CYCLE.FINAL_DIV_FACTOR = 1e4
# "cos" or "linear" annealing between the lrs (and momenta).
SOLVER.SCHEDULER.ONE_CYCLE.ANNEAL_STRATEGY = "cos"
# True: up, back down to the start lr, then down to the end lr (torch's three_phase).
SOLVER.SCHEDULER.ONE_CYCLE.THREE_PHASE = False
# Cycle the momentum against the lr (SGD/RMSPROP momentum, ADAM/ADAMW beta1), between
# MAX_MOMENTUM (lr at its bottom) and BASE_MOMENTUM (lr at its top).
SOLVER.SCHEDULER.ONE_CYCLE.CYCLE_MOMENTUM = True
# The momentum while the lr is at its top, in [0, 1).
SOLVER.SCHEDULER.ONE_CYCLE.BASE_MOMENTUM = 0.85
# The momentum while the lr is at its bottom, in [0, 1).
SOLVER.SCHEDULER.ONE_CYCLE.MAX_MOMENTUM = 0.95
# CYCLIC (torch CyclicLR, max_lr = BASE_LR): triangles between BASE_LR * BASE_LR_FACTOR and
# BASE_LR.
SOLVER.SCHEDULER.CYCLIC = CN()
# The bottom of the cycle as a fraction of BASE_LR (torch's base_lr / max_lr), in [0, 1].
SOLVER.SCHEDULER.CYCLIC.BASE_LR_FACTOR = 0.1
# Length of the increasing half of a cycle, in the schedule's unit (> 0).
SOLVER.SCHEDULER.CYCLIC.STEP_SIZE_UP = 100
# Length of the decreasing half, in the schedule's unit; None: STEP_SIZE_UP.
SOLVER.SCHEDULER.CYCLIC.STEP_SIZE_DOWN = None
# "triangular" (constant height), "triangular2" (halved each cycle) or "exp_range" (height
# times GAMMA ** iteration).
SOLVER.SCHEDULER.CYCLIC.MODE = "triangular"
# Base of "exp_range"'s scaling, per iteration, in (0, 1].
SOLVER.SCHEDULER.CYCLIC.GAMMA = 1.0
# Cycle the momentum against the lr, as ONE_CYCLE's keys.
SOLVER.SCHEDULER.CYCLIC.CYCLE_MOMENTUM = True
# The momentum while the lr is at its top, in [0, 1).
SOLVER.SCHEDULER.CYCLIC.BASE_MOMENTUM = 0.8
# The momentum while the lr is at its bottom, in [0, 1).
SOLVER.SCHEDULER.CYCLIC.MAX_MOMENTUM = 0.9
# WSD (warmup-stable-decay): the warm-up, factor 1 (stable), then a decay over the last
# iterations down to the floor. The decay is placed from the end of the schedule, so a run
# resumed with a longer TOTAL_ITERS (TOTAL_EPOCHS) keeps its stable phase and decays at the
# new end.
SOLVER.SCHEDULER.WSD = CN()
# Length of the decay in iterations (an integer >= 1); None: DECAY_FRACTION of the schedule.
SOLVER.SCHEDULER.WSD.DECAY_ITERS = None
# Length of the decay as a fraction of the whole schedule, in (0, 1] (when DECAY_ITERS is None).
SOLVER.SCHEDULER.WSD.DECAY_FRACTION = 0.1
# LINEAR (1 - p), COSINE ((1 + cos(pi p)) / 2) or SQRT (1 - sqrt(p)), p the decay's progress.
SOLVER.SCHEDULER.WSD.DECAY_SHAPE = "LINEAR"

# Composed phases, read when POLICY is PHASES: a list of mappings that run back to back after
# the warm-up, each {POLICY: a policy name, LENGTH: in the schedule's unit (may be left out on
# the last phase: the rest of the schedule), SCALE: optional, and the policy's own keys: those
# of its sub-node above (e.g. GAMMA of EXPONENTIAL), STEPS and GAMMA for STEP and STEP_COSINE
# (STEPS counted from the phase's start), LR_POW for POLY}. Keys left out take their values from
# SOLVER.SCHEDULER. A phase's factors are multiplied by its SCALE; without SCALE, by the factor
# where the previous phase ended (1 for the first). E.g.
# [{POLICY: LINEAR, LENGTH: 100, START_FACTOR: 0.01, END_FACTOR: 1.0}, {POLICY: COSINE}].
SOLVER.SCHEDULER.PHASES = ()
# Hyper-parameters scheduled beside the lr (MMEngine's param schedulers of any param_name): a
# list of {PARAM: a numeric param-group key (weight_decay, momentum, eps, ...), START: its value
# at the top of the schedule, END: its value at the end, POLICY: an LR_POLICIES name (default
# COSINE), and optionally TOTAL_ITERS/TOTAL_EPOCHS (default this schedule's), STEPS, GAMMA,
# LR_POW, WARM_UP_ITERS/WARM_UP_EPOCHS, WARM_UP_FACTOR, WARM_UP_METHOD (default: no warm-up)}.
# The value follows the policy's factor curve f mapped linearly so that f = 1 is START and the
# curve's end is END: END + (START - END) * (f - f_end) / (1 - f_end); COSINE is DINO's cosine
# schedule. Each param group keeps its ratio to START (a group with weight decay 0 keeps 0).
# Logged in metrics.json (the value of the largest group) and drawn by tools/plot_lr.py. E.g.
# DINO's weight decay: [{PARAM: weight_decay, START: 0.04, END: 0.4}] with WEIGHT_DECAY 0.04.
SOLVER.SCHEDULER.PARAMS = ()

# ---------------------------------------------------------------------------------------------
# Several optimizers (MMEngine's MultiOptimWrapperConstructor: a GAN's generator and
# discriminator). A mapping from a top-level submodule name of the model to an optimizer node:
# any SOLVER.OPTIMIZER key (TYPE, BASE_LR, BETAS, the rules, CLIP_GRADIENTS, ...; the keys not
# given are SOLVER.OPTIMIZER's) and SCHEDULER, a node of SOLVER.SCHEDULER keys for this
# optimizer's own schedule (the keys not given are SOLVER.SCHEDULER's; the run's length stays
# SOLVER.SCHEDULER's). Every trainable parameter must belong to exactly one of the submodules
# named. The model must define train_step(batch, optim_wrappers) -> {name: loss}, which calls
# update_params on the wrapper of each optimizer it steps (MMEngine's protocol); the trainer
# hands it an OptimWrapperDict and logs what it returns. Empty: one optimizer, SOLVER.OPTIMIZER.
# E.g. {generator: {TYPE: ADAM, BASE_LR: 0.0002, BETAS: [0.5, 0.999]},
#       discriminator: {TYPE: ADAM, BASE_LR: 0.0001, SCHEDULER: {POLICY: COSINE}}}.
SOLVER.OPTIMIZERS = CN(new_allowed=True)

# ---------------------------------------------------------------------------------------------
# Checkpointing.
# ---------------------------------------------------------------------------------------------
# Save a checkpoint every this many iterations (0 disables periodic checkpoints; the final
# model is always saved).
SOLVER.SNAPSHOT_ITERS = 0
# Save a checkpoint every this many epochs (replaces SNAPSHOT_ITERS when set).
SOLVER.SNAPSHOT_EPOCHS = None
# Keep the newest this many periodic checkpoints (model_<iterations>.pth, those of a stop signal
# included) in OUTPUT_DIR, deleting older ones once a new one and last_checkpoint are written;
# 0 keeps all. model_final.pth and model_best.pth are never deleted.
SOLVER.KEEP_CHECKPOINTS = 0
# Write each periodic checkpoint in the background (torch.distributed.checkpoint's async_save)
# while training goes on; SOLVER.DISTRIBUTED.STRATEGY fsdp only. The next checkpoint, a stop
# signal's (written at once) and the end of the run first wait for the previous one. A checkpoint
# appears in OUTPUT_DIR (and last_checkpoint names it) only once every process's shards are on
# disk, so a crash mid-write leaves the one before as the state --resume starts from.
SOLVER.ASYNC_CHECKPOINT = False

# ---------------------------------------------------------------------------------------------
# How the processes of a torchrun job share the model (pet.engine.fsdp).
# ---------------------------------------------------------------------------------------------
SOLVER.DISTRIBUTED = CN()
# "ddp": every process holds the whole model, its gradients and its optimizer state
# (DistributedDataParallel; checkpoints are one file, model_<iterations>.pth). "fsdp": each of
# the N processes holds 1/N of them (FSDP2's fully_shard on each block of FSDP_BLOCKS, then on the
# root): a block's parameters are gathered for its forward and backward and freed after, its
# gradients reduce-scattered. Param groups and rules see the original names and shapes;
# full_model clipping and grad_norm use the norm over all shards, "norm" clipping each whole
# parameter's. Adam and AdamW step the shards with their fused kernels; MUON, ADAFACTOR, RPROP
# and SPARSEADAM cannot step shards and are refused. SOLVER.AMP becomes FSDP2's
# MixedPrecisionPolicy (parameters in the AMP dtype, gradients reduced in float32; float16 with
# a GradScaler whose skip decision is shared).
# Checkpoints are directories model_<iterations>.dcp of each process's shards (torch.distributed.
# checkpoint); a run resumes from either kind on any number of processes under either strategy,
# and tools/convert_checkpoint.py turns one into a model_final.pth of plain weights. Needs
# torchrun with 2 or more processes; not with SOLVER.OPTIMIZERS. MODEL.COMPILE compiles each
# block in place after sharding, SOLVER.OPTIMIZER.COMPILE the step on the shards. MODEL.EMA's
# average is sharded alike.
SOLVER.DISTRIBUTED.STRATEGY = "ddp"
# Under fsdp: the submodules sharded as blocks, as fnmatch patterns of their names in
# model.named_modules() ("backbone.blocks.layers.*": each layer). Empty: the blocks the model
# names itself through an fsdp_blocks() method returning modules (the transformer's encoder
# layers); a model with neither is refused.
SOLVER.DISTRIBUTED.FSDP_BLOCKS = ()

# ---------------------------------------------------------------------------------------------
# The step: accumulation and mixed precision (pet.lib.utils.optim_wrapper).
# ---------------------------------------------------------------------------------------------
# Micro-batches per optimizer step (k). DATA.BATCH_SIZE stays the images of one step over all
# processes: each of the N processes runs k micro-batches of BATCH_SIZE / (N * k) images, and
# each micro-batch's loss is weighted so the step's gradient is the mean over the whole batch.
# Iterations (TOTAL_ITERS, STEPS, periods) keep counting optimizer steps. BatchNorm computes
# its statistics per micro-batch, so a model with BatchNorm trains differently with k > 1.
SOLVER.ACCUMULATION_STEPS = 1

SOLVER.AMP = CN()
# Run the forward pass under torch.autocast on the run's device (MODEL.DEVICE).
SOLVER.AMP.ENABLED = False
# "bfloat16" (no loss scaling needed) or "float16" (with torch.amp.GradScaler: the loss is
# scaled, clipping sees unscaled gradients, a step with inf/nan gradients is skipped and
# counted in the metrics as skipped_steps).
SOLVER.AMP.DTYPE = "bfloat16"

# A step whose gradients (or, in one process, loss) are inf or nan is never taken (skipped on
# the device by the fused kernels, which read nothing back): with 0 the run stops at the next
# logged iteration (LOG_PERIOD, an evaluation, the last) or checkpoint, whichever comes first,
# with one line naming the step's iteration and the last good checkpoint; with N > 0 such
# steps are skipped (the schedule still advances), counted in the metrics as nonfinite_steps,
# and the run stops likewise at the (N + 1)-th in a row. Under float16 AMP the GradScaler skips
# steps with inf/nan gradients itself (skipped_steps); this guards the loss.
SOLVER.SKIP_NONFINITE = 0
