"""Export a checkpoint to a HuggingFace GPT-2 folder that `transformers` loads offline.

    python export_hf.py --checkpoint_dir checkpoints --out_dir hf_model

writes hf_model/ with config.json, model.safetensors (or pytorch_model.bin), generation_config.json
and the tokenizer (tokenizer.json, tokenizer_config.json with our chat template,
special_tokens_map.json), so that

    GPT2LMHeadModel.from_pretrained("hf_model"); AutoTokenizer.from_pretrained("hf_model")

work with no network, on transformers 4.34 and later (5.x included): the files use only keys that
both read, and tokenizer.json keeps the merges notation of tokenizers < 0.20 (portable_tokenizer_json).
Our model computes exactly what GPT-2 does, so this is a renaming of tensors:
- HF GPT-2 stores c_attn / c_proj / c_fc as `Conv1D` with weights (in, out): ours are
  nn.Linear (out, in), so those are transposed.
- The embedding/head padded to a multiple of 64 is trimmed back to the real vocab_size.
- A tied head is written once (transformer.wte.weight, no lm_head.weight), as HF saves it.
- `attn.bias` / `attn.masked_bias` causal-mask buffers are not written: transformers builds its
  mask itself and has not stored them (non-persistent, then removed) since long before 4.40.
- A `bias=False` model exports exact zero biases (HF GPT-2 always has them).

Export needs no `transformers`; `safetensors` is optional (without it: pytorch_model.bin).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from common import ArgParser, UserError, cli_main, resolve_checkpoint_dir
from hf_common import check_replaceable, is_conv1d_key, write_folder_atomically
from model import GPTConfig, TransformerLanguageModel, unwrap_model
from tokenizer import CHAT_SPECIAL_TOKENS, EOT_TOKEN, load_tokenizer
from tokenizer_bpe import portable_tokenizer_json

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------- weights and config

def to_hf_state_dict(model: TransformerLanguageModel, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our state dict in GPT2LMHeadModel's names and layout: contiguous tensors, none sharing memory."""
    model = unwrap_model(model)
    c = model.config
    V, C = c.vocab_size, c.n_embd
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if key == "lm_head.weight" and c.tie_embeddings:
            continue  # HF ties it to transformer.wte.weight on load
        if key in ("transformer.wte.weight", "lm_head.weight"):
            t = t[:V]
        elif is_conv1d_key(key):
            t = t.t()
        out[key] = t.to(dtype or t.dtype).contiguous().clone()
    if not c.bias:  # exact equivalent: zero biases
        dt = out["transformer.wte.weight"].dtype
        out["transformer.ln_f.bias"] = torch.zeros(C, dtype=dt)
        for i in range(c.n_layer):
            p = f"transformer.h.{i}."
            for name, size in (("ln_1.bias", C), ("ln_2.bias", C), ("attn.c_attn.bias", 3 * C),
                               ("attn.c_proj.bias", C), ("mlp.c_fc.bias", 4 * C), ("mlp.c_proj.bias", C)):
                out[p + name] = torch.zeros(size, dtype=dt)
    return out


def hf_config(config: GPTConfig, eot_id: int | None, dtype: torch.dtype) -> dict:
    """config.json of a GPT2LMHeadModel with the same architecture."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": config.tie_embeddings,
        "use_cache": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "pad_token_id": None,
        "torch_dtype": str(dtype).removeprefix("torch."),  # read by transformers 4.x and 5.x alike
    }


# ---------------------------------------------------------------------------- tokenizer

def char_tokenizer_json(tok) -> str:
    """A `tokenizers` JSON equivalent to our CharTokenizer: one token per character, unseen
    characters become U+FFFD, special tokens matched first, decode concatenates."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from tokenizer import REPLACEMENT_CHAR

    vocab = {t: i for i, t in enumerate(tok.id_to_token)}
    hf = Tokenizer(models.WordLevel(vocab, unk_token=REPLACEMENT_CHAR))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every code point
    hf.decoder = decoders.Fuse()
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in tok.special_tokens])
    return hf.to_str(pretty=True)


def tokenizer_files(tokenizer_file: str | os.PathLike, model_config: GPTConfig) -> tuple[dict[str, str], dict]:
    """{filename: text} for the HF tokenizer files, and facts the model files need (eot id, specials)."""
    tok = load_tokenizer(tokenizer_file)
    if tok.vocab_size > model_config.vocab_size:
        raise UserError(f"{tokenizer_file} has {tok.vocab_size} tokens but the model's vocab_size is "
                        f"{model_config.vocab_size}; export the tokenizer the model was trained with")
    if hasattr(tok, "id_to_token"):  # CharTokenizer
        tokenizer_json, specials = char_tokenizer_json(tok), list(tok.special_tokens)
    else:
        tokenizer_json = portable_tokenizer_json(Path(tokenizer_file).read_text(encoding="utf-8"))
        specials = list(tok.special_tokens)
    ids = {s: tok.token_to_id(s) for s in specials}
    eot = tok.token_to_id(EOT_TOKEN)
    specials_map = {}
    if eot is not None:
        specials_map = {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN, "unk_token": EOT_TOKEN}
    extra = [s for s in specials if s != EOT_TOKEN]
    if extra:
        specials_map["additional_special_tokens"] = extra
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_config.block_size,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        **specials_map,
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "rstrip": False, "normalized": False,
                                          "single_word": False, "special": True}
                                 for s, i in sorted(ids.items(), key=lambda kv: kv[1]) if i is not None},
    }
    has_chat = all(tok.token_to_id(t) is not None for t in CHAT_SPECIAL_TOKENS)
    if has_chat:
        from tokenizer_bpe import CHAT_TEMPLATE

        tok_config["chat_template"] = CHAT_TEMPLATE
    files = {"tokenizer.json": tokenizer_json,
             "tokenizer_config.json": json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n",
             "special_tokens_map.json": json.dumps(specials_map, indent=2) + "\n"}
    # Chat models stop a reply at the next role token too, as generate_text does.
    stop_ids = [i for s, i in ids.items() if i is not None and (s == EOT_TOKEN or has_chat and s in CHAT_SPECIAL_TOKENS)]
    return files, {"eot_id": eot, "stop_ids": sorted(stop_ids)}


# ---------------------------------------------------------------------------- folders

def save_weights(state_dict: dict[str, torch.Tensor], folder: Path, safe_serialization: bool = True) -> str:
    """model.safetensors when the package is there (else pytorch_model.bin, with one line); returns the name."""
    if safe_serialization:
        try:
            from safetensors.torch import save_file
        except ImportError:
            print("safetensors is not installed: writing pytorch_model.bin instead (pip install safetensors)",
                  file=sys.stderr)
        else:
            save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
            return "model.safetensors"
    torch.save(state_dict, folder / "pytorch_model.bin")
    return "pytorch_model.bin"


def export_hf(model: TransformerLanguageModel, tokenizer_file: str | os.PathLike | None,
              out_dir: str | os.PathLike, safe_serialization: bool = True,
              dtype: torch.dtype | None = None) -> Path:
    """Write `model` (and its tokenizer file, ours or a char one) as a HuggingFace GPT-2 folder."""
    model = unwrap_model(model)
    config = model.config
    out_dir = Path(out_dir)
    check_replaceable(out_dir, None)
    files, facts = ({}, {"eot_id": None, "stop_ids": []}) if tokenizer_file is None \
        else tokenizer_files(tokenizer_file, config)
    state_dict = to_hf_state_dict(model, dtype)
    weight_dtype = state_dict["transformer.wte.weight"].dtype
    files["config.json"] = json.dumps(hf_config(config, facts["eot_id"], weight_dtype), indent=2) + "\n"
    gen = {"bos_token_id": facts["eot_id"], "eos_token_id": facts["stop_ids"] or facts["eot_id"],
           "pad_token_id": facts["eot_id"]}
    if isinstance(gen["eos_token_id"], list) and len(gen["eos_token_id"]) == 1:
        gen["eos_token_id"] = gen["eos_token_id"][0]
    files["generation_config.json"] = json.dumps(gen, indent=2) + "\n"
    write_folder_atomically(out_dir, files, lambda tmp: save_weights(state_dict, tmp, safe_serialization))
    return out_dir


# ---------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Export a checkpoint to a HuggingFace GPT-2 folder "
                                            "(GPT2LMHeadModel + AutoTokenizer, loadable offline).")
    p.add_argument("--checkpoint_dir", required=True, help="checkpoint folder (D/latest is followed)")
    p.add_argument("--out_dir", required=True, help="HF folder to write (built beside it, then renamed)")
    p.add_argument("--tokenizer_file", default=None, help="default: tokenizer.json in the checkpoint")
    p.add_argument("--safe_serialization", action=argparse.BooleanOptionalAction, default=True,
                   help="model.safetensors (default) or pytorch_model.bin")
    p.add_argument("--no_safetensors", dest="safe_serialization", action="store_false",
                   help="same as --no-safe_serialization")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="weights dtype (auto: as stored)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    ckpt = resolve_checkpoint_dir(args.checkpoint_dir)
    out_dir = Path(args.out_dir)
    check_replaceable(out_dir, ckpt)
    tok_file = Path(args.tokenizer_file) if args.tokenizer_file else ckpt / "tokenizer.json"
    if args.tokenizer_file and not tok_file.is_file():
        raise UserError(f"--tokenizer_file {tok_file} not found; pass the tokenizer the model was trained with")
    if not tok_file.is_file():
        print(f"warning: no tokenizer.json in {ckpt}: exporting the model only (pass --tokenizer_file)",
              file=sys.stderr)
        tok_file = None
    model = TransformerLanguageModel.from_pretrained(ckpt)
    dtype = None if args.dtype == "auto" else DTYPES[args.dtype]
    export_hf(model, tok_file, out_dir, safe_serialization=args.safe_serialization, dtype=dtype)
    c = model.config
    weights = "model.safetensors" if (out_dir / "model.safetensors").exists() else "pytorch_model.bin"
    tok_note = "no tokenizer"
    if tok_file is not None:
        chat = "chat_template" in json.loads((out_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        tok_note = "tokenizer" + (" + chat template" if chat else "")
    print(f"exported {ckpt} -> {out_dir} ({weights}, {model.num_parameters():,} parameters, vocab {c.vocab_size}, "
          f"{'tied' if c.tie_embeddings else 'untied'} head, {tok_note})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli_main(main)
