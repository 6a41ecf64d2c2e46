"""Extract a per-layer workload table from a PyTorch model, without memory and without real compute.

The model is built on (or copied to) the ``meta`` device: tensors there have shapes and dtypes but no
storage, so even ResNet-152 costs no memory and no arithmetic. One forward pass of a batch-1 meta input runs
with forward hooks on every *leaf* module (and on any non-leaf module that owns parameters directly); each
call of a hooked module becomes one row of the table, in forward order. Costs are then computed analytically
from the recorded shapes, per image (the batch is 1). Autograd still runs on meta tensors, so a hook can see
whether a layer's input needs a gradient: it does not for the first layer (the image), whose input-gradient
cost is therefore 0.

Conventions and formulas (all counts per image; ``E_in``/``E_out`` = elements of the layer's input(s) /
output; 1 FLOP = one add or one multiply, so a multiply-add (MAC) is 2 FLOP; 4 bytes per element, fp32):

=====================  ==========================  ==============================  ===========================
layer                  flops_fwd                   flops_bwd_input                 flops_bwd_weight
=====================  ==========================  ==============================  ===========================
Conv (MACs =           2*MACs (+ E_out if bias)    2*MACs                          2*MACs (+ E_out if bias)
Cout*prod(out_sp)*
Cin/groups*prod(k))
ConvTranspose          same with MACs = Cin*prod(in_sp)*Cout/groups*prod(k)
Linear (MACs =         2*MACs (+ E_out if bias)    2*MACs                          2*MACs (+ E_out if bias)
in*out*rows)
BatchNorm/GroupNorm/   5 per element: sum x (1),   6 per element: x-hat (2),       3 per element if affine:
LayerNorm/InstanceNorm sum x^2 (2), y=x*s+t (2)    g - mean(g) - x-hat*c, *s (4)   sum g (1), sum g*x-hat (2)
ReLU (and family)      1 per element               1 per element                   0 (PReLU: 2 per element)
other activations      Sigmoid/Tanh 4, GELU 8, SiLU 5, ELU 4, Softmax 5 per element; backward the same
MaxPool (kernel k)     prod(k) per output          1 per output (scatter)          0
AvgPool (kernel k)     prod(k) per output          prod(k) per output              0
AdaptiveAvg/MaxPool    E_in + E_out (avg) / E_in   E_in (avg) / E_out (max)        0
Add (residual add)     E_out                       E_out (*)                       0
Dropout                2 per element (mask, scale) 1 per element                   0
Flatten/Identity/      0 (views)                   0                               0
Unflatten
PadShortcut            0 (copy/zero-fill only)     0                               0
anything else          E_out (estimate; the row's ``shape`` gets ``"estimated": true``), backward the same,
                       weight gradient 2 per parameter
=====================  ==========================  ==============================  ===========================

(*) The backward of an add just passes the gradient to both branches; the arithmetic happens where the two
branches met in forward (the block input fans out to the residual branch and the shortcut), where autograd
sums the two gradients. That sum (E_out adds) is booked on the Add row.

``flops_bwd_input`` is 0 for a layer whose input needs no gradient (the first layer: the image);
``flops_bwd_weight`` is 0 for a layer without trainable parameters.

Memory traffic (bytes per image, activations only, parameters excluded; an approximation of the bytes a
memory-bound kernel moves):

- ``act_out_bytes`` = 4 * E_out: the output activation, the upper bound of what is kept for backward (PyTorch's
  in-place ReLU shares its input's storage; we do not discount that). Views (Flatten, Identity, Unflatten): 0.
- ``mem_bytes_fwd`` = 4 * (E_in + E_out): read the input(s), write the output. Views: 0.
- ``mem_bytes_bwd`` = 4 * (E_out + E_in + E_in): read the output gradient, read the saved input (weight
  gradient, masks, statistics), write the input gradient (the last term only if the input needs a gradient),
  i.e. about 2x the forward traffic. Add: 4 * 3 * E_out (read two gradients, write their sum, see (*)). A
  layer with neither trainable parameters nor an input that needs a gradient takes no part in backward: 0.

Parameters: ``params`` counts the parameters a row's module owns directly (each shared parameter once, on
the first row that uses it); ``param_bytes`` = 4 * params. A module called several times in one forward pass
gives several rows (named ``name``, ``name#2``, ...); its parameters (and its ``grad_ready_index``) are on
the first, its weight-gradient FLOPs on every row (autograd computes and sums one per call). Parameters of
modules that the forward pass never calls are not in the table.

``grad_ready_index``: rows with trainable parameters, numbered in reverse forward order (0 = the last such
row in forward order, whose gradient backward produces first); ``None`` for rows without parameters. This is
the order a data-parallel framework can start allreducing gradients in.

``shape`` (what the optimizer-cost model needs; every row also has ``out_shape``, the output shape per image
without the batch dimension):

- Conv: ``in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, in_hw, out_hw``
- Linear: ``in_features, out_features, bias``
- BatchNorm (any dimension): ``num_features, hw`` (spatial size; ``[1, 1]`` for BatchNorm1d on (N, C))
- others: ``out_shape`` only.

Approximations: functional operations written inside a ``forward`` (``x + y``, ``torch.flatten``, ``F.relu``)
are invisible to hooks; the zoo's models use modules for them (:mod:`executor.models.layers`). The loss is
not part of the table (negligible: ``num_classes`` elements).

Public API::

    SCHEMA = "ttt-workload/1"
    build_meta(name, num_classes=None, **kw) -> nn.Module
    extract_table(model, input_shape, name, dataset, num_classes=None) -> dict
    extract_registered(name, **kw) -> dict
    dumps_table(table) -> str;  write_table(table, path) -> Path
    load_callable(spec) -> callable;  build_user_model(spec, num_classes=None) -> nn.Module
    parse_input_shape("3,224,224") -> (3, 224, 224)
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from executor.models import DATASETS, build_model, get_model_info
from hardware.errors import ConfigError
from perfmodel.workload import LAYER_KEYS, SCHEMA, TOTAL_KEYS  # the schema's single source (no torch there)

from perfmodel.atomic import atomic_write

__all__ = ["SCHEMA", "BYTES_PER_ELEMENT", "LAYER_KEYS", "TOTAL_KEYS", "build_meta", "extract_table",
           "extract_registered", "dumps_table", "write_table", "load_callable", "build_user_model",
           "parse_input_shape"]

#: fp32 activations, gradients and parameters
BYTES_PER_ELEMENT = 4

_VIEWS = (nn.Flatten, nn.Identity, nn.Unflatten)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Hardtanh, nn.Threshold)
#: FLOP per element of other element-wise activations (forward; backward counted the same)
_ACT_FLOPS: dict[type, int] = {nn.Sigmoid: 4, nn.Tanh: 4, nn.GELU: 8, nn.SiLU: 5, nn.ELU: 4, nn.SELU: 4,
                               nn.Softplus: 4, nn.Hardswish: 3, nn.Hardsigmoid: 2, nn.Mish: 8,
                               nn.Softmax: 5, nn.LogSoftmax: 5}


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Tensors inside a (nested) tuple/list/dict output, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _ilist(x: Any) -> Any:
    """Tuple/int attribute of a module as a JSON-able list of ints (strings such as 'same' kept)."""
    if isinstance(x, str):
        return x
    if isinstance(x, (tuple, list)):
        return [int(v) for v in x]
    return [int(x)]


def _hw(spatial: Sequence[int]) -> list[int]:
    """Spatial shape as [H, W]: 2-D kept, none -> [1, 1], 1-D -> [L, 1], 3-D and more -> [prod, last]."""
    spatial = [int(s) for s in spatial]
    if len(spatial) == 2:
        return spatial
    if not spatial:
        return [1, 1]
    if len(spatial) == 1:
        return [spatial[0], 1]
    return [math.prod(spatial[:-1]), spatial[-1]]


def _kernel_elems(kernel_size: int | Sequence[int], out_shape: tuple[int, ...]) -> int:
    """Elements of a pooling window: an int kernel applies to every spatial dimension of the output."""
    if isinstance(kernel_size, int):
        return kernel_size ** max(1, len(out_shape) - 2)
    return math.prod(kernel_size)


def _layer_costs(module: nn.Module, in_shapes: list[tuple[int, ...]], out_shapes: list[tuple[int, ...]],
                 needs_input_grad: bool, trainable: bool) -> tuple[dict[str, int], dict[str, Any]]:
    """Per-image costs and shape info of one call (see the module docstring for the formulas)."""
    e_in = sum(math.prod(s) for s in in_shapes)
    e_out = sum(math.prod(s) for s in out_shapes)
    out_shape = list(out_shapes[0][1:]) if out_shapes else []
    shape: dict[str, Any] = {"out_shape": out_shape}
    fwd = bwd_in = bwd_w = 0
    view = False
    add_like = False
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.modules.conv._ConvNd):
        k = math.prod(module.kernel_size)
        in_sp, out_sp = in_shapes[0][2:], out_shapes[0][2:]
        if module.transposed:
            macs = module.in_channels * math.prod(in_sp) * (module.out_channels // module.groups) * k
        else:
            macs = module.out_channels * math.prod(out_sp) * (module.in_channels // module.groups) * k
        fwd = 2 * macs + (e_out if has_bias else 0)
        bwd_in = 2 * macs
        bwd_w = 2 * macs + (e_out if has_bias else 0)
        shape = {"in_channels": module.in_channels, "out_channels": module.out_channels,
                 "kernel_size": _ilist(module.kernel_size), "stride": _ilist(module.stride),
                 "padding": _ilist(module.padding), "dilation": _ilist(module.dilation),
                 "groups": module.groups, "bias": has_bias, "in_hw": _hw(in_sp), "out_hw": _hw(out_sp),
                 "out_shape": out_shape}
    elif isinstance(module, nn.Linear):
        rows = e_out // module.out_features
        macs = module.in_features * module.out_features * rows
        fwd = 2 * macs + (e_out if has_bias else 0)
        bwd_in = 2 * macs
        bwd_w = 2 * macs + (e_out if has_bias else 0)
        shape = {"in_features": module.in_features, "out_features": module.out_features, "bias": has_bias,
                 "out_shape": out_shape}
    elif isinstance(module, _NORMS):
        fwd, bwd_in, bwd_w = 5 * e_out, 6 * e_out, 3 * e_out
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            shape = {"num_features": module.num_features, "hw": _hw(in_shapes[0][2:]), "out_shape": out_shape}
    elif isinstance(module, _RELU_LIKE):
        fwd = bwd_in = e_out
        if isinstance(module, nn.PReLU):
            bwd_w = 2 * e_out  # slope gradient: a multiply-add per element
    elif type(module) in _ACT_FLOPS:
        fwd = bwd_in = _ACT_FLOPS[type(module)] * e_out
    elif isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        fwd, bwd_in = e_in + e_out, e_in
    elif isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        fwd, bwd_in = e_in, e_out
    elif isinstance(module, nn.modules.pooling._MaxPoolNd):
        fwd, bwd_in = _kernel_elems(module.kernel_size, out_shapes[0]) * e_out, e_out
    elif isinstance(module, nn.modules.pooling._AvgPoolNd):
        fwd = bwd_in = _kernel_elems(module.kernel_size, out_shapes[0]) * e_out
    elif isinstance(module, nn.modules.dropout._DropoutNd):
        fwd, bwd_in = 2 * e_out, e_out
    elif isinstance(module, _VIEWS):
        view = True
    elif type(module).__name__ == "Add":
        fwd = bwd_in = e_out
        add_like = True
    elif type(module).__name__ == "PadShortcut":
        pass
    else:  # unknown module: rough estimate, flagged
        n_params = sum(p.numel() for p in module.parameters(recurse=False))
        fwd = bwd_in = e_out
        bwd_w = 2 * n_params
        shape["estimated"] = True
    if not needs_input_grad:
        bwd_in = 0
    if not trainable:
        bwd_w = 0
    b = BYTES_PER_ELEMENT
    in_backward = needs_input_grad or trainable
    if view:
        act, mem_f, mem_b = 0, 0, 0
    elif add_like:
        act, mem_f, mem_b = b * e_out, b * (e_in + e_out), (3 * b * e_out if needs_input_grad else 0)
    else:
        act, mem_f = b * e_out, b * (e_in + e_out)
        mem_b = b * (e_out + e_in + (e_in if needs_input_grad else 0)) if in_backward else 0
    return ({"flops_fwd": int(fwd), "flops_bwd_input": int(bwd_in), "flops_bwd_weight": int(bwd_w),
             "act_out_bytes": int(act), "mem_bytes_fwd": int(mem_f), "mem_bytes_bwd": int(mem_b)}, shape)


def parse_input_shape(input_shape: Sequence[int] | str, source: str = "--input-shape") -> tuple[int, ...]:
    """Per-sample input shape from ``"3,224,224"`` (or ``"3x224x224"``, or a sequence); ConfigError if invalid."""
    if isinstance(input_shape, str):
        try:
            input_shape = [int(v) for v in input_shape.replace("x", ",").split(",") if v.strip()]
        except ValueError:
            raise ConfigError(source, "input_shape", input_shape, "must be comma-separated positive integers, "
                              "e.g. 3,224,224") from None
    shape = tuple(input_shape)
    if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise ConfigError(source, "input_shape", list(shape), "must be positive integers (per sample, "
                          "without the batch dimension), e.g. 3,224,224")
    return shape


def _torch_version() -> str:
    return torch.__version__.split("+")[0]


def extract_table(model: nn.Module, input_shape: Sequence[int], name: str, dataset: str,
                  num_classes: int | None = None) -> dict:
    """Per-layer workload table of ``model`` for one input of ``input_shape`` (per sample, no batch dim).

    A model already on the meta device is used as is (its training flag is restored afterwards); any other
    model is deep-copied to the meta device first, so the caller's model is untouched.

    Parameters
    ----------
    model : nn.Module
    input_shape : sequence of int
        One sample, e.g. ``(3, 224, 224)``.
    name, dataset : str
        Recorded in the table.
    num_classes : int, optional
        Recorded in the table; default: the size of the last dimension of the model's output.

    Returns
    -------
    dict
        The table in the ``ttt-workload/1`` schema (see the module docstring and
        :mod:`perfmodel.workload`); all numbers are per image.

    Raises
    ------
    ConfigError
        The input shape is invalid or the forward pass fails on the meta device.
    """
    shape = parse_input_shape(input_shape)
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.device.type != "meta" for t in tensors):
        model = copy.deepcopy(model).to(device="meta")
    was_training = {m: m.training for m in model.modules()}
    model.eval()  # BN on a batch of 1 would refuse to compute batch statistics; shapes are the same

    records: list[dict[str, Any]] = []
    calls: dict[int, int] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        ins, outs = _tensors(inputs), _tensors(output)
        k = calls.get(id(module), 0) + 1
        calls[id(module)] = k
        base = names.get(id(module)) or "model"
        records.append({"module": module, "name": base if k == 1 else f"{base}#{k}", "first_call": k == 1,
                        "in_shapes": [tuple(t.shape) for t in ins], "out_shapes": [tuple(t.shape) for t in outs],
                        "needs_input_grad": any(t.requires_grad for t in ins)})

    handles = []
    for _, m in model.named_modules():
        own = any(True for _ in m.parameters(recurse=False))
        if own or not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(hook))
    x = torch.empty((1, *shape), device="meta")
    try:
        with torch.enable_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of a user's forward becomes one clear line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(source=name, field="input_shape", value=list(shape),
                          reason=f"forward pass on the meta device failed: {type(exc).__name__}: {msg}") from None
    finally:
        for h in handles:
            h.remove()
        for m, t in was_training.items():
            m.training = t
    if num_classes is None:
        outs = _tensors(out)
        num_classes = int(outs[0].shape[-1]) if outs and outs[0].dim() >= 2 else 0

    layers: list[dict[str, Any]] = []
    seen: set[int] = set()
    for rec in records:
        m = rec["module"]
        own = [p for p in m.parameters(recurse=False) if id(p) not in seen] if rec["first_call"] else []
        seen.update(id(p) for p in own)
        n_params = sum(p.numel() for p in own)
        # every call of a module with trainable weights computes a weight gradient (summed by autograd);
        # the parameters, and so the gradient to allreduce, are booked on the first row only
        computes_wgrad = any(p.requires_grad for p in m.parameters(recurse=False))
        costs, shape_info = _layer_costs(m, rec["in_shapes"], rec["out_shapes"], rec["needs_input_grad"],
                                         computes_wgrad)
        has_gradient = any(p.requires_grad for p in own)
        layers.append({"name": rec["name"], "type": type(m).__name__, "params": int(n_params),
                       "param_bytes": BYTES_PER_ELEMENT * int(n_params), **costs,
                       "grad_ready_index": -1 if has_gradient else None, "shape": shape_info})
    ready = [i for i, layer in enumerate(layers) if layer["grad_ready_index"] == -1]
    for rank, i in enumerate(reversed(ready)):
        layers[i]["grad_ready_index"] = rank
    layers = [{k: layer[k] for k in LAYER_KEYS} for layer in layers]

    totals = {k: sum(layer[k] for layer in layers) for k in ("params", "param_bytes", "flops_fwd",
                                                             "flops_bwd_input", "flops_bwd_weight")}
    totals["flops_bwd"] = totals["flops_bwd_input"] + totals["flops_bwd_weight"]
    totals["act_bytes"] = sum(layer["act_out_bytes"] for layer in layers)
    totals["mem_bytes_fwd"] = sum(layer["mem_bytes_fwd"] for layer in layers)
    totals["mem_bytes_bwd"] = sum(layer["mem_bytes_bwd"] for layer in layers)
    return {"schema": SCHEMA, "model": name, "dataset": dataset, "input_shape": list(shape),
            "num_classes": int(num_classes), "per": "image", "extracted_with": {"torch": _torch_version()},
            "totals": {k: totals[k] for k in TOTAL_KEYS}, "layers": layers}


def build_meta(name: str, num_classes: int | None = None, **kw) -> nn.Module:
    """Build a registered model on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        return build_model(name, num_classes, **kw)


def extract_registered(name: str, **kw) -> dict:
    """Workload table of a registered model on its default dataset (``kw`` go to the builder)."""
    info = get_model_info(name)
    model = build_meta(info.name, **kw)
    ds = DATASETS[info.dataset]
    return extract_table(model, ds.input_shape, info.name, info.dataset, ds.num_classes)


def dumps_table(table: dict) -> str:
    """The table as JSON text: header keys one per line, one line per layer (readable diffs)."""
    head = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items() if k != "layers"]
    layers = ",\n".join("  " + json.dumps(layer) for layer in table["layers"])
    return "{\n" + ",\n".join(head) + ',\n "layers": [\n' + layers + "\n ]\n}\n"


def write_table(table: dict, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` atomically (temporary file + rename); return the path."""
    path = Path(path)
    atomic_write(path, dumps_table(table))
    return path


def load_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``MODULE:CALLABLE``; MODULE is a dotted module name (importable from the current directory)
    or a path to a ``.py`` file. CALLABLE may be dotted (``Class.method``)."""
    source = "workload extract"
    if ":" not in spec:
        raise ConfigError(source, "model", spec, "expected MODULE:CALLABLE (e.g. mypkg.nets:build) or a "
                          "registered model name")
    modname, _, attr = spec.rpartition(":")
    try:
        if modname.endswith(".py") or os.sep in modname:
            path = Path(modname)
            if not path.is_file():
                raise ConfigError(source, "model", spec, f"no such file: {path}")
            mod_spec = importlib.util.spec_from_file_location(f"_ttt_user_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(modname)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - import errors of user code become one line
        raise ConfigError(source, "model", spec, f"cannot import {modname!r}: {type(exc).__name__}: {exc}") \
            from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(source, "model", spec, f"{modname!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(source, "model", spec, "is not callable")
    return obj


def build_user_model(spec: str, num_classes: int | None = None) -> nn.Module:
    """Call the ``MODULE:CALLABLE`` factory, on the meta device when it allows (falls back to the default
    device when the factory fails there, e.g. because it loads weights). ``num_classes`` is passed when the
    factory accepts a ``num_classes`` keyword."""
    fn = load_callable(spec)
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        try:
            params = inspect.signature(fn).parameters
            if "num_classes" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
                kwargs["num_classes"] = num_classes
        except (TypeError, ValueError):
            pass
    try:
        with torch.device("meta"):
            model = fn(**kwargs)
    except Exception:  # noqa: BLE001 - retry on the normal device
        try:
            model = fn(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError("workload extract", "model", spec, f"the factory failed: {type(exc).__name__}: "
                              f"{exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError("workload extract", "model", spec,
                          f"the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model
