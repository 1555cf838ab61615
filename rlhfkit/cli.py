"""`rlhfkit <command>`: flags/YAML -> config dataclass -> one run(cfg). No training logic lives here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from rlhfkit import config as C
from rlhfkit.errors import ConfigError, RlhfkitError

# the training curves each command draws from its metrics.jsonl after training (trainers only write metrics):
# (x, {metric key: legend label}, file, title, y label)
CURVES = {
    "sft": [("step", {"sft/loss": "train", "eval_loss": "held-out"}, "loss.png", "SFT loss (NLL per token)",
             "loss")],
    "rm": [("epoch", {"train/loss": "train", "eval_loss": "held-out"}, "loss.png", "Bradley–Terry loss",
            "loss"),
           ("epoch", {"eval_accuracy": "held-out"}, "accuracy.png", "Held-out accuracy P(r_c > r_r)",
            "accuracy")],
    "dpo": [("step", {"dpo/loss": "train", "eval_loss": "held-out"}, "loss.png",
             "Preference loss (DPO family)", "loss"),
            ("step", {"dpo/reward_accuracy": "train", "eval_reward_accuracy": "held-out"},
             "reward_accuracy.png", "Reward accuracy P(r̂_c > r̂_r)", "accuracy"),
            ("step", {"dpo/chosen_reward": "chosen (train)", "dpo/rejected_reward": "rejected (train)",
                      "eval_reward_margin": "margin (held-out)"}, "rewards.png",
             "Implicit rewards r̂ = β (log π − log π_ref)", "reward")],
}


def draw_curves(command: str, output: str) -> None:
    """CURVES[command] as PNGs in `output` (main process only)."""
    from pathlib import Path

    from accelerate import PartialState

    from rlhfkit.report.plots import plot_series
    from rlhfkit.tracking import read_metrics

    if not PartialState().is_main_process:
        return
    rows = read_metrics(Path(output) / "metrics.jsonl")
    for x, ys, name, title, ylabel in CURVES[command]:
        plot_series(rows, x, ys, Path(output) / name, title, ylabel)


def run_sft(cfg: C.SFTConfig) -> None:
    from rlhfkit.trainers.sft import train_sft

    final = train_sft(cfg)
    draw_curves("sft", cfg.output)
    print(f"policy saved to {cfg.output}/policy: held-out loss {final.get('eval_loss', float('nan')):.4f}, "
          f"perplexity {final.get('eval_perplexity', float('nan')):.2f}")


def run_rm(cfg: C.RMConfig) -> None:
    from rlhfkit.trainers.rm import train_reward_model

    final = train_reward_model(cfg)
    draw_curves("rm", cfg.output)
    accuracy = final.get("eval_accuracy", float("nan"))
    print(f"reward model saved to {cfg.output}/model: held-out accuracy {accuracy:.3f}")


def run_score(cfg: C.ScoreConfig) -> None:
    from rlhfkit.models.reward import RewardModel

    if cfg.data is None and (cfg.prompt is None or cfg.response is None):
        raise ConfigError("score needs --prompt and --response, or --data FILE")
    rm = RewardModel.from_pretrained(cfg.model)
    if cfg.data is None:
        reward = rm.score([cfg.prompt], [cfg.response])[0]
        print(json.dumps({"reward": reward}) if cfg.json else f"{reward:.6f}")
        return
    from rlhfkit.data.readers import PreferenceFields, load_preferences

    f = cfg.fields
    pairs, report = load_preferences(cfg.data, PreferenceFields(f.prompt_field, f.chosen_field, f.rejected_field))
    logging.getLogger("rlhfkit").info(report.summary())
    prompts = [p.prompt for p in pairs]
    chosen = rm.score(prompts, [p.chosen for p in pairs], cfg.batch_size)
    rejected = rm.score(prompts, [p.rejected for p in pairs], cfg.batch_size)
    wins = [c > r for c, r in zip(chosen, rejected)]
    result = {
        "accuracy": sum(wins) / len(wins),
        "n": len(wins),
        "chosen_mean": sum(chosen) / len(chosen),
        "rejected_mean": sum(rejected) / len(rejected),
        "skipped": sum(report.skipped.values()),
    }
    print(json.dumps(result) if cfg.json else f"accuracy {result['accuracy']:.4f} on {result['n']} pairs")


def run_online(cfg: C.OnlineConfig) -> None:
    """`rlhfkit ppo|grpo|rloo|reinforce-pp`: one trainer each, the same loop (trainers/online.py)."""
    if isinstance(cfg, C.PPOConfig):
        from rlhfkit.trainers.ppo import train_ppo as train
    else:
        from rlhfkit.trainers.critic_free import train_critic_free as train

    final = train(cfg)
    print(f"policy saved to {cfg.output}/policy: last step score {final.get('rollout/score_mean', float('nan')):.3f}, "
          f"KL {final.get('rollout/kl', float('nan')):.3f}")


def run_dpo(cfg: C.DPOConfig) -> None:
    from rlhfkit.trainers.dpo import train_dpo

    final = train_dpo(cfg)
    draw_curves("dpo", cfg.output)
    accuracy = final.get("eval_reward_accuracy", float("nan"))
    margin = final.get("eval_reward_margin", float("nan"))
    print(f"policy saved to {cfg.output}/policy: held-out reward accuracy {accuracy:.3f}, "
          f"margin {margin:.3f}")


def print_methods_table(summary: dict, title: str) -> None:
    """The end-of-run table in the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("method", "gold reward [95% CI]", "RM reward", "KL to ref (nats)", "length", "win rate vs base"):
        table.add_column(col)
    fmt = lambda m, k: f"{m[k]:.3f} [{m[k + '_ci95'][0]:.3f}, {m[k + '_ci95'][1]:.3f}]" if k in m else "-"  # noqa: E731
    for name, m in summary["methods"].items():
        rm = f"{m['rm_reward']:.3f}" if "rm_reward" in m else "-"
        table.add_row(name, fmt(m, "gold_reward"), rm, fmt(m, "kl"), f"{m['response_len']:.1f}",
                      fmt(m, "win_rate_gold") if "win_rate_gold" in m else "(baseline)")
    Console().print(table)


def run_demo(cfg: C.DemoConfig) -> None:
    from rlhfkit.demo import run_demo as demo

    summary = demo(cfg)
    print_methods_table(summary, f"rlhfkit demo: held-out prompts (n={summary['n_eval_prompts']})")
    low, high = summary["gold_delta_ci95"]
    print(f"gold reward SFT {summary['gold_reward_sft']:.3f} -> RLHF {summary['gold_reward_rlhf']:.3f} "
          f"(delta 95% CI [{low:.3f}, {high:.3f}]) at KL {summary['kl_rlhf']:.2f} nats; "
          f"{summary['wall_seconds'] / 60:.1f} min. Report: {cfg.output}/report.html")


def run_eval(cfg: C.EvalConfig) -> None:
    from rlhfkit.eval.cli import run_eval as evaluate

    summary = evaluate(cfg)
    print_methods_table(summary, f"rlhfkit eval (n={summary['n_eval_prompts']})")
    print(f"report: {cfg.output}/report.html")


def run_bon(cfg: C.BonConfig) -> None:
    from rlhfkit.eval.best_of_n import run_best_of_n
    from rlhfkit.report.html import build_report

    summary = run_best_of_n(cfg)
    build_report(cfg.output)
    print_methods_table(summary, f"rlhfkit bon: best-of-{cfg.n} by the RM (n={summary['n_eval_prompts']} prompts, "
                                 f"{summary['samples_per_prompt']} samples each)")
    for point in summary["curve"]:
        gold = f", gold {point['gold_reward']:.3f}" if "gold_reward" in point else ""
        print(f"best-of-{point['n']}: KL {point['kl']:.3f} nats, RM {point['rm_reward']:.3f}{gold}")
    print(f"report: {cfg.output}/report.html")


def run_frontier(cfg: C.FrontierConfig) -> None:
    from rlhfkit.frontier import run_frontier as frontier

    result = frontier(cfg)
    out = cfg.output_dir
    for p in result["points"]:
        print(f"{p['method']} {p['label']}: KL {p['kl']:.2f} nats, gold gain {p['gold_delta']:+.3f}, "
              f"RM gain {p['rm_delta']:+.3f}")
    for note in result["overoptimisation"]:
        print(f"over-optimisation: {note['text']}")
    print(f"frontier: {out}/frontier.json, {out}/frontier.html")


def run_env(cfg: C.EnvConfig) -> None:
    from rlhfkit.environment import environment_report, format_report

    report = environment_report(timing=cfg.timing)
    print(json.dumps(report, indent=2) if cfg.json else format_report(report))


COMMANDS = {
    "sft": (C.SFTConfig, run_sft, "supervised fine-tuning on demonstrations (loss on the responses)"),
    "rm": (C.RMConfig, run_rm, "train a Bradley–Terry reward model"),
    "score": (C.ScoreConfig, run_score, "score responses or a preference file with a reward model"),
    "ppo": (C.PPOConfig, run_online, "PPO against a reward model with a KL penalty to the reference"),
    "grpo": (C.GRPOConfig, run_online, "GRPO: k completions per prompt, group-normalised advantages, no critic"),
    "rloo": (C.RLOOConfig, run_online, "RLOO: k completions per prompt, leave-one-out baseline, no critic"),
    "reinforce-pp": (C.ReinforcePPConfig, run_online,
                     "REINFORCE++: KL in the per-token reward, returns whitened over the batch, no critic"),
    "dpo": (C.DPOConfig, run_dpo, "DPO / IPO / hinge / SimPO on preference pairs (no reward model)"),
    "eval": (C.EvalConfig, run_eval, "compare policies on held-out prompts (gold/RM reward, KL, length, report)"),
    "bon": (C.BonConfig, run_bon, "best-of-n by the reward model vs the SFT policy, and its reward-KL curve"),
    "demo": (C.DemoConfig, run_demo, "the whole RLHF loop on the embedded models, with a report"),
    "frontier": (C.FrontierConfig, run_frontier, "the reward–KL frontier on a demo's prefs and RM: a β sweep "
                 "per method plus best-of-n (the full sweep: an hour or more on 2 CPU cores)"),
    "env": (C.EnvConfig, run_env, "versions, devices, CPU flags and the precision rlhfkit picks here (for bug "
            "reports)"),
}


def make_parser() -> argparse.ArgumentParser:
    from rlhfkit import __version__

    parser = argparse.ArgumentParser(prog="rlhfkit", description=__doc__.split(":")[0])
    parser.add_argument("--version", action="version", version=f"rlhfkit {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (cls, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=(cls.__doc__ or help_text).strip())
        C.add_arguments(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet = args.__dict__.pop("quiet", False)
    cls, run, _ = COMMANDS[args.command]
    try:  # the whole config is checked before anything is imported, read or written
        cfg = C.from_args(cls, args)
    except ConfigError as e:
        return _fail(args.command, e)
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "accelerate", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` on every LoRA wrap: not ours to fix
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if args.command not in ("score",):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars; our own bars show the run's progress
    try:
        run(cfg)
    except RlhfkitError as e:
        return _fail(args.command, e)
    finally:
        _end_distributed()
    return 0


def _fail(command: str, error: RlhfkitError) -> int:
    """Print the error as one line (a value quoted in it may hold a newline) and return the exit status."""
    print(f"rlhfkit {command}: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
    return 2


def _end_distributed() -> None:
    """Tear down the process group of `accelerate launch` runs cleanly (gloo aborts otherwise)."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
