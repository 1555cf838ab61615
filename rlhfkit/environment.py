"""`rlhfkit env`: what a bug report needs (versions, devices, CPU flags, threads) and what rlhfkit will do on
this machine (the precision `dtype: auto` picks, the sampling engine's packed path), with a short fp32-vs-bf16
matmul timing, like `accelerate env` or `ds_report`."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time

import torch
import torch.nn.functional as F

from rlhfkit.device import NATIVE_BF16_ENV, auto_dtype, default_device, native_bf16

PACKAGES = ("rlhfkit", "torch", "transformers", "accelerate", "peft", "deepspeed", "datasets", "safetensors")
# the matmuls timed: SmolLM2-135M's MLP up-projection at a decoding batch (8 rows) and a training batch (512)
TIMED_SHAPES = ((8, 576, 1536), (512, 576, 1536))


def versions() -> dict[str, str]:
    """{package: version} of the packages rlhfkit runs on ("not installed" for an optional one)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    """The CPU capabilities that change rlhfkit's speed (what torch detects)."""
    return {"avx2": torch.cpu._is_avx2_supported(), "avx512": torch.cpu._is_avx512_supported(),
            "avx512_vnni": torch.cpu._is_vnni_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
            "amx": torch.cpu._is_amx_tile_supported()}


def time_matmul(rows: int, inner: int, cols: int, dtype: torch.dtype, device: torch.device,
                seconds: float = 0.6) -> float:
    """Milliseconds per x Wᵀ, x [rows, inner], W [cols, inner], both in `dtype` (the median of repeated
    batches of calls, after a warm-up), over about `seconds`."""
    x = torch.randn(rows, inner, device=device, dtype=dtype)  # [rows, inner]
    w = torch.randn(cols, inner, device=device, dtype=dtype)  # [cols, inner]
    for _ in range(3):
        F.linear(x, w)
    calls, times, start = 10, [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        for _ in range(calls):
            F.linear(x, w)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) / calls * 1e3)
    return sorted(times)[len(times) // 2]


def matmul_timings(device: torch.device) -> list[dict]:
    """fp32 and bf16 milliseconds for each of TIMED_SHAPES on `device`, with bf16's speed-up (> 1: faster)."""
    rows = []
    for shape in TIMED_SHAPES:
        fp32 = time_matmul(*shape, torch.float32, device)
        bf16 = time_matmul(*shape, torch.bfloat16, device)
        rows.append({"shape": f"[{shape[0]}, {shape[1]}] x [{shape[1]}, {shape[2]}]",
                     "fp32_ms": fp32, "bf16_ms": bf16, "bf16_speedup": fp32 / bf16})
    return rows


def environment_report(timing: bool = True) -> dict:
    """Everything `rlhfkit env` prints, as a dict (its --json output)."""
    from rlhfkit import engine

    device = default_device()
    native, why = native_bf16(device)
    dtype = auto_dtype(device)
    cpu = torch.device("cpu")
    packed = engine.can_pack(cpu, torch.bfloat16 if dtype == "bf16" else None)
    report = {
        "versions": versions(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
        "devices": [str(device)] + ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                                    if torch.cuda.is_available() else []),
        "threads": {"torch": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "native_bf16": native,
        "native_bf16_reason": why,
        "override": os.environ.get(NATIVE_BF16_ENV),
        "dtype_auto": dtype,
        "engine_packed_bf16": packed,
    }
    if timing:
        report["matmul"] = matmul_timings(device)
    return report


def format_report(report: dict) -> str:
    """The report as the lines `rlhfkit env` prints."""
    lines = ["rlhfkit env", ""]
    lines += [f"- {name}: {version}" for name, version in report["versions"].items()]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report["cpu_flags"].items())
    threads = report["threads"]
    lines += [
        f"- platform: {report['platform']}",
        f"- CPU: {report['cpu']} (torch kernels: {report['cpu_capability']})",
        f"- CPU flags: {flags}",
        f"- devices: {', '.join(report['devices'])}",
        f"- threads: torch {threads['torch']} of {threads['cpu_count']} CPUs (OMP_NUM_THREADS="
        f"{threads['OMP_NUM_THREADS'] or 'unset'})",
        "",
        f"- native bf16 matmuls: {'yes' if report['native_bf16'] else 'no'} ({report['native_bf16_reason']}; "
        f"{NATIVE_BF16_ENV}=0|1 overrides)",
        f"- dtype auto -> {report['dtype_auto']} (every command's default --dtype)",
        "- sampling engine: " + ("oneDNN-packed bf16 linear layers" if report["engine_packed_bf16"] else
                                 f"plain {report['dtype_auto']} linear layers (no packed path)"),
    ]
    for row in report.get("matmul", []):
        lines.append(f"- matmul {row['shape']}: fp32 {row['fp32_ms']:.3f} ms, bf16 {row['bf16_ms']:.3f} ms "
                     f"(bf16 runs at {row['bf16_speedup']:.2f}x fp32's speed)")
    slower = [row for row in report.get("matmul", []) if row["bf16_speedup"] < 1]
    if report["dtype_auto"] == "bf16" and len(slower) == len(report.get("matmul", [None])):
        lines.append(f"- note: auto picks bf16 but bf16 was slower in every timing here; try --dtype fp32 or "
                     f"{NATIVE_BF16_ENV}=0")
    return "\n".join(lines)
