#!/usr/bin/env python3
"""Export depth-conditioned Stable Diffusion models into the depthcast ONNX model layout.

    NOTE: this script has NOT been run as part of depthcast's development or CI. The machine it
    was written on had no PyPI access (no torch / diffusers), so only its syntax is checked
    (`python3 -m py_compile`, in test/hub.test.ts). It follows the diffusers 0.27-0.30 and torch
    2.x APIs; check every export with `depthcast models verify <folder>` and, if onnxruntime is
    installed, with `--check` (compares ONNX against PyTorch on random inputs).

Why it exists: no ONNX export of stabilityai/stable-diffusion-2-depth is published, and published
SD 1.5 ONNX exports have a unet without the ControlNet residual inputs. This script writes:

  sd2-depth          StableDiffusionDepth2ImgPipeline: unet with 5 input channels (4 latents + depth)
  controlnet-depth   StableDiffusionControlNetPipeline: base model (SD 1.5 by default, or any SD 1.x /
                     2.x diffusers repo such as stabilityai/sd-turbo) whose unet takes the residuals,
                     plus a depth ControlNet (lllyasviel/control_v11f1p_sd15_depth by default);
                     --lcm-lora fuses an LCM-LoRA into the unet (few-step sampling, LCMScheduler)

into the layout of docs/models.md:

  model_index.json, scheduler/scheduler_config.json, tokenizer/{vocab.json,merges.txt,...},
  text_encoder/model.onnx   input_ids int32 [B,77] -> last_hidden_state [B,77,D], pooler_output [B,D]
  unet/model.onnx           sample [B,C,h,w], timestep float32 [B], encoder_hidden_states [B,77,D]
                            (+ down_block_additional_residual_0..N-1, mid_block_additional_residual)
                            -> out_sample [B,4,h,w]
  controlnet/model.onnx     sample, timestep, encoder_hidden_states, controlnet_cond [B,3,H,W] in [0,1],
                            conditioning_scale float32 [] -> down_block_res_sample_0..N-1, mid_block_res_sample
  vae_encoder/model.onnx    sample [B,3,H,W] in [-1,1] -> latent_sample (distribution mean, unscaled)
  vae_decoder/model.onnx    latent_sample -> sample [B,3,8h,8w]
  */config.json, depthcast.json (ControlNet residual names), depthcast-manifest.json (sha256 of every file)

All inputs/outputs are float32 (int32 for input_ids) even with --fp16: the weights and the math are
half precision, casts at the graph edges keep the I/O of the layout. Batch and spatial dimensions
are dynamic; opset 17. Models above 2 GB keep their weights in one external file, weights.pb.

Requirements (not installed by depthcast):
    pip install torch diffusers transformers accelerate onnx     # + peft for --lcm-lora
    pip install onnxruntime                                      # optional, for --check

Examples:
    python3 tools/export_onnx.py sd2-depth --out ~/.cache/depthcast/models/sd2-depth
    python3 tools/export_onnx.py controlnet-depth --out ~/.cache/depthcast/models/sd15-controlnet-depth
    python3 tools/export_onnx.py controlnet-depth --lcm-lora --out ~/.cache/depthcast/models/sd15-lcm-controlnet-depth
    python3 tools/export_onnx.py controlnet-depth --base stabilityai/sd-turbo \\
        --controlnet thibaud/controlnet-sd21-depth-diffusers --scheduler EulerAncestralDiscreteScheduler \\
        --out ~/.cache/depthcast/models/sd-turbo-controlnet-depth

optimum is not used: its Stable Diffusion exporter has neither the 5-channel depth2img unet nor
the ControlNet residual inputs/outputs, and its I/O names differ from this layout in places
(e.g. the VAE encoder output), so the components are exported with torch.onnx directly.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

OPSET = 17
MAX_LENGTH = 77
TWO_GB = 2 * 1024**3 - 64 * 1024**2  # protobuf limit with some headroom


def fail(msg: str) -> None:
    print(f"export_onnx.py: {msg}", file=sys.stderr)
    sys.exit(2)


def import_stack():
    try:
        import torch  # noqa: F401
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the user's environment
        fail(f"missing Python package ({e.name}); install: pip install torch diffusers transformers accelerate onnx")
    import torch
    import diffusers
    import transformers
    import onnx

    return torch, diffusers, transformers, onnx


# ------------------------------------------------------------------------------------------------
# Wrappers: flat tensor inputs/outputs with the layout's names, float32 at the edges.


def make_wrappers(torch):
    nn = torch.nn

    class TextEncoder(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            out = self.model(input_ids=input_ids.to(torch.long), return_dict=True)
            return out.last_hidden_state.float(), out.pooler_output.float()

    class UNet(nn.Module):
        def __init__(self, unet, n_residuals: int, dtype):
            super().__init__()
            self.unet = unet
            self.n = n_residuals
            self.dtype_ = dtype

        def forward(self, sample, timestep, encoder_hidden_states, *residuals):
            kwargs = {}
            if self.n:
                res = [r.to(self.dtype_) for r in residuals]
                kwargs["down_block_additional_residuals"] = tuple(res[:-1])
                kwargs["mid_block_additional_residual"] = res[-1]
            out = self.unet(
                sample.to(self.dtype_),
                timestep.to(self.dtype_),
                encoder_hidden_states.to(self.dtype_),
                return_dict=False,
                **kwargs,
            )[0]
            return out.float()

    class ControlNet(nn.Module):
        def __init__(self, controlnet, dtype):
            super().__init__()
            self.controlnet = controlnet
            self.dtype_ = dtype

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
            down, mid = self.controlnet(
                sample.to(self.dtype_),
                timestep.to(self.dtype_),
                encoder_hidden_states.to(self.dtype_),
                controlnet_cond.to(self.dtype_),
                conditioning_scale=conditioning_scale.to(self.dtype_),
                return_dict=False,
            )
            return tuple(d.float() for d in down) + (mid.float(),)

    class VaeEncoder(nn.Module):
        def __init__(self, vae, dtype):
            super().__init__()
            self.vae = vae
            self.dtype_ = dtype

        def forward(self, sample):
            return self.vae.encode(sample.to(self.dtype_)).latent_dist.mean.float()

    class VaeDecoder(nn.Module):
        def __init__(self, vae, dtype):
            super().__init__()
            self.vae = vae
            self.dtype_ = dtype

        def forward(self, latent_sample):
            return self.vae.decode(latent_sample.to(self.dtype_), return_dict=False)[0].float()

    return TextEncoder, UNet, ControlNet, VaeEncoder, VaeDecoder


# ------------------------------------------------------------------------------------------------
# Export and save


def export_module(torch, onnx, module, args, out_file: Path, input_names, output_names, dynamic_axes):
    """torch.onnx.export into a temp folder, then save once more so that large models get a single
    external-data file (weights.pb) beside model.onnx instead of one file per tensor."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter honours dynamic_axes and these wrappers
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(module, tuple(args), str(tmp_file), **kwargs)
        model = onnx.load(str(tmp_file), load_external_data=True)
        weights = sum(len(t.raw_data) for t in model.graph.initializer)
        for stale in (out_file, out_file.parent / "weights.pb"):
            if stale.exists():
                stale.unlink()
        if weights > TWO_GB:
            onnx.save_model(
                model,
                str(out_file),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location="weights.pb",
                size_threshold=1024,
                convert_attribute=False,
            )
        else:
            onnx.save_model(model, str(out_file))
    print(f"  wrote {out_file} ({weights / 1024**2:.0f} MB of weights)")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def config_dict(cfg) -> dict:
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return {k: v for k, v in dict(cfg).items()}


def write_manifest(out: Path, sources: list) -> None:
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_symlink():
            fail(f"{p} is a symbolic link; depthcast refuses links in model folders")
        if not p.is_file() or p.name == "depthcast-manifest.json":
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        files[p.relative_to(out).as_posix()] = {"size": p.stat().st_size, "sha256": h.hexdigest()}
    write_json(
        out / "depthcast-manifest.json",
        {
            "format": "depthcast-manifest",
            "version": 1,
            "name": out.name,
            "installed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "registry": None,
            "sources": sources,
            "files": files,
        },
    )


# ------------------------------------------------------------------------------------------------
# Loading


def load_components(torch, diffusers, transformers, repo: str, dtype, device, revision=None):
    common = dict(revision=revision) if revision else {}
    print(f"loading {repo} ...")
    unet = diffusers.UNet2DConditionModel.from_pretrained(repo, subfolder="unet", torch_dtype=dtype, **common)
    vae = diffusers.AutoencoderKL.from_pretrained(repo, subfolder="vae", torch_dtype=dtype, **common)
    text_encoder = transformers.CLIPTextModel.from_pretrained(repo, subfolder="text_encoder", torch_dtype=dtype, **common)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(repo, subfolder="tokenizer", **common)
    sched_cfg = diffusers.DDIMScheduler.load_config(repo, subfolder="scheduler", **common)
    sched_cls = getattr(diffusers, sched_cfg.get("_class_name", "PNDMScheduler"), diffusers.PNDMScheduler)
    scheduler = sched_cls.from_config(sched_cfg)
    for m in (unet, vae, text_encoder):
        m.to(device).eval()
    return unet, vae, text_encoder, tokenizer, scheduler


def fuse_lcm_lora(diffusers, unet, vae, text_encoder, tokenizer, scheduler, lora: str):
    print(f"fusing LCM-LoRA {lora} into the unet ...")
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # Say what actually went wrong: only a missing peft is "install peft"; a wrong repo id, no
    # network, or a LoRA for another base model each have their own message.
    if importlib.util.find_spec("peft") is None:
        fail("LoRA loading needs the peft package: pip install peft")
    try:
        pipe.load_lora_weights(lora)
    except Exception as e:  # pragma: no cover
        fail(f"could not load the LoRA {lora}: {type(e).__name__}: {e}")
    pipe.fuse_lora()
    if hasattr(pipe, "unload_lora_weights"):
        pipe.unload_lora_weights()  # keeps the fused weights, drops the adapter layers
    return pipe.unet


# ------------------------------------------------------------------------------------------------
# Export of one model


def export_model(args) -> None:
    torch, diffusers, transformers, onnx = import_stack()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: this torch build has no CUDA device (torch.cuda.is_available() is False)")
    if args.fp16 and device.type == "cpu":
        # CPU torch lacks half-precision kernels the SD components use (e.g. LayerNorm, conv on
        # Half), so every component would fail mid-export: stop before loading anything.
        fail("--fp16 needs --device cuda (CPU torch cannot run these models in half precision); "
             "export in float32 on the CPU, or pass --device cuda on a machine with a GPU")
    dtype = torch.float16 if args.fp16 else torch.float32
    out = Path(os.path.expanduser(args.out)).resolve()
    if out.exists() and any(out.iterdir()) and not args.force:
        fail(f"{out} is not empty; pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)

    depth = args.command == "sd2-depth"
    base = args.model if depth else args.base
    unet, vae, text_encoder, tokenizer, scheduler = load_components(torch, diffusers, transformers, base, dtype, device, args.revision)
    controlnet = None
    if not depth:
        print(f"loading {args.controlnet} ...")
        controlnet = diffusers.ControlNetModel.from_pretrained(args.controlnet, torch_dtype=dtype).to(device).eval()
    if getattr(args, "lcm_lora", None):
        unet = fuse_lcm_lora(diffusers, unet, vae, text_encoder, tokenizer, scheduler, args.lcm_lora).to(device).eval()
        scheduler = diffusers.LCMScheduler.from_config(scheduler.config)
    if args.scheduler:
        cls = getattr(diffusers, args.scheduler, None)
        if cls is None:
            fail(f"diffusers has no scheduler {args.scheduler}")
        scheduler = cls.from_config(scheduler.config)

    TextEncoder, UNet, ControlNet, VaeEncoder, VaeDecoder = make_wrappers(torch)
    # Traced at odd latent sides: diffusers' UNet then gives each up-sampler the size of its skip
    # connection (forward_upsample_size), which the export keeps as a Resize to a computed size.
    # Traced at 64x64 the up-samplers become constant x2 scales, and any latent side that is not
    # a multiple of 8 (72x72 px, 1920x1080 px) fails inside onnxruntime.
    B, h, w = 2, 63, 65  # 504x520 px; every batch/spatial dimension is exported as dynamic
    D = text_encoder.config.hidden_size
    C = unet.config.in_channels
    if depth and C != 5:
        fail(f"{base}'s unet has {C} input channels; a depth2img unet has 5 (4 latents + depth)")
    f32 = dict(device=device, dtype=torch.float32)

    # text encoder
    ids = torch.zeros((1, MAX_LENGTH), dtype=torch.int32, device=device)
    export_module(
        torch, onnx, TextEncoder(text_encoder), [ids], out / "text_encoder" / "model.onnx",
        ["input_ids"], ["last_hidden_state", "pooler_output"],
        {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}},
    )

    sample = torch.randn((B, C, h, w), **f32)
    timestep = torch.full((B,), 999.0, **f32)
    hidden = torch.randn((B, MAX_LENGTH, D), **f32)
    spatial = {0: "batch", 2: "height", 3: "width"}

    # controlnet (and the residual shapes the unet will take)
    residual_names: list = []
    residuals: list = []
    if controlnet is not None:
        cond = torch.rand((B, 3, h * 8, w * 8), **f32)
        scale = torch.tensor(1.0, **f32)
        cn = ControlNet(controlnet, dtype)
        with torch.no_grad():
            residuals = list(cn(sample, timestep, hidden, cond, scale))
        n_down = len(residuals) - 1
        out_names = [f"down_block_res_sample_{i}" for i in range(n_down)] + ["mid_block_res_sample"]
        residual_names = [f"down_block_additional_residual_{i}" for i in range(n_down)] + ["mid_block_additional_residual"]
        axes = {
            "sample": spatial, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch"},
            "controlnet_cond": {0: "batch", 2: "image_height", 3: "image_width"},
        }
        for i, name in enumerate(out_names):
            axes[name] = {0: "batch", 2: f"res{i}_height", 3: f"res{i}_width"}
        export_module(
            torch, onnx, cn, [sample, timestep, hidden, cond, scale], out / "controlnet" / "model.onnx",
            ["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale"], out_names, axes,
        )
        write_json(out / "controlnet" / "config.json", config_dict(controlnet.config))
        write_json(out / "depthcast.json", {"controlnet": {"outputs": dict(zip(out_names, residual_names))}})

    # unet
    axes = {"sample": spatial, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch"}, "out_sample": spatial}
    for i, name in enumerate(residual_names):
        axes[name] = {0: "batch", 2: f"res{i}_height", 3: f"res{i}_width"}
    export_module(
        torch, onnx, UNet(unet, len(residual_names), dtype), [sample, timestep, hidden, *residuals], out / "unet" / "model.onnx",
        ["sample", "timestep", "encoder_hidden_states", *residual_names], ["out_sample"], axes,
    )
    write_json(out / "unet" / "config.json", config_dict(unet.config))

    # vae
    image = torch.rand((1, 3, h * 8, w * 8), **f32) * 2 - 1
    export_module(
        torch, onnx, VaeEncoder(vae, dtype), [image], out / "vae_encoder" / "model.onnx",
        ["sample"], ["latent_sample"], {"sample": spatial, "latent_sample": spatial},
    )
    latents = torch.randn((1, 4, h, w), **f32)
    export_module(
        torch, onnx, VaeDecoder(vae, dtype), [latents], out / "vae_decoder" / "model.onnx",
        ["latent_sample"], ["sample"], {"latent_sample": spatial, "sample": spatial},
    )
    vae_cfg = config_dict(vae.config)
    write_json(out / "vae_encoder" / "config.json", vae_cfg)
    write_json(out / "vae_decoder" / "config.json", vae_cfg)
    write_json(out / "text_encoder" / "config.json", config_dict(text_encoder.config))

    # tokenizer, scheduler, model_index
    tok_dir = out / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tokenizer.save_pretrained(str(tok_dir))
    scheduler.save_pretrained(str(out / "scheduler"))
    onnx_component = ["diffusers", "OnnxRuntimeModel"]
    index = {
        "_class_name": "StableDiffusionDepth2ImgPipeline" if depth else "StableDiffusionControlNetPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": onnx_component,
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": onnx_component,
        "vae_encoder": onnx_component,
        "vae_decoder": onnx_component,
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    if not depth:
        index["controlnet"] = onnx_component
    write_json(out / "model_index.json", index)

    sources = [{"role": "base" if not depth else "model", "repo": base, "revision": args.revision or "main", "commit": None}]
    if not depth:
        sources.append({"role": "controlnet", "repo": args.controlnet, "revision": "main", "commit": None})
    write_manifest(out, sources)

    if args.check:
        check_against_torch(torch, out, dict(
            text_encoder=(TextEncoder(text_encoder), {"input_ids": ids}),
            unet=(UNet(unet, len(residual_names), dtype), dict(zip(["sample", "timestep", "encoder_hidden_states", *residual_names], [sample, timestep, hidden, *residuals]))),
            vae_decoder=(VaeDecoder(vae, dtype), {"latent_sample": latents}),
        ))
    print(f"done: {out}\nnext: depthcast models verify {out}")


def check_against_torch(torch, out: Path, cases: dict) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        print("--check skipped: pip install onnxruntime", file=sys.stderr)
        return
    for name, (module, feeds) in cases.items():
        sess = ort.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.detach().cpu().numpy() for k, v in feeds.items()})
        with torch.no_grad():
            want = module(*feeds.values())
        want = want if isinstance(want, tuple) else (want,)
        diff = max(float(abs(g - w.detach().cpu().numpy()).max()) for g, w in zip(got, want))
        print(f"  check {name}: max |onnx - torch| = {diff:.3g}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--out", required=True, help="output model folder (e.g. ~/.cache/depthcast/models/<name>)")
        sp.add_argument("--fp16", action="store_true", help="half-precision weights (I/O stays float32); use with --device cuda")
        sp.add_argument("--device", default="cpu", help="torch device for the export (cpu, cuda)")
        sp.add_argument("--revision", default=None, help="revision of the base model repo")
        sp.add_argument("--scheduler", default=None, help="default scheduler class written to scheduler/ (e.g. DDIMScheduler)")
        sp.add_argument("--check", action="store_true", help="compare ONNX outputs with PyTorch (needs onnxruntime)")
        sp.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")

    d = sub.add_parser("sd2-depth", help="Stable Diffusion 2 depth2img")
    d.add_argument("--model", default="stabilityai/stable-diffusion-2-depth")
    common(d)

    c = sub.add_parser("controlnet-depth", help="SD base model + depth ControlNet")
    c.add_argument("--base", default="stable-diffusion-v1-5/stable-diffusion-v1-5", help="diffusers repo of the base model")
    c.add_argument("--controlnet", default="lllyasviel/control_v11f1p_sd15_depth", help="diffusers repo of the ControlNet")
    c.add_argument("--lcm-lora", nargs="?", const="latent-consistency/lcm-lora-sdv1-5", default=None,
                   help="fuse an LCM-LoRA into the unet (default latent-consistency/lcm-lora-sdv1-5) and use LCMScheduler")
    common(c)

    args = p.parse_args(argv)
    export_model(args)


if __name__ == "__main__":
    main()
