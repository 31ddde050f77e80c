"""Cost of one search training step relative to one plain fp32 training step.

Builds the fp32 model and its supernet, times warm training steps of both alternately in
one process (median over --steps), measures each step's own peak memory (CUDA allocator
statistics, or the PyTorch profiler's memory timeline on the CPU) and prints one JSON
object. Example: python bench/search_overhead.py --model resnet8 --type per_channel
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from mpsctl.models.registry import build_model
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace


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
    fp32 = build_model(args.model, kwargs).to(device)
    space = SearchSpace(weight_bits=tuple(weight_bits), act_bits=tuple(args.act_bits),
                        per_channel=args.type == "per_channel")
    example = torch.zeros(2, *args.shape)
    start = time.perf_counter()
    net = build_supernet(build_model(args.model, kwargs), example, space).to(device)
    build_s = time.perf_counter() - start
    x = torch.rand(args.batch, *args.shape, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    fp32.train()
    net.train()
    fp32_step = make_step(fp32, list(fp32.parameters()), [], device)
    search_step = make_step(net, net.weight_parameters(), net.arch_parameters(), device,
                            net.cost)
    start = time.perf_counter()
    search_step(x, y)  # first step: includes any one-time compilation
    first_step_s = time.perf_counter() - start
    for _ in range(args.warmup_steps):
        fp32_step(x, y)
        search_step(x, y)
    fp32_times, search_times = [], []
    for _ in range(args.steps):
        fp32_times.append(timed(fp32_step, x, y, device))
        search_times.append(timed(search_step, x, y, device))
    fp32_med, search_med = statistics.median(fp32_times), statistics.median(search_times)
    result = {
        "model": args.model, "type": args.type, "batch": args.batch,
        "weight_bits": list(weight_bits), "act_bits": list(args.act_bits),
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "fused": os.environ.get("MPSCTL_FUSED", "1") != "0",
        "fp32_step_s": fp32_med, "search_step_s": search_med,
        "time_ratio": search_med / fp32_med,
        "first_search_step_s": first_step_s, "supernet_build_s": build_s,
        "steps": args.steps,
    }
    if not args.no_memory:
        fp32_mem = peak_memory(fp32_step, x, y, device)
        search_mem = peak_memory(search_step, x, y, device)
        result.update({"fp32_peak_bytes": fp32_mem, "search_peak_bytes": search_mem,
                       "memory_ratio": (search_mem / fp32_mem) if fp32_mem and search_mem
                       else None})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
