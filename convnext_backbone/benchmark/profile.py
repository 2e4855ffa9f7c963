"""Where an eval forward's time above the matmul floor goes: a per-operator account, per stage.

``profile_case`` runs our backbone's eval forward and the matmul floor (``floor.MatmulFloor``)
under ``torch.profiler``, interleaved, each in ranges (``record_function``) per part of the
model: the stem, each stage, each downsampling layer, each output norm, and what the forward
does outside them (the input's layout conversion, the outputs' NCHW copies). Within a range,
every operator's self time (its time less that of the operators it called) goes to a row named
by that operator, with the operator that called it where it has one (``aten::copy_ <
aten::addmm``: the bias copy inside addmm), and the time between operators (Python, the
profiler's own bookkeeping) to a row of its own, so that a range's rows add up to the range's
time, and the ranges' to the forward's.

The floor's products are timed in the same ranges (each product in the range of the block it
comes from), so that each range's matrix products (``aten::addmm`` / ``aten::mm`` or oneDNN's
``mkldnn::_linear_pointwise``, together one row) have their floor beside them: their "above floor"
is their time less the floor's; every other row is above the floor in full. The account's
"above floor" column adds up to the profiled forward's time less the profiled floor's.

The profiler adds some microseconds per operator to both, so the account's total is a little
above an unprofiled forward's; ``profile_case`` reports both.
"""
from __future__ import annotations

import itertools
import statistics
import time
from collections import defaultdict
from contextlib import ExitStack
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.autograd.profiler import record_function

from .floor import MatmulFloor

# The operators that compute the pointwise linears' products (the floor's work), with what they
# fuse: torch's addmm (bias copied in first) and oneDNN's linear with post-ops.
GEMMS = ('aten::addmm', 'aten::mm', 'aten::bmm', 'mkldnn::_linear_pointwise')
OUTSIDE = 'outside stages'  # the forward's time outside every part's range
BETWEEN = '(between operators: Python, profiler)'
PROFILE_RANGE = 'profile: {}'  # the name of a range in the trace
_FORWARD, _FLOOR = 'forward', 'floor'


def model_ranges(model: nn.Module) -> Dict[str, nn.Module]:
    """The parts of our backbone that get a range of their own, in forward order: 'stem',
    'stage i', 'downsample i', 'output norm i'."""
    parts: Dict[str, nn.Module] = {}
    for i, stage in enumerate(model.stages):
        parts['stem' if i == 0 else f'downsample {i}'] = model.downsample_layers[i]
        parts[f'stage {i}'] = stage
        if hasattr(model, f'norm{i}'):
            parts[f'output norm {i}'] = getattr(model, f'norm{i}')
    return parts


def _ranged(parts: Dict[str, nn.Module]) -> List[torch.utils.hooks.RemovableHandle]:
    """Forward hooks that open a ``record_function`` range when a part starts and close it when
    it ends."""
    handles = []
    for name, module in parts.items():
        def enter(module, args, name=name):
            module._profile_range = record_function(PROFILE_RANGE.format(name))
            module._profile_range.__enter__()

        def leave(module, args, output):
            module._profile_range.__exit__(None, None, None)
            del module._profile_range

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _range_of(linear_name: str) -> str:
    """The range of the part a Linear belongs to, from its module name ('stages.2.4.pwconv1')."""
    parts = linear_name.split('.')
    return f'stage {parts[1]}' if parts[0] == 'stages' else OUTSIDE


def _floor_step(floor: MatmulFloor, ranges: List[str]) -> None:
    """The floor's products, each in the range of the block it comes from."""
    with record_function(PROFILE_RANGE.format(_FLOOR)):
        for part, calls in itertools.groupby(zip(ranges, floor.calls), key=lambda c: c[0]):
            with record_function(PROFILE_RANGE.format(part)):
                for _, call in calls:
                    call()
        floor.sync()


def _label(event) -> str:
    """An operator's row: its name, and the operator that called it if there is one."""
    parent = event.cpu_parent
    if parent is not None and not parent.name.startswith(PROFILE_RANGE.format('')):
        return f'{event.name} < {parent.name}'
    return event.name


def _is_gemm(label: str) -> bool:
    return label.split(' < ')[0] in GEMMS


def _account(events, top: str) -> Tuple[float, Dict[str, Dict[str, List[float]]]]:
    """(us of every ``top`` range, {range: {row: [us, calls]}}) over the profile's events."""
    prefix = PROFILE_RANGE.format('')
    total = 0.0
    rows: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    for event in events:
        if event.name != PROFILE_RANGE.format(top):
            continue
        total += event.cpu_time_total
        stack = [(event, OUTSIDE)]
        while stack:
            node, part = stack.pop()
            if node.name.startswith(prefix):  # a range: its own time is between operators
                part = node.name[len(prefix):] if node is not event else part
                row = rows[part][BETWEEN]
            else:
                row = rows[part][_label(node)]
                row[1] += 1
            row[0] += node.self_cpu_time_total
            stack += [(child, part) for child in node.cpu_children]
    return total, rows


def profile_case(model: nn.Module, x: torch.Tensor, *, forwards: int = 3,
                 amp: Optional[torch.dtype] = None,
                 floor_model: Optional[nn.Module] = None) -> dict:
    """The account of ``model``'s eval forward at ``x`` against its matmul floor: ``forwards``
    profiled forwards and floor steps, interleaved, after one of each unprofiled (module
    docstring), under autocast to ``amp`` if given. ``floor_model`` is the model whose
    ``nn.Linear`` calls give the floor's shapes when ``model`` calls none itself (an
    ``optimize_for_inference`` model runs its linears' GEMMs directly); the same names.

    Returns a dict: ``forward_ms`` and ``floor_ms`` (per forward, as profiled: the sum of the
    rows), ``profiled_wall_ms`` (the profiled forwards by the clock, per forward: the time the
    rows account for), ``unprofiled_forward_ms`` and ``unprofiled_floor_ms`` (medians of as
    many unprofiled steps, interleaved, for the profiler's overhead), and ``rows``: one per range and operator,
    ``range``, ``operator``, ``calls`` and ``ms`` per forward, ``floor_ms`` (the floor's
    products in that range, on its matrix-product row) and ``above_floor_ms``, in forward order
    of the ranges, largest first within one."""
    floor_model = floor_model or model
    floor = MatmulFloor(floor_model, x, mode='eval', dtype=amp)
    names = {module: name for name, module in floor_model.named_modules()}
    floor_ranges = [_range_of(names[linear]) for linear in floor.linears]
    sync = torch.get_device_module(x.device.type).synchronize
    parts = model_ranges(model)
    training = model.training
    model.eval()

    def forward() -> None:
        with record_function(PROFILE_RANGE.format(_FORWARD)), torch.autocast(
                x.device.type, dtype=amp, enabled=amp is not None):
            model(x)
            sync()

    unprofiled: Dict[str, List[float]] = {_FORWARD: [], _FLOOR: []}
    wall: List[float] = []  # of the profiled forwards, by the clock
    try:
        with torch.no_grad():
            forward()
            floor.step()
            for _ in range(forwards):
                for name, step in ((_FORWARD, forward), (_FLOOR, floor.step)):
                    start = time.perf_counter()
                    step()
                    unprofiled[name].append(time.perf_counter() - start)
            with ExitStack() as stack:
                handles = _ranged(parts)
                stack.callback(lambda: [h.remove() for h in handles])
                with torch.profiler.profile(
                        activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    for _ in range(forwards):
                        start = time.perf_counter()
                        forward()
                        wall.append(time.perf_counter() - start)
                        _floor_step(floor, floor_ranges)
    finally:
        model.train(training)
    events = prof.events()
    forward_us, forward_rows = _account(events, _FORWARD)
    floor_us, floor_rows = _account(events, _FLOOR)
    floor_by_range = {part: sum(us for us, _ in ops.values()) for part, ops in floor_rows.items()}
    order = {name: i for i, name in enumerate([*parts, OUTSIDE])}
    rows = []
    for part in sorted(forward_rows, key=lambda p: order.get(p, len(order))):
        ops = dict(forward_rows[part])
        floor_ms = floor_by_range.get(part, 0.0) / 1e3 / forwards
        gemms = [label for label in ops if _is_gemm(label)]
        # (without products of its own, a range's floor time is the floor's loop around them)
        gemm_label = ', '.join(sorted(gemms)) or "the floor's own time between products"
        if gemms or floor_ms:  # one row for the range's products, beside the floor's
            ops[gemm_label] = [sum(ops.pop(label)[0] for label in gemms), 0]
            ops[gemm_label][1] = sum(forward_rows[part][label][1] for label in gemms)
        part_rows = []
        for label, (us, calls) in ops.items():
            ms, below = us / 1e3 / forwards, floor_ms if label == gemm_label else 0.0
            part_rows.append(dict(range=part, operator=label, calls=calls // forwards, ms=ms,
                                  floor_ms=below, above_floor_ms=ms - below))
        rows += sorted(part_rows, key=lambda r: -r['ms'])
    return dict(forwards=forwards, forward_ms=forward_us / 1e3 / forwards,
                floor_ms=floor_us / 1e3 / forwards,
                profiled_wall_ms=1e3 * sum(wall) / forwards,
                unprofiled_forward_ms=1e3 * statistics.median(unprofiled[_FORWARD]),
                unprofiled_floor_ms=1e3 * statistics.median(unprofiled[_FLOOR]),
                rows=rows)


def account_markdown(account: dict, *, min_ms: float = 0.0) -> List[str]:
    """The account as Markdown lines: a table of the rows (within each range, those less than
    ``min_ms`` above the floor merged into one 'smaller operators' row) and a line of totals."""
    lines = ['| range | operator | calls | ms | floor ms | above floor ms |',
             '|---|---|---|---|---|---|']
    for part, rows in itertools.groupby(account['rows'], key=lambda r: r['range']):
        small = []
        for r in rows:
            if r['floor_ms'] == 0 and abs(r['above_floor_ms']) < min_ms:
                small.append(r)
                continue
            lines.append(f"| {part} | {r['operator']} | {r['calls']} | {r['ms']:.2f} | "
                         f"{r['floor_ms']:.2f} | {r['above_floor_ms']:.2f} |")
        if small:
            ms = sum(r['ms'] for r in small)
            lines.append(f"| {part} | {len(small)} smaller rows | "
                         f"{sum(r['calls'] for r in small)} | {ms:.2f} | 0.00 | {ms:.2f} |")
    forward, floor = account['forward_ms'], account['floor_ms']
    lines.append(
        f"\nProfiled forward {forward:.1f} ms, its matmul floor {floor:.1f} ms "
        f"({forward / floor:.2f}x): {forward - floor:.1f} ms above it (mean of "
        f"{account['forwards']}). Unprofiled, interleaved: "
        f"{account['unprofiled_forward_ms']:.1f} ms and {account['unprofiled_floor_ms']:.1f} ms "
        f"({account['unprofiled_forward_ms'] / account['unprofiled_floor_ms']:.2f}x).")
    return lines
