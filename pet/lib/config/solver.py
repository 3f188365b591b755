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
# A name in the OPTIMIZERS registry (pet.lib.utils.optimizer), case-insensitive: SGD, ADAMW,
# ADAM, RMSPROP, or a class registered with @OPTIMIZERS.register().
SOLVER.OPTIMIZER.TYPE = "SGD"
# Which torch kernel runs the step: "auto" (fused where torch supports it for the optimizer,
# device and dtype, else foreach on CUDA, else the per-tensor loop; the loop when an
# embedding has sparse=True, which only SGD steps, unclipped), or force one of
# "fused", "foreach", "loop".
SOLVER.OPTIMIZER.IMPLEMENTATION = "auto"
# Learning rate of the default parameter group at the top of the schedule (no unit; the
# scheduler multiplies it by the schedule's factor every iteration).
SOLVER.OPTIMIZER.BASE_LR = 0.1
# lr multiplier for biases that are not norm or embedding parameters: lr = BASE_LR * factor.
SOLVER.OPTIMIZER.BIAS_LR_FACTOR = 1.0
# lr multiplier for every parameter under the top-level module `backbone` (applied on top of
# the bias factor).
SOLVER.OPTIMIZER.BACKBONE_LR_FACTOR = 1.0
# Weight decay (L2 for SGD/ADAM/RMSPROP, decoupled for ADAMW) of the default parameters.
SOLVER.OPTIMIZER.WEIGHT_DECAY = 1e-4
# Weight decay of biases that are not norm or embedding parameters.
SOLVER.OPTIMIZER.WEIGHT_DECAY_BIAS = 0.0
# Weight decay of the weights and biases of normalization layers (BatchNorm, GroupNorm,
# InstanceNorm, LayerNorm, LocalResponseNorm and their subclasses).
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
# Rules by parameter name, like MMEngine's custom_keys: a list of
# (KEYWORD, LR_FACTOR, WEIGHT_DECAY_FACTOR). A parameter whose full name contains KEYWORD gets
# the "custom" rule: lr = BASE_LR * LR_FACTOR and weight decay = WEIGHT_DECAY *
# WEIGHT_DECAY_FACTOR, in place of its norm/embed/bias/default rule (the longest matching
# KEYWORD wins; BACKBONE_LR_FACTOR still applies). E.g. [["head", 10.0, 1.0]].
SOLVER.OPTIMIZER.CUSTOM_RULES = ()
# Momentum of SGD and RMSPROP (0 disables it).
SOLVER.OPTIMIZER.MOMENTUM = 0.9
# Use Nesterov momentum in SGD (needs MOMENTUM > 0).
SOLVER.OPTIMIZER.NESTEROV = False
# (beta1, beta2) of ADAM and ADAMW: decay rates of the first and second moment estimates.
SOLVER.OPTIMIZER.BETAS = (0.9, 0.999)
# Term added to the denominator of ADAM, ADAMW and RMSPROP for numerical stability.
SOLVER.OPTIMIZER.EPS = 1e-8
# Smoothing constant of RMSPROP's squared-gradient average.
SOLVER.OPTIMIZER.RMSPROP_ALPHA = 0.99

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
# COSINE, STEP_COSINE, POLY, or a function (schedule, i) -> factor registered with
# @LR_POLICIES.register().
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
# Floor of COSINE, POLY and the cosine part of STEP_COSINE, as a fraction of each group's lr,
# in [0, 1].
SOLVER.SCHEDULER.MIN_LR_FACTOR = 0.0

# ---------------------------------------------------------------------------------------------
# Checkpointing.
# ---------------------------------------------------------------------------------------------
# Save a checkpoint every this many iterations (0 disables periodic checkpoints; the final
# model is always saved).
SOLVER.SNAPSHOT_ITERS = 0
# Save a checkpoint every this many epochs (replaces SNAPSHOT_ITERS when set).
SOLVER.SNAPSHOT_EPOCHS = None

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
