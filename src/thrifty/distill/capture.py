"""vLLM-engine task `teacher_topk`: the teacher's top-k log-probabilities for every position of
the training sequences, written shard by shard (formats/teacher_signal.py) so that it resumes.

vLLM serves the teacher here because it loads whatever vLLM serves (a quantized checkpoint
too) and shards a large teacher over GPUs with tensor parallelism.
"""

import errno
import time
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.core.jobs import Events
from thrifty.formats import teacher_signal

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def teacher_topk(params: dict, events: Events) -> dict:
    from thrifty.libs import vllm_offline

    folder = Path(params["signal_dir"])
    manifest = teacher_signal.read_manifest(folder)
    pending = teacher_signal.pending_shards(manifest)
    top_k, seq_len = manifest["top_k"], manifest["seq_len"]
    total = len(teacher_signal.shard_ranges(manifest))
    done_before = total - len(pending)
    if not pending:
        return {"shards_captured_count": 0, "capture_s": 0.0}
    events.status("starting vLLM with the teacher")
    llm = vllm_offline.offline_llm(params["teacher_path"], max_model_len=seq_len + 1,
                             max_logprobs=top_k, tensor_parallel_size=params["tensor_parallel"])
    tokens = teacher_signal.load_tokens(folder)
    sampling = vllm_offline.prompt_topk_params(top_k)
    stage = "teacher top-k"
    events.progress(stage, done_before, total, "shards")
    started, positions = time.monotonic(), 0
    for done, (number, start, end) in enumerate(pending, start=done_before + 1):
        prompts = vllm_offline.token_prompts([tokens[i].tolist() for i in range(start, end)])
        outputs = vllm_offline.generate_quietly(llm, prompts, sampling)
        ids, logprobs = [], []
        for output in outputs:
            seq_ids, seq_logprobs = vllm_offline.prompt_topk(output, top_k)
            ids.append(seq_ids)
            logprobs.append(seq_logprobs)
        try:
            teacher_signal.save_shard(folder, manifest, number, ids, logprobs)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            kept = len(manifest["shards"])
            raise BadInput(
                f"The disk holding {folder} is full ({exc.strerror}) after {kept} of {total} "
                f"teacher-signal shards. The {kept} finished shards are kept and nothing "
                "half-written is: free some space (or point --out at a bigger disk) and rerun "
                "the same command with --resume to capture the rest.") from exc
        positions += (end - start) * (seq_len - 1)
        elapsed = time.monotonic() - started
        events.progress(stage, done, total, "shards")
        events.status(f"{positions / elapsed:,.0f} positions/s")
    elapsed = time.monotonic() - started
    return {"shards_captured_count": len(pending), "capture_s": round(elapsed, 2),
            "capture_positions_per_s": round(positions / elapsed, 1),
            "vllm_version": vllm_offline.version()}
