"""Process supervision: completions split into steps, steps mapped to token spans, and step scorers.

A **process reward function** follows TRL's reward-function convention with one more keyword, ``steps``::

    fn(prompts=..., completions=..., completion_ids=..., steps=..., **dataset_columns,
       trainer_state=..., log_extra=..., log_metric=...) -> list[list[float | None] | None]

``steps[i]`` is the list of step strings of completion ``i``; the function returns, for each completion, one reward
per step (``None`` skips a step) or ``None`` (skips the whole completion). Skipped steps leave the pooled
normalisation of :func:`trl_ext.core.process_advantages` untouched. Two scorers ship here:

- :class:`ArithmeticStepVerifier`: the fraction of arithmetic claims (``35 × 3 = 105``, ``160-48=112``) of a step that
  are true; a step with no claim gets ``None`` (neutral).
- :class:`ProcessRewardModel`: a token-classification process reward model (the format of Math-Shepherd and of TRL's
  former ``PRMTrainer``) scoring the last token of each step; the step reward is the probability of the "correct"
  label.

Steps are cut from the decoded completion by a separator (default a blank line). :func:`completion_steps` maps each
step to the index of the last token that holds any of its characters, by incremental decoding (binary search over
decoded prefixes), so it is exact whatever the tokenizer merges: a separator fused with neighbouring text
(``".\\n\\n"``), multi-byte characters split over several tokens, special step tokens.

Example:
    >>> from trl_ext.rewards.process import ArithmeticStepVerifier, split_step_spans
    >>> text = "35 × 3 = 105\\n\\n160-48=111\\n\\nSo the answer is 7"
    >>> [text[a:b] for a, b in split_step_spans(text, "\\n\\n")]
    ['35 × 3 = 105', '160-48=111', 'So the answer is 7']
    >>> ArithmeticStepVerifier()(steps=[["35 × 3 = 105", "160-48=111", "So the answer is 7"]])
    [[1.0, 0.0, None]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..text import Claim, Expression, arithmetic_claims, completion_text, prompt_text, split_step_spans

ProcessRewardFunc = Callable[..., list]
"""``fn(prompts=, completions=, completion_ids=, steps=, **columns) -> list[list[float | None] | None]``."""

__all__ = [
    "ArithmeticStepVerifier",
    "CompletionSteps",
    "ProcessRewardFunc",
    "ProcessRewardModel",
    "check_process_rewards",
    "completion_steps",
    "skipped_token_ids",
    "split_step_spans",
]


# ----------------------------------------------------------------------------------------------------------------------
# Steps → character spans → token spans
# ----------------------------------------------------------------------------------------------------------------------


# split_step_spans is trl_ext.text's (re-exported here)


@dataclass
class CompletionSteps:
    """The steps of one completion: their text, and the inclusive index of the last token of each.

    ``ends[j]`` indexes the completion's token ids. The last step always ends on the completion's last token (so its
    trailing whitespace, separator and EOS belong to it); ``text`` is the decoded completion the steps were cut from.
    """

    steps: list[str]
    ends: list[int]
    text: str


def skipped_token_ids(tokenizer, separator: str) -> set[int]:
    """Ids that ``decode(skip_special_tokens=True)`` drops, except the separator when it is itself a special token.

    Pass the result as ``drop_ids`` to :func:`completion_steps` to compute it once per batch.
    """
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(i for i, tok in decoder.items() if getattr(tok, "special", False))
    if separator in getattr(tokenizer, "all_special_tokens", []) or any(
        str(tok) == separator for tok in decoder.values()
    ):
        ids.discard(tokenizer.convert_tokens_to_ids(separator))
    return ids


def _common_prefix_len(a: str, b: str) -> int:
    if b.startswith(a):
        return len(a)
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def completion_steps(
    token_ids: Sequence[int], tokenizer, separator: str = "\n\n", drop_ids: set[int] | None = None
) -> CompletionSteps:
    """Split a completion's tokens into steps and find the last token of each step.

    The completion is decoded as TRL decodes it (special tokens skipped, except a separator that is a special step
    token), cut into steps by :func:`split_step_spans`, and each step's last character is located in the tokens by a
    binary search over decoded prefixes: step ``j`` ends at the first token ``k`` whose decoded prefix covers that
    character. This is exact for any tokenizer (merged separators, byte-level pieces of multi-byte characters), and
    costs ``O(S · log T)`` decodes. The last step ends at the last token. No steps (an empty completion) gives empty
    lists.

    Example:
        >>> from transformers import AutoTokenizer
        >>> from trl_ext.models import default_tokenizer_path
        >>> tok = AutoTokenizer.from_pretrained(str(default_tokenizer_path()))  # SmolLM2's tokenizer
        >>> ids = tok("1+1=2.\\n\\nSo 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        >>> result = completion_steps(ids, tok)
        >>> result.steps, result.ends, len(ids)
        (['1+1=2.', 'So 2'], [5, 11], 12)
    """
    token_ids = [int(t) for t in token_ids]
    drop = skipped_token_ids(tokenizer, separator) if drop_ids is None else drop_ids
    positions = [i for i, t in enumerate(token_ids) if t not in drop]
    kept = [token_ids[i] for i in positions]
    decode_kwargs = {"skip_special_tokens": False}
    text = tokenizer.decode(kept, **decode_kwargs) if kept else ""
    spans = split_step_spans(text, separator)
    if not spans:
        return CompletionSteps(steps=[], ends=[], text=text)

    covered: dict[int, int] = {}

    def covered_chars(k: int) -> int:  # characters of `text` fully produced by kept[: k + 1]
        if k not in covered:
            covered[k] = _common_prefix_len(tokenizer.decode(kept[: k + 1], **decode_kwargs), text)
        return covered[k]

    ends = []
    lo_bound = 0
    for _, char_end in spans[:-1]:
        last_char = char_end - 1
        lo, hi = lo_bound, len(kept) - 1
        while lo < hi:  # smallest k with covered_chars(k) > last_char
            mid = (lo + hi) // 2
            if covered_chars(mid) > last_char:
                hi = mid
            else:
                lo = mid + 1
        ends.append(positions[lo])
        lo_bound = lo
    ends.append(len(token_ids) - 1)
    return CompletionSteps(steps=[text[a:b] for a, b in spans], ends=ends, text=text)


def check_process_rewards(
    output: Any, steps: Sequence[Sequence[str]], func_name: str
) -> list[list[float]]:
    """Validate a process reward function's output and return it with ``None`` turned into NaN.

    Raises ``ValueError`` naming ``func_name`` when the output is not one entry per completion, when an entry's length
    differs from the completion's step count, or when a step reward is not a number (e.g. the string ``'1.0'``), NaN or
    infinite (use ``None`` to skip a step).
    A ``None`` entry skips the whole completion.
    """
    if not isinstance(output, (list, tuple)) or len(output) != len(steps):
        got = len(output) if isinstance(output, (list, tuple)) else type(output).__name__
        raise ValueError(
            f"The process reward function '{func_name}' returned {got} entries, but {len(steps)} were expected: one "
            "list of step rewards (or None) per completion."
        )
    rewards: list[list[float]] = []
    for i, (entry, completion_steps_) in enumerate(zip(output, steps)):
        if entry is None:
            rewards.append([math.nan] * len(completion_steps_))
            continue
        if isinstance(entry, torch.Tensor):
            entry = entry.tolist()
        if not isinstance(entry, (list, tuple)) or len(entry) != len(completion_steps_):
            got = len(entry) if isinstance(entry, (list, tuple)) else type(entry).__name__
            raise ValueError(
                f"The process reward function '{func_name}' returned {got} step rewards for completion {i}, which has "
                f"{len(completion_steps_)} steps; return one reward (or None) per step."
            )
        row = []
        for j, value in enumerate(entry):
            if value is None:
                row.append(math.nan)
                continue
            if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):  # numbers, numpy/torch scalars
                raise ValueError(
                    f"The process reward function '{func_name}' returned a {type(value).__name__} ({value!r}) for step "
                    f"{j} of completion {i}; step rewards must be numbers (float or int), or None to skip a step. "
                    "Return float(...) of the value."
                )
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(
                    f"The process reward function '{func_name}' returned {value} for step {j} of completion {i}; step "
                    "rewards must be finite (return None to skip a step)."
                )
            row.append(value)
        rewards.append(row)
    return rewards


def _resolve_steps(steps, completions, separator: str, fn: str) -> list[list[str]]:
    if steps is not None:
        return [list(s) for s in steps]
    if completions is None:
        raise ValueError(f"{fn}: pass `steps` (list of step strings per completion) or `completions`.")
    out = []
    for c in completions:
        text = completion_text(c)
        out.append([text[a:b] for a, b in split_step_spans(text, separator)])
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Heuristic arithmetic verifier (claims parsed and evaluated exactly by trl_ext.text)
# ----------------------------------------------------------------------------------------------------------------------


class ArithmeticStepVerifier:
    """Process reward: the fraction of true arithmetic claims in each step.

    A claim is ``<expression> = <expression>`` where at least one side has an operator (``+ - × x * · / ÷ ^`` and
    parentheses), e.g. ``35 × 3 = 105``, ``160-48=112``, ``£195/day * 12 days/month = £2340/month``. Currency signs,
    thousands separators and ``%`` are understood; words right after a number are read as units and skipped
    (``9 skeins + 4 skeins = 13``), ``/word`` is a unit (``days/week``), ``2(3+4)`` multiplies, a leading ``-`` on a
    line is a list bullet, and chains ``a = b = c`` give one claim per ``=``. A claim is true when both sides agree
    within the precision of a side written as a plain decimal (``10/3 = 3.33`` is true) or a relative ``1e-6``
    otherwise. The check is strict: a result rounded to an integer (``17*0.5=8``, a habit of gsm_symbolic's
    generator) counts as false.

    A step without any claim gets ``no_claim_reward`` — ``None`` by default, i.e. neutral: the step is left out of the
    pooled normalisation and adds nothing to the advantages. Set it to a number (e.g. ``0.5``) to score such steps.

    Follows the process-reward-function convention (``steps=`` in, one list of step rewards per completion out); when
    called without ``steps`` it splits ``completions`` itself with ``step_separator``.

    Example:
        >>> verifier = ArithmeticStepVerifier()
        >>> verifier(steps=[["He has 72*0.5=36 pebbles.", "Then 36+17=54 pebbles.", "Done."]])
        [[1.0, 0.0, None]]
        >>> verifier.claims("A year: £2340/month * 12 months/year = £28080")
        [(28080.0, 28080.0, True)]
    """

    __name__ = "arithmetic_steps"

    def __init__(self, no_claim_reward: float | None = None, step_separator: str = "\n\n", rel_tol: float = 1e-6):
        if not step_separator:
            raise ValueError("ArithmeticStepVerifier: step_separator must be a non-empty string.")
        self.no_claim_reward = no_claim_reward
        self.step_separator = step_separator
        self.rel_tol = rel_tol

    def claims(self, text: str) -> list[tuple[float, float, bool]]:
        """Every claim of ``text`` as ``(left value, right value, is_true)`` (:func:`trl_ext.text.arithmetic_claims`
        with an operation on either side)."""
        out = []
        for claim in arithmetic_claims(text):
            if not claim.has_operation:
                continue
            try:
                left, right = float(claim.left_value), float(claim.right_value)
            except OverflowError:
                continue
            sides = (_plain_decimals(claim, claim.right), _plain_decimals(claim, claim.left))
            decimals = [d for d in sides if d is not None]
            tol = max(self.rel_tol * max(abs(left), abs(right)), 1e-9)
            if decimals and decimals[0] > 0:
                tol = max(tol, 0.5 * 10 ** (-decimals[0]) + 1e-9)
            out.append((left, right, abs(left - right) <= tol))
        return out

    def score_step(self, step: str) -> float | None:
        """Fraction of true claims in ``step``; ``no_claim_reward`` when it makes none."""
        found = self.claims(step)
        if not found:
            return self.no_claim_reward
        return sum(ok for _, _, ok in found) / len(found)

    def __call__(self, prompts=None, completions=None, steps=None, **kwargs) -> list[list[float | None]]:
        steps = _resolve_steps(steps, completions, self.step_separator, "ArithmeticStepVerifier")
        return [[self.score_step(step) for step in completion] for completion in steps]


def _plain_decimals(claim: Claim, side: Expression) -> int | None:
    """Decimals of a side written as one number (``3.33`` → 2, ``12.5%`` → 3); None for a computation."""
    if side.n_ops or len(side.operands) != 1:
        return None
    tok = claim.tokens[side.operands[0]]
    return tok.decimals + (2 if tok.scale != 1 else 0)


# ----------------------------------------------------------------------------------------------------------------------
# Process reward model (token classification)
# ----------------------------------------------------------------------------------------------------------------------


def _check_head_loaded(path: str, model: Any, info: dict) -> None:
    """Raise if the checkpoint at ``path`` had no token-classification head (transformers initialised it randomly)."""
    missing = [k for k in info.get("missing_keys", ()) if k.split(".")[0] in ("score", "classifier")]
    if missing:
        archs = getattr(model.config, "architectures", None) or []
        raise ValueError(
            f"ProcessRewardModel: {path} has no token-classification head ({', '.join(sorted(missing))} missing from "
            f"the checkpoint{f'; it was saved as {archs[0]}' if archs else ''}), so its step scores would come from a "
            "randomly initialised layer. Pass a process reward model trained for token classification (e.g. with "
            "trl_ext.trainers.PRMTrainer), not a causal LM or base model."
        )


class ProcessRewardModel:
    """Process reward from a token-classification PRM: P("correct") at the last token of each step.

    The input of each completion is built in the format of Math-Shepherd-style PRMs and of TRL's former
    ``PRMTrainer``: ``[bos] + prompt + step_1 + sep + step_2 + sep + …`` (each piece tokenized without special
    tokens), and the PRM's logits at the last token of each ``step_j + sep`` give the step reward
    ``softmax(logits)[correct_label]``. Completions are scored in batches of ``batch_size`` (right padding). Steps cut
    off by ``max_length`` get ``None``; the prompt is truncated from the left first. Conversational prompts are read
    as the content of their last user message.

    Args:
        model: an ``AutoModelForTokenClassification`` model, or a path to load one from.
        tokenizer: its tokenizer (loaded from ``model``'s path when omitted).
        step_separator: the separator the PRM was trained with. ``None`` (default): the one a
            :class:`~trl_ext.trainers.prm.PRMTrainer` recorded in the model's config (``config.step_separator``),
            else ``"\\n"`` (TRL's former ``PRMConfig`` default).
        correct_label: name (case-insensitive, looked up in ``model.config.label2id``) or index of the "correct"
            class. A model trained by TRL's former ``PRMTrainer`` has labels ``LABEL_0``/``LABEL_1``: pass ``1``.
        batch_size: completions per forward pass.
        max_length: truncation length (default: the model's ``max_position_embeddings`` when set).

    Example:
        >>> from transformers import AutoTokenizer, LlamaConfig, LlamaForTokenClassification
        >>> from trl_ext.models import default_tokenizer_path
        >>> tok = AutoTokenizer.from_pretrained(str(default_tokenizer_path()))
        >>> config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        ...     intermediate_size=64, num_labels=2, id2label={0: "wrong", 1: "correct"},
        ...     label2id={"wrong": 0, "correct": 1})
        >>> prm = ProcessRewardModel(LlamaForTokenClassification(config), tok)  # a random PRM, for the shapes
        >>> scores = prm(prompts=["1+1?"], steps=[["1+1=2", "#### 2"]])
        >>> len(scores[0]), all(0.0 < p < 1.0 for p in scores[0])
        (2, True)
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        step_separator: str | None = None,
        correct_label: str | int = "correct",
        batch_size: int = 8,
        max_length: int | None = None,
        name: str | None = None,
    ):
        if isinstance(model, str):
            from transformers import AutoModelForTokenClassification

            path = model
            model, info = AutoModelForTokenClassification.from_pretrained(path, output_loading_info=True)
            _check_head_loaded(path, model, info)
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer is None:
            raise ValueError("ProcessRewardModel: pass the PRM's tokenizer (or a model path to load both from).")
        if step_separator is None:
            step_separator = getattr(model.config, "step_separator", None) or "\n"
        if not isinstance(step_separator, str) or not step_separator:
            raise ValueError("ProcessRewardModel: step_separator must be a non-empty string.")
        if batch_size < 1:
            raise ValueError(f"ProcessRewardModel: batch_size must be >= 1, got {batch_size}.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.step_separator = step_separator
        self.batch_size = batch_size
        self.correct_index = self._resolve_correct_label(model.config, correct_label)
        if max_length is None:
            max_length = getattr(model.config, "max_position_embeddings", None)
        self.max_length = max_length
        self.__name__ = name or "prm"

    @staticmethod
    def _resolve_correct_label(config, correct_label: str | int) -> int:
        num_labels = int(getattr(config, "num_labels", 0))
        labels = dict(getattr(config, "id2label", {}) or {})
        if num_labels < 2:
            raise ValueError(
                f"ProcessRewardModel: the model has num_labels={num_labels}; a token-classification PRM needs at least "
                "two classes, one of them 'correct'."
            )
        if isinstance(correct_label, bool) or not isinstance(correct_label, (int, str)):
            raise ValueError(f"ProcessRewardModel: correct_label must be a label name or index, got {correct_label!r}.")
        if isinstance(correct_label, int):
            if not 0 <= correct_label < num_labels:
                raise ValueError(
                    f"ProcessRewardModel: correct_label={correct_label} is out of range for a model with "
                    f"{num_labels} labels {labels}."
                )
            return correct_label
        for index, name in labels.items():
            if str(name).lower() == correct_label.lower():
                return int(index)
        raise ValueError(
            f"ProcessRewardModel: the model's labels {labels} include no {correct_label!r} class. Pass "
            "correct_label=<name or index of the 'correct' class> (a model trained by TRL's former PRMTrainer uses "
            "index 1 = correct)."
        )

    def _encode(self, prompt: Any, steps: Sequence[str]) -> tuple[list[int], list[int | None]]:
        tok = self.tokenizer
        prompt_ids = tok(prompt_text(prompt), add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None:
            prompt_ids = [tok.bos_token_id] + prompt_ids
        sep_ids = tok(self.step_separator, add_special_tokens=False)["input_ids"]
        pieces = [tok(step, add_special_tokens=False)["input_ids"] + sep_ids for step in steps]
        completion_len = sum(len(p) for p in pieces)
        if self.max_length is not None and len(prompt_ids) + completion_len > self.max_length:
            keep = max(self.max_length - completion_len, min(len(prompt_ids), 1))
            prompt_ids = prompt_ids[len(prompt_ids) - keep :]
        ids = list(prompt_ids)
        positions: list[int | None] = []
        for piece in pieces:
            ids.extend(piece)
            positions.append(len(ids) - 1)
        if self.max_length is not None and len(ids) > self.max_length:
            ids = ids[: self.max_length]
            positions = [p if p is not None and p < self.max_length else None for p in positions]
        return ids, positions

    @torch.inference_mode()
    def score(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]]) -> list[list[float | None]]:
        """P(correct) at the last token of each step, for each ``(prompt, steps)`` pair."""
        if len(prompts) != len(steps):
            raise ValueError(f"ProcessRewardModel: {len(prompts)} prompts but {len(steps)} step lists.")
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        encoded = [self._encode(p, s) if s else ([], []) for p, s in zip(prompts, steps)]
        results: list[list[float | None]] = [[None] * len(s) for s in steps]
        todo = [i for i, (ids, _) in enumerate(encoded) if ids]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = encoded[i][0]
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, : len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            probs = logits.float().softmax(-1)[..., self.correct_index].cpu()
            for row, i in enumerate(batch):
                results[i] = [None if p is None else float(probs[row, p]) for p in encoded[i][1]]
        return results

    def __call__(self, prompts=None, completions=None, steps=None, **kwargs) -> list[list[float | None]]:
        steps = _resolve_steps(steps, completions, self.step_separator, "ProcessRewardModel")
        if prompts is None:
            prompts = [""] * len(steps)
        return self.score(prompts, steps)
