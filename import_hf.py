"""Import a HuggingFace GPT-2 folder (GPT2LMHeadModel / GPT2Model weights) into our checkpoint layout.

    python import_hf.py --hf_dir path/to/gpt2 --out_dir checkpoints/gpt2_init
    python train_colab_mmap.py ... --init_from checkpoints/gpt2_init

reads config.json and model.safetensors / pytorch_model.bin (or a sharded *.index.json), checks that
the architecture really is GPT-2 (anything our model would compute differently is refused with
one line naming the file and the value), and writes config.json + pytorch_model.bin (+ tokenizer.json)
as `TransformerLanguageModel.save_pretrained` does. In Python, `load_model(path)` opens either kind
of folder (ours or HuggingFace GPT-2) without converting it on disk. Pickled weights are read with
weights_only=True: a .bin that would run code is refused. Needs no `transformers`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from common import ArgParser, UserError, cli_main, first_line, read_json, resolve_checkpoint_dir
from hf_common import check_replaceable, is_conv1d_key, write_folder_atomically
from model import CONFIG_NAME, GPTConfig, TransformerLanguageModel, is_hf_config, read_config_json

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # all tanh-approximate GELU
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of old transformers


# ---------------------------------------------------------------------------- config

def gpt_config_from_hf(cfg: dict, source: str, has_lm_head: bool) -> GPTConfig:
    """GPTConfig for an HF GPT-2 config dict; UserError (naming `source` and the value) when the
    model would not compute exactly what ours does."""
    def refuse(key: str, why: str) -> None:
        raise UserError(f"{source}: {key}={cfg.get(key)!r} {why}; this is not a plain GPT-2 model and cannot be imported")

    if cfg.get("model_type", "gpt2") != "gpt2":
        refuse("model_type", "is not 'gpt2'")
    n_embd = cfg.get("n_embd", 768)
    if cfg.get("activation_function", "gelu_new") not in TANH_GELUS:
        refuse("activation_function", f"is not GPT-2's tanh GELU ({', '.join(TANH_GELUS)})")
    if cfg.get("n_inner") not in (None, 4 * n_embd):
        refuse("n_inner", f"is not 4 * n_embd = {4 * n_embd}")
    if cfg.get("scale_attn_by_inverse_layer_idx", False):
        refuse("scale_attn_by_inverse_layer_idx", "scales attention by 1/layer")
    if not cfg.get("scale_attn_weights", True):
        refuse("scale_attn_weights", "drops the 1/sqrt(head_dim) attention scale")
    if cfg.get("add_cross_attention", False):
        refuse("add_cross_attention", "adds cross-attention layers")
    if abs(float(cfg.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        refuse("layer_norm_epsilon", "differs from 1e-5")
    # reorder_and_upcast_attn only changes the order of fp32 upcasts: same results, so it is accepted.
    # Absent means true, as in transformers: its 4.x save_pretrained writes only non-default keys, so a
    # tied model's config.json has no tie_word_embeddings (a stray lm_head.weight: see from_hf_state_dict).
    tie = bool(cfg.get("tie_word_embeddings", True))
    if not tie and not has_lm_head:
        raise UserError(f"{source}: tie_word_embeddings=false but the weights have no lm_head.weight; "
                        f"the folder is incomplete (set tie_word_embeddings to true to use the embeddings as the head)")
    fields = dict(vocab_size=cfg.get("vocab_size", 50257), block_size=cfg.get("n_positions", cfg.get("n_ctx", 1024)),
                  n_layer=cfg.get("n_layer", 12), n_head=cfg.get("n_head", 12), n_embd=n_embd,
                  dropout=float(cfg.get("resid_pdrop", 0.1)), bias=True, tie_embeddings=bool(tie))
    try:
        return GPTConfig(**fields)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None


# ---------------------------------------------------------------------------- weights

def _load_one(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path} needs the safetensors package: pip install safetensors") from None
        try:
            return load_file(str(path))
        except Exception as e:
            raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e)[:200]} (truncated or corrupt?)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot load {path} with weights_only=True: {type(e).__name__}: "
                        f"{first_line(e)} (corrupt, or a pickle that is not a plain state_dict)") from None


def load_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of an HF folder: model.safetensors, pytorch_model.bin, or a sharded index."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return _load_one(folder / name)
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / name
        if index.is_file():
            weight_map = read_json(index, "weights index").get("weight_map")
            if not isinstance(weight_map, dict):
                raise UserError(f"{index} has no \"weight_map\" object; the download is incomplete")
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                shard_path = folder / shard
                if Path(shard).name != shard or not shard_path.is_file():
                    raise UserError(f"{index} names shard {shard!r}, which is not a file in {folder}")
                sd.update(_load_one(shard_path))
            return sd
    raise UserError(f"no weights in {folder}: expected model.safetensors, pytorch_model.bin or a sharded *.index.json")


def from_hf_state_dict(hf_sd: dict[str, torch.Tensor], config: GPTConfig, source: str) -> dict[str, torch.Tensor]:
    """HF GPT-2 names/layouts to ours: add the `transformer.` prefix that GPT2Model files lack,
    drop mask buffers and other heads, transpose Conv1D weights."""
    sd: dict[str, torch.Tensor] = {}
    ignored = []
    tied_head = None
    for hf_key, t in hf_sd.items():
        if hf_key.endswith(BUFFER_SUFFIXES):
            continue
        key = hf_key if hf_key == "lm_head.weight" or hf_key.startswith("transformer.") else "transformer." + hf_key
        if not (key == "lm_head.weight" or key.startswith(("transformer.wte.", "transformer.wpe.",
                                                           "transformer.ln_f.", "transformer.h."))):
            ignored.append(hf_key)
            continue
        if config.tie_embeddings and key == "lm_head.weight":
            tied_head = t  # the head is wte, as config.json says
            continue
        sd[key] = t.t().contiguous() if is_conv1d_key(key) and t.dim() == 2 else t
    if ignored:
        print(f"note: {source}: ignoring {len(ignored)} tensors that are not part of the language model "
              f"(e.g. {ignored[0]})", file=sys.stderr)
    wte = sd.get("transformer.wte.weight")
    if wte is None:
        raise UserError(f"{source}: no transformer.wte.weight (or wte.weight); not GPT-2 weights")
    if wte.dim() != 2 or wte.size(0) != config.vocab_size:
        raise UserError(f"{source}: wte has shape {tuple(wte.shape)} but config.json says vocab_size="
                        f"{config.vocab_size}; the config and the weights do not belong together")
    if tied_head is not None and not torch.equal(tied_head, wte):
        # A contradictory folder that transformers itself reads three ways: 4.46-4.57 use wte as we do,
        # 4.40 ties both to lm_head.weight's values, 5.x keeps lm_head.weight untied (with a warning).
        print(f"note: {source}: tie_word_embeddings is true (or absent) but lm_head.weight differs from wte.weight; "
              f"using wte as the head, as config.json says (transformers versions disagree on such a folder; "
              f"set tie_word_embeddings to false to keep lm_head.weight)", file=sys.stderr)
    return sd


def load_model(path: str | os.PathLike) -> TransformerLanguageModel:
    """Our model from either kind of folder: our checkpoint (D/latest followed, as in
    TransformerLanguageModel.from_pretrained) or a HuggingFace GPT-2 folder (converted in memory)."""
    folder = resolve_checkpoint_dir(path)
    if is_hf_config(read_config_json(folder)):
        return _load_hf_gpt2(folder)
    return TransformerLanguageModel.from_pretrained(folder)


def _load_hf_gpt2(folder: str | os.PathLike) -> TransformerLanguageModel:
    """Our model with the weights of a HuggingFace GPT-2 folder."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    cfg = read_json(config_path, "HF config")
    if not is_hf_config(cfg):
        raise UserError(f"{config_path} is not a HuggingFace config (no model_type or n_positions); our own "
                        f"checkpoints need no import: pass the folder itself to --init_from or --checkpoint_dir")
    hf_sd = load_hf_weights(folder)
    config = gpt_config_from_hf(cfg, str(config_path), has_lm_head="lm_head.weight" in hf_sd)
    sd = from_hf_state_dict(hf_sd, config, str(folder))
    model = TransformerLanguageModel(config)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"{folder}: weights do not match config.json ({detail})") from None
    return model


# ---------------------------------------------------------------------------- tokenizer

def hf_tokenizer_json(folder: Path) -> str | None:
    """tokenizer.json of the folder, or one built from GPT-2's vocab.json + merges.txt; None if neither."""
    if (folder / "tokenizer.json").is_file():
        return (folder / "tokenizer.json").read_text(encoding="utf-8")
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        return None
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from tokenizer_bpe import portable_tokenizer_json

    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    vocab_ids = json.loads(vocab.read_text(encoding="utf-8"))
    if "<|endoftext|>" in vocab_ids:
        tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return portable_tokenizer_json(tok.to_str(pretty=True))


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write our checkpoint layout (config.json, pytorch_model.bin, tokenizer.json) for an HF GPT-2 folder."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not hf_dir.is_dir():
        raise UserError(f"--hf_dir {hf_dir} is not a folder; pass a folder holding config.json and the weights")
    check_replaceable(out_dir, hf_dir)
    model = _load_hf_gpt2(hf_dir)
    tok_json = hf_tokenizer_json(hf_dir)
    files = {}
    if tok_json is not None:
        from tokenizers import Tokenizer

        n_tokens = Tokenizer.from_str(tok_json).get_vocab_size(with_added_tokens=True)
        if n_tokens > model.config.vocab_size:
            raise UserError(f"{hf_dir}: the tokenizer has {n_tokens} tokens but config.json vocab_size is "
                            f"{model.config.vocab_size}; the tokenizer does not belong to this model")
        files["tokenizer.json"] = tok_json
    else:
        print(f"warning: {hf_dir} has no tokenizer.json (or vocab.json + merges.txt): "
              f"the checkpoint has no tokenizer", file=sys.stderr)
    return write_folder_atomically(out_dir, files, model.write_weights)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Import a HuggingFace GPT-2 folder into our checkpoint layout "
                                            "(for train_colab_mmap.py --init_from and generate.py --checkpoint_dir).")
    p.add_argument("--hf_dir", required=True, help="folder with config.json and model.safetensors / pytorch_model.bin")
    p.add_argument("--out_dir", required=True, help="checkpoint folder to write (built beside it, then renamed)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    out = import_hf(args.hf_dir, args.out_dir)
    c = GPTConfig.from_dict(json.loads((out / "config.json").read_text()))
    print(f"imported {args.hf_dir} -> {out} (n_layer {c.n_layer}, n_embd {c.n_embd}, vocab {c.vocab_size}, "
          f"block {c.block_size}, {'tied' if c.tie_embeddings else 'untied'} head"
          f"{', tokenizer.json' if (out / 'tokenizer.json').exists() else ', no tokenizer'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli_main(main)
