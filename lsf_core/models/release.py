"""``lsf convert``: released LSF-Animation Lightning checkpoints -> one ``paper`` .safetensors model file.

Stage 1 (the VQ-VAE prior, ``VQVAE``) holds ``motion_encoder.*``, ``motion_decoder.*``,
``quantize.embedding.weight``; stage 2 (``VqvaePredict``) holds ``feature_extractor.audiomodel.*``
(HuBERT, transformers key names; the release's vendored copy writes the positional conv's weight norm
as ``weight_g``/``weight_v``, today's transformers as ``parametrizations.weight.original0/1``: both are read),
``audio_model.*`` (emotion2vec, fairseq key names),
``identity_extractor.*``, ``feature_predictor.*`` and a frozen copy of the prior under ``motion_prior.*``.
How each release key maps to ours is the rule table ``RULES`` below (and docs/paper_model.md); the keys
deliberately dropped are ``IGNORED``. Any other key, or any of our tensors left unfilled, is an error that
names the keys. Checkpoints are read with ``torch.load(weights_only=True)``: no pickled code runs;
OmegaConf hyper-parameter objects become inert placeholders, builtin containers and numpy scalars (numpy
1.x or 2.x names) load as data, any other global is refused.
The min-max scalers: the release fits sklearn MinMaxScalers on fixed ranges (expression [-3, 3], jaw
[-0.1, 0.5]), which are our defaults; ``--scaler EXP.pkl JAW.pkl`` reads fitted ones (the release's
``datasets/scaler_exp.pkl``, ``scaler_jaw.pkl``) with the restricted unpickler of lsf_core/safe_pickle.py.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from lsf_core.config import from_dict, load_config, to_dict
from lsf_core.models.base import state_mismatch
from lsf_core.models.lsf_paper import LSFPaperConfig, LSFPaperModel
from lsf_core.models.registry import save_model
from lsf_core.safe_pickle import UnsafePickleError, load, load_error_reason, torch_load_inert


class ConvertError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the keys."""


_STACK_LEAVES = {(0, "norm"): "attn_norm", (0, "fn.to_qkv"): "qkv", (0, "fn.to_out"): "attn_out",
                 (1, "norm"): "ffn_norm", (1, "fn.l1"): "ffn_in", (1, "fn.l2"): "ffn_out"}
_STACK_RE = re.compile(r"net\.(\d+)\.fn\.(norm|fn\.to_qkv|fn\.to_out|fn\.l1|fn\.l2)\.(weight|bias)")
_FUSION_LEAVES = {"norm_mm": "norm_tokens", "norm_a": "norm_audio", "norm_v": "norm_emotion", "norm_mlp": "norm_mlp",
                  "attn.q": "attn.q", "attn.kv": "attn.kv", "attn.proj": "attn.proj",
                  "mlp.fc1": "mlp_in", "mlp.fc2": "mlp_out"}


def _stack(rest: str, single: bool) -> str | None:
    """The release's ``Transformer.net.{2i | 2i+1}.fn...`` -> our ``layers.{i}.<leaf>`` (or ``<leaf>``)."""
    m = _STACK_RE.fullmatch(rest)
    if not m:
        return None
    layer, sub = divmod(int(m.group(1)), 2)
    leaf = f"{_STACK_LEAVES[(sub, m.group(2))]}.{m.group(3)}"
    if single:
        return leaf if layer == 0 else None
    return f"layers.{layer}.{leaf}"


# torch's old weight norm (``nn.utils.weight_norm``, the release's vendored transformers 4.10 HuBERT) -> the
# parametrization names of today's transformers (``nn.utils.parametrizations.weight_norm``)
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def hubert_key(key: str) -> str:
    """A HuBERT state-dict key in either weight-norm spelling -> today's transformers name
    (``encoder.pos_conv_embed.conv.weight_g`` -> ``...conv.parametrizations.weight.original0``, ``weight_v`` ->
    ``original1``); other keys unchanged."""
    head, _, leaf = key.rpartition(".")
    return f"{head}.{_WEIGHT_NORM[leaf]}" if head and leaf in _WEIGHT_NORM else key


def _fusion(rest: str) -> str | None:
    part, _, kind = rest.rpartition(".")
    return f"{_FUSION_LEAVES[part]}.{kind}" if part in _FUSION_LEAVES and kind in ("weight", "bias") else None


_P = r"(?P<p>weight|bias)"
# (release key regex, our key template); {stack}/{layer}/{fusion} groups are rewritten by the functions above.
RULES: list[tuple[str, str]] = [
    # stage 1: the motion prior (stage 2 has the same keys under "motion_prior.")
    (rf"motion_encoder\.feature_mapping\.0\.{_P}", "prior.encoder.input.{p}"),
    (rf"motion_encoder\.squasher\.0\.0\.{_P}", "prior.encoder.squash.conv.{p}"),
    (rf"motion_encoder\.encoder_linear_embedding\.net\.{_P}", "prior.encoder.embed.{p}"),
    (r"motion_encoder\.encoder_transformer\.(?P<stack>.+)", "prior.encoder.transformer.{stack}"),
    (rf"motion_decoder\.expander\.0\.0\.{_P}", "prior.decoder.squash.conv.{p}"),
    (rf"motion_decoder\.decoder_linear_embedding\.net\.{_P}", "prior.decoder.embed.{p}"),
    (r"motion_decoder\.decoder_transformer\.(?P<stack>.+)", "prior.decoder.transformer.{stack}"),
    (r"motion_decoder\.feature_mapping_reverse\.weight", "prior.decoder.output.weight"),
    (r"quantize\.embedding\.weight", "prior.quantizer.codebook.weight"),
    # stage 2: encoders, identity, HIFB predictor
    (r"feature_extractor\.audiomodel\.(?P<hubert>.+)", "content_encoder.hubert.{hubert}"),
    (r"audio_model\.(?P<rest>.+)", "emotion_encoder.net.{rest}"),
    (rf"identity_extractor\.(?P<i>\d+)\.{_P}", "identity.mlp.{i}.{p}"),
    (rf"feature_predictor\.audio_feat\.{_P}", "predictor.audio_proj.{p}"),
    (rf"feature_predictor\.emo_feat\.{_P}", "predictor.emotion_proj.{p}"),
    (r"feature_predictor\.style_proj\.weight", "predictor.style_proj.weight"),
    (rf"feature_predictor\.squash_a\.0\.{_P}", "predictor.squash_audio.conv.{p}"),
    (rf"feature_predictor\.squash_e\.0\.{_P}", "predictor.squash_emotion.conv.{p}"),
    (rf"feature_predictor\.lin_embed\.net\.{_P}", "predictor.embed.{p}"),
    (r"feature_predictor\.fusion_tokens", "predictor.fusion_tokens"),
    (r"feature_predictor\.audio_blocks\.(?P<i>\d+)\.(?P<layer>.+)", "predictor.audio_layers.{i}.{layer}"),
    (r"feature_predictor\.emo_blocks\.(?P<i>\d+)\.(?P<layer>.+)", "predictor.emotion_layers.{i}.{layer}"),
    (r"feature_predictor\.fusion_blocks\.(?P<i>\d+)\.(?P<fusion>.+)", "predictor.fusion_blocks.{i}.{fusion}"),
]
_REWRITE: dict[str, Callable[[str], str | None]] = {
    "stack": lambda s: _stack(s, single=False), "layer": lambda s: _stack(s, single=True), "fusion": _fusion,
    "hubert": hubert_key}

# Release keys that are dropped on purpose, with why.
IGNORED: list[tuple[str, str]] = [
    (r"(motion_prior\.)?_losses\..+", "running loss sums of the Lightning module (not weights)"),
    (r"(motion_prior\.)?metrics\..+", "metric accumulators (not weights)"),
    (r"feature_predictor\.pos_enc\.pe|(motion_prior\.)?motion_(en|de)coder\.(en|de)coder_pos_embedding\.pe",
     "sinusoidal position tables (recomputed)"),
    (r"feature_predictor\.out_norm\.(weight|bias)", "a LayerNorm the release never applies in forward"),
    (r"audio_model\._ema", "the EMA teacher fairseq's data2vec adds to its state dict (pre-training only)"),
]
# emotion2vec's own dropped keys (its pre-training decoder, ...) are FAIRSEQ_IGNORED in lsf_core/models/emotion2vec.py.



def _placeholder(name: str) -> bool:
    """OmegaConf objects (DictConfig, ListConfig, their metadata and nodes) inside Lightning's hyper_parameters:
    rebuilt as inert placeholders, never imported. Plain data (builtin types, numpy scalars) loads as data
    (lsf_core/safe_pickle.py); any other global is refused."""
    return name.startswith("omegaconf.")


def map_key(key: str) -> str | None:
    """Our state-dict key for a release key, or None if no rule matches."""
    for pattern, template in RULES:
        m = re.fullmatch(pattern, key)
        if not m:
            continue
        groups = m.groupdict()
        for name, fn in _REWRITE.items():
            if name in groups:
                groups[name] = fn(groups[name])
                if groups[name] is None:
                    return None
        return template.format(**groups)
    return None


def ignored(key: str) -> str | None:
    return next((why for pattern, why in IGNORED if re.fullmatch(pattern, key)), None)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint, read without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch_load_inert(path, _placeholder)
    except Exception as err:  # UnpicklingError (refused global), RuntimeError/EOFError (not a checkpoint)
        raise ConvertError(f"{path}: refused or unreadable checkpoint (nothing in it was executed): "
                           f"{load_error_reason(err)}") from err
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConvertError(f"{path}: not a Lightning checkpoint (no 'state_dict' mapping)")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) or not ignored(k)}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConvertError(f"{path}: state_dict entries that are not tensors: {bad[:5]}")
    return state


def map_state(stage1: dict[str, torch.Tensor], stage2: dict[str, torch.Tensor], names: tuple[str, str] = ("stage 1",
              "stage 2")) -> dict[str, torch.Tensor]:
    """Release tensors -> our keys. Unknown keys, or a stage-2 prior copy that differs from stage 1, raise."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for where, state in zip(names, (stage1, stage2)):
        for key, tensor in state.items():
            if ignored(key):
                continue
            is_copy = where == names[1] and key.startswith("motion_prior.")
            ours = map_key(key.removeprefix("motion_prior.") if is_copy else key)
            if ours is None or (where == names[0] and not ours.startswith("prior.")):
                unknown.append(f"{where}: {key}")
            elif is_copy:
                if ours in out and not torch.equal(out[ours], tensor):
                    raise ConvertError(f"{names[1]}'s frozen prior copy {key} differs from {names[0]}: "
                                       "the two checkpoints are not from the same training run")
            elif ours in out:  # e.g. a HuBERT weight under both weight-norm spellings
                raise ConvertError(f"{where}: {key} fills {ours}, which another key of the checkpoints already "
                                   "filled")
            else:
                out[ours] = tensor.float()
    if unknown:
        raise ConvertError(f"{len(unknown)} release key(s) with no mapping: {unknown[:10]}")
    return out


def infer_config(base: LSFPaperConfig, state: dict[str, torch.Tensor]) -> LSFPaperConfig:
    """The base config with the sizes the checkpoint fixes (identity classes, layer counts, codebook,
    emotion2vec depths, extra tokens and ALiBi scales)."""
    cfg = load_config(LSFPaperConfig, to_dict(base))

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    if "identity.mlp.4.weight" in state:
        cfg.identity.classes = state["identity.mlp.4.weight"].shape[0]
    if "predictor.fusion_tokens" in state:
        cfg.predictor.layers = count("predictor.audio_layers.")
        cfg.predictor.fusion_tokens = state["predictor.fusion_tokens"].shape[1]
    emotion = {k.removeprefix("emotion_encoder.net."): v for k, v in state.items()
               if k.startswith("emotion_encoder.net.")}
    if emotion and cfg.emotion.kind == "emotion2vec":
        from lsf_core.models.emotion2vec import Emotion2VecConfig

        e2v = from_dict(Emotion2VecConfig, cfg.emotion.emotion2vec, where="emotion.emotion2vec")
        cfg.emotion.emotion2vec.update(e2v.from_state(emotion))
    if "prior.quantizer.codebook.weight" in state:
        cfg.prior.codebook_size, cfg.prior.code_dim = state["prior.quantizer.codebook.weight"].shape
        cfg.prior.encoder.layers = count("prior.encoder.transformer.layers.")
        cfg.prior.decoder.layers = count("prior.decoder.transformer.layers.")
    return cfg


def read_scaler(path: str | Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) per channel of a pickled sklearn MinMaxScaler fitted to the range (0, 1)."""
    try:
        state = load(path)
    except (UnsafePickleError, OSError) as err:
        raise ConvertError(f"{path}: cannot read the scaler: {err}") from err
    if not isinstance(state, dict) or not str(state.get("class", "")).endswith("MinMaxScaler"):
        raise ConvertError(f"{path}: not a pickled sklearn MinMaxScaler")
    lo, hi = (torch.as_tensor(state.get(k), dtype=torch.float32).reshape(-1) for k in ("data_min_", "data_max_"))
    if lo.numel() != channels or hi.numel() != channels or tuple(state.get("feature_range", (0, 1))) != (0, 1):
        raise ConvertError(f"{path}: expected a MinMaxScaler to (0, 1) over {channels} channels, got "
                           f"{lo.numel()} channels, feature_range {state.get('feature_range')}")
    return lo, hi


def convert(stage1: str | Path, stage2: str | Path, output: str | Path, base: LSFPaperConfig | None = None,
            scalers: tuple[str | Path, str | Path] | None = None) -> LSFPaperModel:
    s1, s2 = read_checkpoint(stage1), read_checkpoint(stage2)
    state = map_state(s1, s2, (str(stage1), str(stage2)))
    cfg = infer_config(base or LSFPaperConfig(), state)
    model = LSFPaperModel(cfg)
    if scalers:
        (elo, ehi), (jlo, jhi) = read_scaler(scalers[0], 50), read_scaler(scalers[1], 3)
        model.scale_lo.copy_(torch.cat([elo, jlo]))
        model.scale_hi.copy_(torch.cat([ehi, jhi]))
    emotion = {k.removeprefix("emotion_encoder.net."): state.pop(k)
               for k in list(state) if k.startswith("emotion_encoder.net.")}
    if cfg.emotion.kind == "emotion2vec":
        model.emotion_encoder.net.load_fairseq_state(emotion)  # strict: names unknown/missing fairseq keys
    else:
        state.update({f"emotion_encoder.net.{k}": v for k, v in emotion.items()})
    expected = {k: v for k, v in model.state_dict().items()
                if not k.startswith("emotion_encoder.net.") or cfg.emotion.kind != "emotion2vec"}
    expected.pop("scale_lo"), expected.pop("scale_hi")
    mismatch = state_mismatch(state, expected, limit=10)
    if mismatch:
        raise ConvertError(f"checkpoints do not fill a paper model built from the config (shapes: release vs "
                           f"config): {mismatch}; pass --config with the release's encoder sizes if they differ "
                           "from the defaults")
    model.load_state_dict(state, strict=False)
    save_model(model.eval(), output, extra={"converted_from": f"{Path(stage1).name} + {Path(stage2).name}"})
    return model
