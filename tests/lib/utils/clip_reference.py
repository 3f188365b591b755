"""The independent reference of every clip type: torch.nn.utils' own clip functions."""
import torch


def clip_like_torch_(params, clip_type: str, clip_value: float, norm_type: float) -> None:
    """Clip the ``.grad`` of ``params`` in place as CLIP_TYPE ``clip_type`` specifies."""
    if clip_type == "value":
        torch.nn.utils.clip_grad_value_(params, clip_value)
    elif clip_type == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], clip_value, norm_type)
    else:
        torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)
