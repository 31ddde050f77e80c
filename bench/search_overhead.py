"""Cost of one search training step relative to one plain fp32 training step.

Builds the fp32 model and its supernet, times warm training steps alternately in one
process (median over --steps), measures each step's own peak memory (CUDA allocator
statistics, or the PyTorch profiler's memory timeline on the CPU) and prints one JSON
object. Four steps are timed side by side: plain fp32 (the user's training, default NCHW
layout), fp32 in channels-last layout, the search step as `mpsctl search` runs it (on a CPU
`channels_last: auto` puts it in channels-last layout) and the search step in NCHW. So the
JSON gives the issue's ratio (search / plain fp32) and the quantizers' own overhead (both in
the same layout). Example: python bench/search_overhead.py --model resnet8 --type per_channel
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from mpsctl.models.registry import build_model
from mpsctl.quant.fused import runs_compiled, use_compiled
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.training.layout import use_channels_last


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet8")
    p.add_argument("--type", choices=("per_layer", "per_channel"), default="per_layer")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--shape", type=int, nargs=3, default=(3, 32, 32))
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--weight-bits", type=int, nargs="+")
    p.add_argument("--act-bits", type=int, nargs="+", default=(2, 4, 8))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    return p.parse_args()


def make_step(model, params, arch_params, device, cost_fn=None):
    opt = torch.optim.Adam(params, lr=1e-3)
    arch = torch.optim.Adam(arch_params, lr=1e-2) if arch_params else None
    gen = torch.Generator().manual_seed(0)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        if arch is not None:
            arch.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if cost_fn is not None:
            loss = loss + 1e-9 * cost_fn("params_bit")
        loss.backward()
        opt.step()
        if arch is not None:
            arch.step()

    del gen
    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, x, y, device) -> float:
    sync(device)
    start = time.perf_counter()
    step(x, y)
    sync(device)
    return time.perf_counter() - start


def peak_memory(step, x, y, device) -> int | None:
    """Peak bytes allocated during one step, above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(x, y)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline
    except ImportError:
        return None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        step(x, y)
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    return int(max(sum(s) for s in sizes)) if sizes else None


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    weight_bits = args.weight_bits or ((0, 2, 4, 8) if args.type == "per_channel" else (2, 4, 8))
    kwargs = {"num_classes": args.classes}
    space = SearchSpace(weight_bits=tuple(weight_bits), act_bits=tuple(args.act_bits),
                        per_channel=args.type == "per_channel")
    example = torch.zeros(2, *args.shape)
    fp32 = build_model(args.model, kwargs).to(device)
    fp32_cl = copy.deepcopy(fp32)
    start = time.perf_counter()
    net = build_supernet(build_model(args.model, kwargs), example, space).to(device)
    build_s = time.perf_counter() - start
    net_nchw = copy.deepcopy(net)
    # What `mpsctl search` does with the default `channels_last: auto`.
    layout = use_channels_last("auto", net, example, device)
    use_channels_last(True, fp32_cl, example, device)
    x = torch.rand(args.batch, *args.shape, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    for m in (fp32, fp32_cl, net, net_nchw):
        m.train()
    steps = {
        "fp32": make_step(fp32, list(fp32.parameters()), [], device),
        "fp32_channels_last": make_step(fp32_cl, list(fp32_cl.parameters()), [], device),
        "search": make_step(net, net.weight_parameters(), net.arch_parameters(), device,
                            net.cost),
        "search_nchw": make_step(net_nchw, net_nchw.weight_parameters(),
                                 net_nchw.arch_parameters(), device, net_nchw.cost),
    }
    start = time.perf_counter()
    steps["search"](x, y)  # first step: includes any one-time compilation
    first_step_s = time.perf_counter() - start
    for _ in range(args.warmup_steps):
        for step in steps.values():
            step(x, y)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):  # alternating, so drifts of the machine hit all alike
        for name, step in steps.items():
            times[name].append(timed(step, x, y, device))
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "model": args.model, "type": args.type, "batch": args.batch,
        "weight_bits": list(weight_bits), "act_bits": list(args.act_bits),
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "fused": runs_compiled(use_compiled(True)), "search_channels_last": layout,
        "fp32_step_s": med["fp32"], "search_step_s": med["search"],
        # The measure: the default search step against plain fp32 training.
        "time_ratio": med["search"] / med["fp32"],
        # The quantizers' own overhead: both in the same memory layout.
        "time_ratio_same_layout": (med["search"] / med["fp32_channels_last"] if layout
                                   else med["search"] / med["fp32"]),
        "time_ratio_nchw": med["search_nchw"] / med["fp32"],
        "step_s": med,
        "first_search_step_s": first_step_s, "supernet_build_s": build_s,
        "steps": args.steps,
    }
    if not args.no_memory:
        fp32_mem = peak_memory(steps["fp32"], x, y, device)
        search_mem = peak_memory(steps["search"], x, y, device)
        result.update({"fp32_peak_bytes": fp32_mem, "search_peak_bytes": search_mem,
                       "memory_ratio": (search_mem / fp32_mem) if fp32_mem and search_mem
                       else None})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
