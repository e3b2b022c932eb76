"""Held-out accuracy: greedy generation graded by a TRL-convention grader.

Example:
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from trl_ext.data import rl_dataset
    >>> from trl_ext.evaluation import evaluate_accuracy
    >>> from trl_ext.models import default_model_path
    >>> from trl_ext.rewards import default_grader
    >>> path = default_model_path()  # doctest: +SKIP
    >>> model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)  # doctest: +SKIP
    >>> evaluate_accuracy(model, tok, rl_dataset("chain_sum", 16, split="eval"), default_grader("chain_sum"))  # doctest: +SKIP
    0.25
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def _prompt_texts(prompts: list[Any], tokenizer) -> list[str]:
    from trl.data_utils import maybe_apply_chat_template

    return [maybe_apply_chat_template({"prompt": p}, tokenizer)["prompt"] for p in prompts]


@torch.no_grad()
def generate_completions(
    model, tokenizer, prompts: list[Any], max_new_tokens: int = 256, batch_size: int = 16,
    progress: str | None = "held-out evaluation",
) -> list[str]:
    """Greedy completions (text) for standard (str) or conversational (list of messages) prompts.

    Prompts are formatted exactly as TRL's trainers format them (``maybe_apply_chat_template``), left-padded. A tqdm
    bar named ``progress`` counts the prompts on stderr (``progress=None``: no bar).
    """
    from tqdm import tqdm

    texts = _prompt_texts(prompts, tokenizer)
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    outputs: list[str] = []
    bar = tqdm(total=len(texts), desc=progress, unit="prompt", disable=progress is None or not texts)
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
            bar.update(len(new_tokens))
    finally:
        bar.close()
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return outputs


def evaluate_accuracy(
    model,
    tokenizer,
    dataset,
    grader: Callable[..., list[float | None]],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    return_completions: bool = False,
) -> float | tuple[float, list[str]]:
    """Mean grader score of greedy completions over ``dataset`` (samples the grader scores ``None`` are skipped).

    Every dataset column is passed to the grader, as TRL does for reward functions; conversational prompts get
    conversational completions (``[{"role": "assistant", "content": …}]``).
    """
    if "prompt" not in dataset.column_names:
        raise ValueError(f"evaluate_accuracy: the dataset has no 'prompt' column (columns: {dataset.column_names}).")
    prompts = list(dataset["prompt"])
    texts = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    conversational = bool(prompts) and isinstance(prompts[0], list)
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    columns = {c: list(dataset[c]) for c in dataset.column_names if c != "prompt"}
    scores = [s for s in grader(prompts=prompts, completions=completions, **columns) if s is not None]
    accuracy = float(sum(scores) / len(scores)) if scores else float("nan")
    return (accuracy, texts) if return_completions else accuracy
