"""Compress-engine tasks for LoRA adapters (peft calls themselves are in libs/lora.py).

Tasks of serve's worker (`thrifty.serve.worker`), run in the compress engine:
- `train_adapters`: small LoRA adapters on text slices (the demo adapters),
- `merge_adapter`: fold an adapter into a copy of its base (to serve it as its own model),
- `reference_generate`: greedy tokens from transformers + peft, the reference that served
  output is compared against.
"""

import time
from pathlib import Path

from thrifty.core.jobs import Events
from thrifty.core.token_prefix import without_prefix
from thrifty.libs.lora import add_lora, merged, with_adapter


def _token_windows(tokenizer, texts: list[str], seq_len: int, prefix: list[int]
                   ) -> list[list[int]]:
    """Training windows of seq_len, each starting with the model's prefix (its BOS where the
    tokenizer adds one), as the requests the adapter will serve do."""
    ids: list[int] = []
    for text in texts:
        ids.extend(without_prefix(tokenizer(text, add_special_tokens=False)["input_ids"], prefix))
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    room = seq_len - len(prefix)
    return [prefix + ids[i:i + room] for i in range(0, len(ids) - room + 1, room)]


def train_adapters(params: dict, events: Events) -> dict:
    """Train one LoRA adapter per slice of text, each from the same base weights."""
    import torch

    from thrifty.libs import hf

    torch.manual_seed(params["seed"])
    tokenizer = hf.load_tokenizer(params["base_path"])
    results = []
    slices = params["slices"]
    for number, piece in enumerate(slices, start=1):
        started = time.monotonic()
        events.status(f"loading the base model for {piece['name']}")
        model = hf.load_causal_lm(params["base_path"])
        model = add_lora(model, params["rank"], params["alpha"], params["target_modules"])
        # peft leaves lora_B at zero; training makes it non-zero.
        windows = _token_windows(tokenizer, piece["texts"], params["seq_len"],
                                 hf.prefix_ids(tokenizer))
        generator = torch.Generator().manual_seed(params["seed"] + number)
        order = torch.randperm(len(windows), generator=generator).tolist()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=params["learning_rate"])
        model.train()
        losses = []
        stage = f"[{number}/{len(slices)}] {piece['name']}"
        for step in range(params["steps"]):
            batch_ids = [windows[order[(step * params["batch_size"] + i) % len(order)]]
                         for i in range(params["batch_size"])]
            batch = torch.tensor(batch_ids)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(round(loss.item(), 4))
            events.progress(stage, step + 1, params["steps"], "steps")
        out_dir = Path(params["out_dir"]) / piece["name"]
        model.save_pretrained(out_dir, safe_serialization=True)
        results.append({
            "name": piece["name"], "path": str(out_dir), "windows_count": len(windows),
            "loss_first": losses[0], "loss_last": losses[-1], "losses": losses,
            "train_s": round(time.monotonic() - started, 1),
        })
        del model
    return {"adapters": results, "torch_threads": torch.get_num_threads()}


def merge_adapter(params: dict, events: Events) -> dict:
    """Base weights + the adapter's low-rank update, saved as a plain checkpoint."""
    from thrifty.libs import hf

    events.status("loading base and adapter")
    model = with_adapter(hf.load_causal_lm(params["base_path"], dtype="auto"),
                         params["adapter_path"])
    events.status("merging")
    plain = merged(model)
    events.status("saving")
    plain.save_pretrained(params["out_dir"], safe_serialization=True)
    hf.save_tokenizer(hf.load_tokenizer(params["base_path"]), params["out_dir"])
    return {"parameters_params": sum(p.numel() for p in plain.parameters())}


def reference_generate(params: dict, events: Events) -> dict:
    """Greedy token ids for each prompt, from the base alone or base + adapter."""
    import torch

    from thrifty.libs import hf

    tokenizer = hf.load_tokenizer(params["base_path"])
    model = hf.load_causal_lm(params["base_path"], dtype=params["dtype"])
    if params.get("adapter_path"):
        model = with_adapter(model, params["adapter_path"])
    model.eval()
    outputs = []
    for prompt in params["prompts"]:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(**ids, max_new_tokens=params["max_tokens"],
                                       do_sample=False, pad_token_id=tokenizer.eos_token_id)
        new_ids = generated[0, ids["input_ids"].shape[1]:].tolist()
        outputs.append({"prompt": prompt, "token_ids": new_ids,
                        "text": tokenizer.decode(new_ids, skip_special_tokens=True)})
    return {"outputs": outputs}
