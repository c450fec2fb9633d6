"""The authors' release (Dogter521/LSF-Animation @ a7637c0) as test material, written from reading its code:

- its state-dict key names and shapes (``VQVAE``, ``VqvaePredict``, ``TransformerPredictor``, the HuBERT copy
  vendored from transformers 4.10 with torch's old weight norm, fairseq's emotion2vec), with random values;
- its checkpoint files as Lightning 2.1 writes them: ``state_dict`` (``_losses.*`` buffers included),
  ``hyper_parameters`` holding real omegaconf containers (the hydra config nodes its modules are built from)
  and numpy scalars, ``callbacks``, ``loops``, ``optimizer_states``, ``lr_schedulers``; numpy scalars under
  numpy 1.x or 2.x module names;
- its inference (``generation.py`` -> ``VqvaePredict.forward``) as one plain computation on those tensors:
  the reference that our converted model must reproduce. It shares no code with lsf_core: HuBERT is
  transformers' ``HubertModel`` fed the release's key names, emotion2vec is FunASR's module, the rest is
  written out below in torch functions, step for step as the release's modules compute.

Not a test module: test_convert.py and test_paper_parity.py import it.
"""
from __future__ import annotations

import math
import pickle
import types
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

# --- key names and shapes --------------------------------------------------------------------------------


def _transformer(prefix: str, width: int, ffn: int, layers: int) -> dict[str, tuple]:
    """transformer_module.py: Transformer.net = [Residual(Norm(Attention)), Residual(Norm(MLP))] * L."""
    w, f = width, ffn
    keys = {}
    for i in range(layers):
        a, m = f"{prefix}net.{2 * i}.fn.", f"{prefix}net.{2 * i + 1}.fn."
        keys.update({a + "norm.weight": (w,), a + "norm.bias": (w,), a + "fn.to_qkv.weight": (3 * w, w),
                     a + "fn.to_out.weight": (w, w), a + "fn.to_out.bias": (w,),
                     m + "norm.weight": (w,), m + "norm.bias": (w,), m + "fn.l1.weight": (f, w), m + "fn.l1.bias": (f,),
                     m + "fn.l2.weight": (w, f), m + "fn.l2.bias": (w,)})
    return keys


def _losses(prefix: str, names: list[str]) -> dict[str, tuple]:
    """compute_vqvae_*.py ComputeLosses: one scalar buffer per loss and ``count``, per split."""
    return {f"{prefix}_losses.losses_{split}.{n}": () for split in ("train", "test", "val") for n in names + ["count"]}


def release_prior_shapes(p) -> dict[str, tuple]:
    """framework/model/model_vqvae_prior.py VQVAE (motion_encoder, motion_decoder, quantize); ``p`` gives sizes."""
    we, wd = p.encoder.width, p.decoder.width
    keys = {"motion_encoder.feature_mapping.0.weight": (we, p.motion_dim),
            "motion_encoder.feature_mapping.0.bias": (we,),
            "motion_encoder.squasher.0.0.weight": (we, we, 5), "motion_encoder.squasher.0.0.bias": (we,),
            "motion_encoder.encoder_pos_embedding.pe": (5000, 1, we),
            "motion_encoder.encoder_linear_embedding.net.weight": (we, we),
            "motion_encoder.encoder_linear_embedding.net.bias": (we,),
            "motion_decoder.expander.0.0.weight": (wd, wd, 5), "motion_decoder.expander.0.0.bias": (wd,),
            "motion_decoder.decoder_pos_embedding.pe": (5000, 1, wd),
            "motion_decoder.decoder_linear_embedding.net.weight": (wd, wd),
            "motion_decoder.decoder_linear_embedding.net.bias": (wd,),
            "motion_decoder.feature_mapping_reverse.weight": (p.motion_dim, wd),
            "quantize.embedding.weight": (p.codebook_size, p.code_dim)}
    keys.update(_transformer("motion_encoder.encoder_transformer.", we, p.encoder.ffn, p.encoder.layers))
    keys.update(_transformer("motion_decoder.decoder_transformer.", wd, p.decoder.ffn, p.decoder.layers))
    keys.update(_losses("", ["quant", "recons_exp", "recons_jaw", "total"]))
    return keys


def release_hubert_shapes(hubert: dict) -> dict[str, tuple]:
    """deps/hubert/modeling_hubert.py (transformers 4.10 vendored by the release) ``HubertModel`` with
    ``feat_extract_norm="group"``: its keys, the positional conv under torch's old weight norm
    (``nn.utils.weight_norm(conv, dim=2)``: ``weight_g`` (1, 1, K), ``weight_v``)."""
    from transformers import HubertConfig

    c = HubertConfig(**hubert)  # the numbers only (hidden size, conv stack, ...)
    h, inner = c.hidden_size, c.intermediate_size
    keys = {"masked_spec_embed": (h,)}
    prev = 1
    for i, (dim, kernel) in enumerate(zip(c.conv_dim, c.conv_kernel)):
        keys[f"feature_extractor.conv_layers.{i}.conv.weight"] = (dim, prev, kernel)
        prev = dim
    keys.update({"feature_extractor.conv_layers.0.layer_norm.weight": (c.conv_dim[0],),
                 "feature_extractor.conv_layers.0.layer_norm.bias": (c.conv_dim[0],),
                 "feature_projection.layer_norm.weight": (prev,), "feature_projection.layer_norm.bias": (prev,),
                 "feature_projection.projection.weight": (h, prev), "feature_projection.projection.bias": (h,),
                 "encoder.pos_conv_embed.conv.weight_g": (1, 1, c.num_conv_pos_embeddings),
                 "encoder.pos_conv_embed.conv.weight_v": (h, h // c.num_conv_pos_embedding_groups,
                                                          c.num_conv_pos_embeddings),
                 "encoder.pos_conv_embed.conv.bias": (h,),
                 "encoder.layer_norm.weight": (h,), "encoder.layer_norm.bias": (h,)})
    for i in range(c.num_hidden_layers):
        p = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            keys.update({f"{p}attention.{proj}.weight": (h, h), f"{p}attention.{proj}.bias": (h,)})
        keys.update({p + "layer_norm.weight": (h,), p + "layer_norm.bias": (h,),
                     p + "feed_forward.intermediate_dense.weight": (inner, h),
                     p + "feed_forward.intermediate_dense.bias": (inner,),
                     p + "feed_forward.output_dense.weight": (h, inner), p + "feed_forward.output_dense.bias": (h,),
                     p + "final_layer_norm.weight": (h,), p + "final_layer_norm.bias": (h,)})
    return keys


def release_pred_shapes(cfg, emotion2vec) -> dict[str, tuple]:
    """framework/model/model_vqvae_pred.py VqvaePredict (+ feature_predictor/transformer_pred.py); ``cfg`` (an
    LSFPaperConfig) gives the sizes. Its ``audio_model`` is fairseq's emotion2vec, whose key names FunASR's
    implementation (``emotion2vec``, passed in) shares, pre-training decoder included."""
    keys = {f"feature_extractor.audiomodel.{k}": s for k, s in release_hubert_shapes(cfg.content.hubert).items()}
    keys.update({f"audio_model.{k}": tuple(v.shape) for k, v in emotion2vec.state_dict().items()})
    i = cfg.identity
    dims = [i.shape_dim, *i.hidden, i.classes]
    for n, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        keys.update({f"identity_extractor.{2 * n}.weight": (b, a), f"identity_extractor.{2 * n}.bias": (b,)})
    p = cfg.predictor
    w, f, inner, fp = p.width, p.ffn, int(p.width * p.fusion_attn_ratio), "feature_predictor."
    keys.update({fp + "audio_feat.weight": (w, p.in_dim), fp + "audio_feat.bias": (w,),
                 fp + "emo_feat.weight": (w, p.in_dim), fp + "emo_feat.bias": (w,),
                 fp + "style_proj.weight": (w, i.classes),
                 fp + "squash_a.0.weight": (w, w, 5), fp + "squash_a.0.bias": (w,),
                 fp + "squash_e.0.weight": (w, w, 5), fp + "squash_e.0.bias": (w,),
                 fp + "lin_embed.net.weight": (w, w), fp + "lin_embed.net.bias": (w,),
                 fp + "pos_enc.pe": (5000, 1, w), fp + "fusion_tokens": (1, p.fusion_tokens, w),
                 fp + "out_norm.weight": (w,), fp + "out_norm.bias": (w,)})
    for n in range(p.layers):
        keys.update(_transformer(f"{fp}audio_blocks.{n}.", w, f, 1))
        keys.update(_transformer(f"{fp}emo_blocks.{n}.", w, f, 1))
        b = f"{fp}fusion_blocks.{n}."
        for norm in ("norm_mm", "norm_a", "norm_v", "norm_mlp"):
            keys.update({f"{b}{norm}.weight": (w,), f"{b}{norm}.bias": (w,)})
        keys.update({b + "attn.q.weight": (inner, w), b + "attn.kv.weight": (2 * inner, 2 * w),
                     b + "attn.proj.weight": (w, inner), b + "attn.proj.bias": (w,),
                     b + "mlp.fc1.weight": (f, w), b + "mlp.fc1.bias": (f,),
                     b + "mlp.fc2.weight": (w, f), b + "mlp.fc2.bias": (w,)})
    keys.update({f"motion_prior.{k}": s for k, s in release_prior_shapes(cfg.prior).items()})
    keys.update(_losses("", ["latent_manifold", "recons_exp", "recons_jaw", "total"]))
    return keys


def random_state(shapes: dict[str, tuple], gen: torch.Generator, emotion2vec=None) -> OrderedDict:
    """Random tensors for ``shapes``; ``audio_model.*`` take ``emotion2vec``'s values (FunASR's module with its
    own non-trivial random weights), ``*.pe`` the release's sinusoid tables, ``_losses.*`` loss sums."""
    out = OrderedDict()
    e2v = emotion2vec.state_dict() if emotion2vec is not None else {}
    for k, s in shapes.items():
        if k.startswith("audio_model.") and k[len("audio_model."):] in e2v:
            out[k] = e2v[k[len("audio_model."):]].clone()
        elif k.endswith(".pe"):
            out[k] = _sinusoids(s[0], s[2])[:, None]
        else:
            out[k] = torch.randn(s, generator=gen) * (3.0 if "_losses." in k else 0.2)
    return out


# --- Lightning checkpoint files --------------------------------------------------------------------------


def _hydra_config(stage: str):
    """The hydra config the release instantiates its module from (configs/model/*.yaml, composed, the
    interpolations resolved as hydra's ``instantiate`` does), as real omegaconf containers."""
    from omegaconf import OmegaConf

    transformer = {"latent_dim": 256, "num_layers": 6, "num_heads": 8, "quant_factor": 0, "intermediate_size": 384}
    prior = {"modelname": "VQVAE Motion Autoencoder", "_target_": "framework.model.model_vqvae_prior.VQVAE",
             "vqvae_prior": True, "n_embed": 256, "zquant_dim": 128, "working_dir": "${path.working_dir}",
             "motion_encoder": {"name": "transformer_encoder", **transformer,
                                "_target_": "framework.model.motion_encoder.transformer_encoder.TransformerEncoder"},
             "motion_decoder": {"name": "transformer_decoder", **transformer,
                                "_target_": "framework.model.motion_decoder.transformer_decoder.TransformerDecoder"},
             "losses": {"_target_": "framework.model.losses.compute_vqvae_prior.ComputeLosses", "lmd_quant": 1.5,
                        "quant": "${.lmd_quant}", "lmd_exp_recons": 0.5, "recons_exp": "${.lmd_exp_recons}",
                        "recons_exp_func": "${model.func_recons}", "lmd_jaw_recons": 0.1,
                        "recons_jaw": "${.lmd_jaw_recons}", "recons_jaw_func": "${model.func_recons}"},
             "optim": {"_target_": "torch.optim.AdamW", "lr": 1e-4},
             "func_recons": {"_target_": "torch.nn.L1Loss", "reduction": "mean"}}
    if stage == "prior":
        model = prior
    else:
        model = {"modelname": "ProbTalk3D", "_target_": "framework.model.model_vqvae_pred.VqvaePredict",
                 "name": "ProbTalk3D", "vqvae_pred": True, "folder_prior": "outputs/MEAD/vqvae_prior/prior",
                 "version_prior": 0, "working_dir": "${path.working_dir}", "seed": "${seed}",
                 "ckpt_path_prior": "outputs/MEAD/vqvae_prior/prior/lightning_logs/version_0/checkpoints/last.ckpt",
                 "video_framerate": "${data.video_framerate}",
                 "feature_extractor": {"name": "HuBERT", "_target_": "framework.model.feature_extractor.hubert.HuBERT",
                                       "finetune": True, "modelpath_processor": "facebook/hubert-xlarge-ls960-ft",
                                       "modelpath_audiomodel": "facebook/hubert-base-ls960", "output_framerate": 50},
                 "feature_predictor": {"name": "transformer_predictor", "latent_dim": 256, "num_layers": 12,
                                       "num_heads": 8, "intermediate_size": 384, "quant_factor": 0, "_target_":
                                       "framework.model.feature_predictor.transformer_pred.TransformerPredictor"},
                 "losses": {"_target_": "framework.model.losses.compute_vqvae_pred.ComputeLosses", "lmd_latent": 1,
                            "latent_manifold": "${.lmd_latent}", "latent_manifold_func": "${model.func_recons}"},
                 "optim": {"_target_": "torch.optim.Adam", "betas": [0.9, 0.98], "eps": 1e-9, "lr": 1e-5},
                 "motion_prior": prior, "func_recons": {"_target_": "torch.nn.L1Loss", "reduction": "mean"}}
    root = OmegaConf.create({"seed": 1234, "path": {"working_dir": "/work/outputs"},
                             "data": {"video_framerate": 25, "one_hot_dim": [32, 8, 3],
                                      "split_path": "datasets/mead-splits-pred"}, "model": model})
    OmegaConf.resolve(root)
    return root


def lightning_checkpoint(stage: str, state: OrderedDict) -> dict:
    """What Lightning 2.1.4's checkpoint connector dumps for the release's module (``stage`` "prior": VQVAE,
    "pred": VqvaePredict): ``hyper_parameters`` is ``dict(module.hparams)``, the ``__init__`` arguments hydra
    passed (config nodes with ``_recursive_=False``: omegaconf DictConfig/ListConfig, their parents come along),
    plus numpy scalars (here the feature count, computed with numpy)."""
    cfg = _hydra_config(stage)
    hparams = {"nfeats": np.int64(53), "resumed_training": False, "logger_name": "none", **cfg.model}
    if stage == "pred":
        hparams.update(split_path=cfg.data.split_path, one_hot_dim=cfg.data.one_hot_dim)
    ckpt_cb = ("ModelCheckpoint{'monitor': 'total/val', 'mode': 'min', 'every_n_train_steps': 0, "
               "'every_n_epochs': 1, 'train_time_interval': None}")
    return {"epoch": 149, "global_step": 59850, "pytorch-lightning_version": "2.1.4", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 150, "completed": 149}},
                                   "epoch_loop.state_dict": {"_batches_that_stepped": 59850}}},
            "callbacks": {ckpt_cb: {"monitor": "total/val", "best_model_score": torch.tensor(0.0412),
                                    "best_model_path": "checkpoints/latest-epoch=149.ckpt",
                                    "current_score": torch.tensor(0.0412), "dirpath": "checkpoints",
                                    "best_k_models": {"checkpoints/latest-epoch=149.ckpt": torch.tensor(0.0412)},
                                    "kth_best_model_path": "", "kth_value": torch.tensor(math.inf),
                                    "last_model_path": ""},
                          "EarlyStopping{'monitor': 'total/val', 'mode': 'min'}":
                              {"wait_count": 3, "stopped_epoch": 0, "best_score": torch.tensor(0.0409),
                               "patience": 50}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(59850.0), "exp_avg": torch.zeros(3),
                                                "exp_avg_sq": torch.zeros(3)}},
                                  "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.98), "eps": 1e-9,
                                                    "weight_decay": 0, "params": [0]}]}],
            "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": hparams}


class _Numpy1Pickler(pickle._Pickler):
    """Writes numpy's reconstructors under numpy 1.x's module name (``numpy.core.multiarray.scalar``), as the
    release's numpy 1.23.5 did; numpy 2 writes ``numpy._core.multiarray``."""

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", "") == "numpy._core.multiarray":
            self.write(pickle.GLOBAL + f"numpy.core.multiarray\n{obj.__name__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def save_lightning(path, stage: str, state: OrderedDict, numpy1: bool = False):
    """``torch.save`` of :func:`lightning_checkpoint` (pickle protocol 2, as Lightning's default), numpy scalars
    named as numpy 1.x (``numpy1``) or this machine's numpy 2 names them."""
    ckpt = lightning_checkpoint(stage, state)
    if numpy1:
        module = types.ModuleType("numpy1_pickle")
        module.Pickler = _Numpy1Pickler
        torch.save(ckpt, path, pickle_module=module, pickle_protocol=2)
    else:
        torch.save(ckpt, path)
    return path


# --- the release's inference, written out --------------------------------------------------------------


def _sinusoids(length: int, width: int) -> torch.Tensor:
    """position_embed.py PositionalEncoding's ``pe`` table (without the batch axis)."""
    pe = torch.zeros(length, width)
    position = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, width, 2).float() * (-np.log(10000.0) / width))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def _gelu_tanh(x):
    """transformer_module_util.py gelu."""
    return x * 0.5 * (1.0 + torch.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * torch.pow(x, 3))))


def _ln(x, sd, key):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], 1e-5)


def _transformer_forward(x, sd, prefix: str, layers: int, heads: int):
    """transformer_module.py Transformer (non cross-modal, no mask): pre-norm residual attention + MLP."""
    b, n, dim = x.shape
    for i in range(layers):
        a, m = f"{prefix}net.{2 * i}.fn.", f"{prefix}net.{2 * i + 1}.fn."
        qkv = F.linear(_ln(x, sd, a + "norm"), sd[a + "fn.to_qkv.weight"])
        q, k, v = qkv.reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)  # "b n (qkv h d) -> qkv b h n d"
        attn = F.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * dim ** -0.5, dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attn, v).permute(0, 2, 1, 3).reshape(b, n, dim)
        x = F.linear(out, sd[a + "fn.to_out.weight"], sd[a + "fn.to_out.bias"]) + x
        h = _ln(x, sd, m + "norm")
        x = F.linear(_gelu_tanh(F.linear(h, sd[m + "fn.l1.weight"], sd[m + "fn.l1.bias"])), sd[m + "fn.l2.weight"],
                     sd[m + "fn.l2.bias"]) + x
    return x


def _squasher(x, sd, key):
    """nn.Sequential(Conv1d(k=5, padding=2, replicate), LeakyReLU(0.2), InstanceNorm1d) on (B, T, C)."""
    y = F.conv1d(F.pad(x.permute(0, 2, 1), (2, 2), mode="replicate"), sd[key + ".weight"], sd[key + ".bias"])
    return F.instance_norm(F.leaky_relu(y, 0.2)).permute(0, 2, 1)


def _fusion_block(xmm, xv, xa, sd, b: str, heads: int):
    """transformer_pred.py FusionBlock_DenseAVInteractions(xmm, xv, xa), eval mode (no dropout, no drop path)."""
    src_mm, src_v, src_a = _ln(xmm, sd, b + "norm_mm"), _ln(xv, sd, b + "norm_v"), _ln(xa, sd, b + "norm_a")
    bsz, n_mm, dim = src_mm.shape
    n_a, n_v = src_a.size(1), src_v.size(1)
    x_va = torch.cat([src_v.unsqueeze(2).repeat(1, 1, n_a, 1), src_a.unsqueeze(1).repeat(1, n_v, 1, 1)],
                     dim=3).flatten(1, 2)
    q = F.linear(src_mm, sd[b + "attn.q.weight"]).reshape(bsz, n_mm, heads, -1).permute(0, 2, 1, 3)
    k, v = F.linear(x_va, sd[b + "attn.kv.weight"]).reshape(bsz, n_v * n_a, 2, heads, -1).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5).softmax(dim=-1)
    out = F.linear((attn @ v).transpose(1, 2).reshape(bsz, n_mm, -1), sd[b + "attn.proj.weight"],
                   sd[b + "attn.proj.bias"])
    xmm = xmm + out
    h = F.gelu(F.linear(_ln(xmm, sd, b + "norm_mlp"), sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
    return xmm + F.linear(h, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])


def release_generate(s2: dict, wav: np.ndarray, shape: np.ndarray, cfg, emotion2vec, sample: bool = False,
                     temperature: float = 0.2, seed: int | None = None) -> dict[str, torch.Tensor]:
    """generation.py on one clip: ``wav`` float32 16 kHz as ``librosa.load`` returns it, ``shape`` the 300 FLAME
    shape values; ``cfg`` (LSFPaperConfig) gives the sizes hydra's config would (layers, heads, scaler ranges);
    ``emotion2vec``: FunASR's module (the tensors in ``s2["audio_model.*"]`` are loaded into it here).
    Returns each stage: ``content``/``emotion`` paired features, ``latents``, ``codes``, ``scaled`` motion and
    ``motion`` in FLAME units, (1, T, .) with T = floor(T50 / 2)."""
    from sklearn.preprocessing import MinMaxScaler, minmax_scale
    from transformers import HubertConfig, HubertModel

    sd = {k: v.float() for k, v in s2.items() if isinstance(v, torch.Tensor)}
    # generation.py: speech_array = audio_normalize(librosa.load(...)) = minmax_scale(x, feature_range=(-1, 1))
    speech = minmax_scale(np.asarray(wav, np.float32), feature_range=(-1, 1))
    with torch.no_grad():
        # hubert.py HuBERT.forward: Wav2Vec2Processor (transformers 4.10: zero mean, unit variance, eps 1e-5)
        x = (speech - np.mean(speech)) / np.sqrt(np.var(speech) + 1e-5)
        hubert = HubertModel(HubertConfig(**cfg.content.hubert)).eval()
        prefix = "feature_extractor.audiomodel."
        hubert.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})  # weight_g/_v
        audio_feature = hubert(torch.from_numpy(np.asarray(x, np.float32))[None]).last_hidden_state
        # VqvaePredict.forward: emotion2vec on the layer-normed clip
        audio_data = torch.from_numpy(speech).float()
        audio_data = F.layer_norm(audio_data, audio_data.shape).view(1, -1)
        e2v = {k[len("audio_model."):]: v for k, v in sd.items() if k.startswith("audio_model.")}
        emotion2vec.load_state_dict(e2v)
        emotion_feature = emotion2vec.eval().extract_features(audio_data, padding_mask=None)["x"]

        def pair(feats):  # drop an odd last frame, concatenate pairs (generation=True: nothing else)
            if feats.shape[1] % 2 != 0:
                feats = feats[:, :feats.shape[1] - 1, :]
            return torch.reshape(feats, (1, feats.shape[1] // 2, feats.shape[2] * 2))

        content, emotion = pair(audio_feature), pair(emotion_feature)
        # identity_extractor: Linear-ReLU-Linear-ReLU-Linear-Softmax on shape_params[:, 0, :300]
        h = torch.from_numpy(np.asarray(shape, np.float32))[None]
        h = F.relu(F.linear(h, sd["identity_extractor.0.weight"], sd["identity_extractor.0.bias"]))
        h = F.relu(F.linear(h, sd["identity_extractor.2.weight"], sd["identity_extractor.2.bias"]))
        style_one_hot = F.softmax(F.linear(h, sd["identity_extractor.4.weight"], sd["identity_extractor.4.bias"]), -1)
        # TransformerPredictor.forward
        fp, heads = "feature_predictor.", cfg.predictor.heads
        style = F.linear(style_one_hot, sd[fp + "style_proj.weight"]).unsqueeze(1)
        xa = F.linear(content, sd[fp + "audio_feat.weight"], sd[fp + "audio_feat.bias"]) * style
        xv = F.linear(emotion, sd[fp + "emo_feat.weight"], sd[fp + "emo_feat.bias"]) * style
        xa, xv = _squasher(xa, sd, fp + "squash_a.0"), _squasher(xv, sd, fp + "squash_e.0")
        pe = sd[fp + "pos_enc.pe"].permute(1, 0, 2)
        xa = F.linear(xa, sd[fp + "lin_embed.net.weight"], sd[fp + "lin_embed.net.bias"]) + pe[:, :xa.shape[1]]
        xv = F.linear(xv, sd[fp + "lin_embed.net.weight"], sd[fp + "lin_embed.net.bias"]) + pe[:, :xv.shape[1]]
        x_mm = sd[fp + "fusion_tokens"].expand(1, -1, -1)
        n_f = x_mm.shape[1]
        for i in range(cfg.predictor.layers):
            xa = _transformer_forward(torch.cat([x_mm, xa], 1), sd, f"{fp}audio_blocks.{i}.", 1, heads)[:, n_f:]
            xv = _transformer_forward(torch.cat([x_mm, xv], 1), sd, f"{fp}emo_blocks.{i}.", 1, heads)[:, n_f:]
            x_mm = _fusion_block(x_mm, xv, xa, sd, f"{fp}fusion_blocks.{i}.", heads)
        latents = xa
        # vqvae_quantizer.py VectorQuantizer.forward (of the stage-2 checkpoint's motion_prior copy)
        codebook = sd["motion_prior.quantize.embedding.weight"]
        z = latents.permute(0, 2, 1).contiguous()
        z_flattened = z.view(-1, codebook.shape[1])
        d = torch.sum(z_flattened ** 2, dim=1, keepdim=True) + torch.sum(codebook ** 2, dim=1) - 2 * \
            torch.matmul(z_flattened, codebook.t())
        if not sample:
            codes = torch.argmin(d, dim=1).unsqueeze(1)
        else:
            if seed is not None:
                torch.manual_seed(seed)
            codes = torch.multinomial(F.softmax(-d / temperature, dim=-1), num_samples=1)
        one_hot = torch.zeros(codes.shape[0], codebook.shape[0]).scatter_(1, codes, 1)
        z_q = torch.matmul(one_hot, codebook).view(z.shape).permute(0, 2, 1).contiguous()
        # TransformerDecoder.forward
        dec = "motion_prior.motion_decoder."
        y = _squasher(z_q, sd, dec + "expander.0.0")
        y = F.linear(y, sd[dec + "decoder_linear_embedding.net.weight"], sd[dec + "decoder_linear_embedding.net.bias"])
        y = y + sd[dec + "decoder_pos_embedding.pe"].permute(1, 0, 2)[:, :y.shape[1]]
        y = _transformer_forward(y, sd, dec + "decoder_transformer.", cfg.prior.decoder.layers, cfg.prior.decoder.heads)
        scaled = F.linear(y, sd[dec + "feature_mapping_reverse.weight"])
    # generation.py: scaler_exp / scaler_jaw inverse_transform (MinMaxScalers fitted on the fixed ranges)
    exp = MinMaxScaler().fit(np.array([[cfg.expression_range[0]] * 50, [cfg.expression_range[1]] * 50]))
    jaw = MinMaxScaler().fit(np.array([[cfg.jaw_range[0]] * 3, [cfg.jaw_range[1]] * 3]))
    s = scaled[0].numpy()
    motion = np.concatenate([exp.inverse_transform(s[:, :50]), jaw.inverse_transform(s[:, 50:])], axis=1)
    return {"content": content, "emotion": emotion, "latents": latents, "codes": codes.reshape(1, -1),
            "scaled": scaled, "motion": torch.from_numpy(motion).float()[None]}
