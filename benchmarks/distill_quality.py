"""Distillation benchmark on SmolLM2-135M: does the teacher's signal help a pruned student?

Teacher SmolLM2-135M (30 layers) -> a student that keeps 15 of its layers (derived with
`--student-from-teacher`, so both students start from the same weights). Each student trains
with the same steps, sequences, learning rate and seed through `thrifty distill`:
  - cross-entropy only (--alpha 0: no teacher signal),
  - distillation (--alpha A, offline top-k teacher signal captured with vLLM),
then `thrifty eval` scores teacher, student before training and every trained student on the
same enwiki evaluation tokens. Reported: perplexity, the share of the loss gap to the teacher
each student closed, training tokens/s (side by side in one sitting), and the stored
teacher-signal bytes per token.

Writes results/distill.json and results/distill.md. Run from the repository root:
    .venv/bin/python benchmarks/distill_quality.py [--steps 150] [--alphas 0.5,1.0]
"""

import argparse
import json
from pathlib import Path

from common import fingerprint, thrifty

from thrifty.distill.report import gap_closed_pct

HERE = Path(__file__).resolve().parent
TEACHER = "smollm2-135m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/thrifty-distill-bench"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--keep-layers", type=int, default=15)
    parser.add_argument("--alphas", default="0.5", help="distillation weights to run")
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--out", default="distill")
    parser.add_argument("--fresh", action="store_true", help="retrain students already in --work")
    args = parser.parse_args()

    common = ["--teacher", TEACHER, "--student-from-teacher", "--keep-layers",
              str(args.keep_layers), "--steps", str(args.steps), "--batch-size",
              str(args.batch_size), "--seq-len", str(args.seq_len), "--save-steps",
              str(args.steps), "--no-eval"]
    runs = [("cross-entropy only", "ce", ["--alpha", "0"])]
    runs += [(f"distilled (alpha {a}, forward KL, top-20)", f"kd-{a}", ["--alpha", a])
             for a in args.alphas.split(",")]
    results = {}
    for name, folder, extra in runs:
        print(f"training: {name}", flush=True)
        out = args.work / folder
        # --resume reuses a finished or interrupted run with the same settings (--fresh: no)
        again = "--resume" if out.exists() and not args.fresh else "--force"
        results[name] = thrifty("distill", *common, *extra, again, "--out", str(out))

    print("evaluating", flush=True)
    first = args.work / runs[0][1]
    models = [TEACHER, str(first / "student-init")]
    models += [str(args.work / folder / "student") for _, folder, _ in runs]
    evaluation = thrifty("eval", *models, "--max-tokens", str(args.eval_tokens))
    ppl = [row["perplexity"] for row in evaluation["rows"]]
    teacher_ppl, before_ppl = ppl[0], ppl[1]
    rows = [{"model": f"teacher ({TEACHER}, 30 layers)", "perplexity": teacher_ppl},
            {"model": f"student before training ({args.keep_layers} layers)",
             "perplexity": before_ppl}]
    for (name, _, _), trained_ppl in zip(runs, ppl[2:], strict=True):
        measured = results[name]["measured"]
        rows.append({"model": name, "perplexity": trained_ppl,
                     "loss_gap_closed_pct": gap_closed_pct(before_ppl, trained_ppl, teacher_ppl),
                     "train_tokens_per_s": measured["train_tokens_per_s"],
                     "train_s": measured["train_s"],
                     "signal_bytes_per_token": measured.get("signal_bytes_per_token"),
                     "capture_tokens_per_s": measured.get("capture_tokens_per_s")})
    for row, evaluated in zip(rows, evaluation["rows"], strict=True):
        row["parameters_params"] = evaluated["parameters_params"]
    prepare = results[runs[0][0]]["details"]["prepare"]
    summary = {
        "teacher": TEACHER, "steps": args.steps, "batch_size": args.batch_size,
        "seq_len": args.seq_len, "train_tokens": results[runs[0][0]]["measured"]["train_tokens"],
        "kept_layers": prepare["kept_layers"], "eval_tokens": evaluation["rows"][0]["eval_tokens"],
        "rows": rows, "eval_run": evaluation["run"], "fingerprint": fingerprint(),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.out}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (HERE / "results" / f"{args.out}.md").write_text(markdown(summary))
    print(markdown(summary))


def markdown(summary: dict) -> str:
    lines = [
        "# Distillation: SmolLM2-135M teacher -> half-depth student", "",
        f"Student: {len(summary['kept_layers'])} of the teacher's 30 layers "
        f"(kept by block importance: {summary['kept_layers']}), initialised from the teacher. "
        f"Each trained student: {summary['steps']} steps x {summary['batch_size']} sequences x "
        f"{summary['seq_len']} tokens ({summary['train_tokens']:,} tokens of the enwiki "
        "calibration split), learning rate 1e-4 cosine, seed 0, full fine-tuning, on the CPU. "
        f"Perplexity on {summary['eval_tokens']:,} tokens of the enwiki evaluation split "
        "(window 1024).", "",
        "| model | parameters | perplexity | loss gap closed | training tokens/s | "
        "teacher signal bytes/token |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        closed = row.get("loss_gap_closed_pct")
        lines.append(
            f"| {row['model']} | {row['parameters_params'] / 1e6:.1f}M | "
            f"{row['perplexity']:,.2f} | {'' if closed is None else f'{closed:.1f}%'} | "
            f"{row.get('train_tokens_per_s') or ''} | "
            f"{row.get('signal_bytes_per_token') or ''} |")
    lines += ["", "Loss gap closed: (ln ppl_before - ln ppl_student) / (ln ppl_before - "
              "ln ppl_teacher). Training tokens/s include checkpoint saving; the distilled "
              "student's includes reading the stored teacher signal and the KD loss."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
