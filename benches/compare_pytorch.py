"""The PyTorch side of "glint vs transformers": Grounding DINO latency per stage and peak memory.

Run from the repository root (CPU, offline; needs torch, transformers 5.x, tokenizers, pillow,
numpy, safetensors):

    python3 benches/compare_pytorch.py --shape tiny
    python3 benches/compare_pytorch.py --shape full --save /tmp/glint-bench/gdino-t-random

Shapes:
  tiny  the transformers checkpoint committed at tests/fixtures/grounding_dino/tiny.
  full  Grounding-DINO-T's shape: `GroundingDinoConfig()` defaults (Swin-T backbone with
        out_indices [2, 3, 4] plus one extra level, BERT-base text encoder, d_model 256,
        6 + 6 layers, 900 queries) with transformers' own random initialisation, seeded
        (`--seed`). There is no hub access here, so no released weights are used.

`--save DIR` writes the checkpoint as a hub-like directory (config.json, model.safetensors,
preprocessor_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json) so
that glint loads the SAME weights: `glint bench --model DIR --image IMG --prompt P`. The full
shape always goes through such a directory (default /tmp/glint-bench/gdino-t-random): it is
built and saved by a child process, then loaded back with `from_pretrained` by the measuring
process, so the peak RSS reported is the one of loading a checkpoint and running it, as a user
(and glint) does, not of building one. An existing directory is reused unless `--rebuild`.

The image is `--image PATH`, or a deterministic synthetic picture of `--size WxH` (default
800x800; shapes on a gradient), saved as bench-WxH.png next to the saved model (or in
/tmp/glint-bench when nothing is saved) so glint can be given the same file. Its short side
should be 800 and its long side at most 1333 so the processor does not resize it.

Every run (after one warm-up) is timed under `torch.inference_mode()`:
  preprocess   `processor(images=..., text=...)` (resize check, normalise, tokenise);
  forward      `model(**inputs)`, and inside it, through forward pre-hooks / hooks:
    backbone   `model.model.backbone` (Swin + position embeddings);
    text       `model.model.text_backbone` start to `model.model.text_projection` end (BERT);
    encoder    `model.model.encoder` (feature enhancer: fusion + deformable self-attention);
    decoder    `model.model.decoder`;
    other      forward minus the four above (input projections, query selection, heads);
  postprocess `processor.post_process_grounded_object_detection` (box / text thresholds);
  end_to_end  preprocess + forward + postprocess.
Reported: median, min and max over `--runs`; peak RSS (VmHWM from /proc/self/status and
ru_maxrss) after the runs, and the RSS after loading. `--json OUT` writes all of it, with the
machine load (`os.getloadavg`) before and after, and the detections of the last run.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The processor is built and saved as the parity fixtures build and save it.
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from make_grounding_dino import CHECKPOINT_FILES, build_processor, save_processor  # noqa: E402
TINY = ROOT / "tests" / "fixtures" / "grounding_dino" / "tiny"
DEFAULT_FULL_DIR = Path("/tmp/glint-bench/gdino-t-random")
SCRATCH = Path("/tmp/glint-bench")
STAGES = ["backbone", "text", "encoder", "decoder"]
REPORTED = ["preprocess", "forward", *STAGES, "other", "postprocess", "end_to_end"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=["tiny", "full"], default="tiny")
    p.add_argument("--save", type=Path, help="write the checkpoint here (full: default %s)" % DEFAULT_FULL_DIR)
    p.add_argument("--rebuild", action="store_true", help="full: rebuild the saved checkpoint even if present")
    p.add_argument("--seed", type=int, default=0, help="full: seed of the random weights")
    p.add_argument("--image", type=Path, help="image file (default: a synthetic image of --size)")
    p.add_argument("--size", default="800x800", help="synthetic image size WxH (default 800x800)")
    p.add_argument("--prompt", default="cat . remote control . person .")
    p.add_argument("--batch", type=int, default=1, help="images per forward (the image repeated)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs (default cpu)")
    p.add_argument("--dtype", choices=["f32", "f16"], default="f32", help="model precision (f16: cuda only)")
    p.add_argument("--runs", type=int, default=3, help="timed runs, after one warm-up")
    p.add_argument("--box-threshold", type=float, default=0.35)
    p.add_argument("--text-threshold", type=float, default=0.25)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--glint",
        type=Path,
        help="also run this glint binary's `bench` on the same checkpoint, image, prompt, batch and "
        "threads, and print both side by side with the ratio",
    )
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.batch < 1 or args.runs < 1 or args.threads < 1:
        p.error("--batch, --runs and --threads must be at least 1")
    if args.dtype == "f16" and args.device != "cuda":
        p.error("--dtype f16 needs --device cuda (half precision is not a CPU path of transformers)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
        if w < 1 or h < 1:
            raise ValueError
    except ValueError:
        p.error(f"--size {args.size!r}: expected WxH, e.g. 1333x800")
    args.size_wh = (w, h)
    if args.shape == "full" and args.save is None:
        args.save = DEFAULT_FULL_DIR
    return args


# ---------------------------------------------------------------------------------------------
# Checkpoint


def save_checkpoint(model, processor, directory):
    """Write a hub-like checkpoint directory, laid out as the parity fixtures are."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES + ["processor_config.json", "vocab.txt"]:
        (directory / name).unlink(missing_ok=True)
    model.save_pretrained(directory)
    save_processor(processor, directory)
    missing = [n for n in CHECKPOINT_FILES if not (directory / n).is_file()]
    if missing:
        raise SystemExit(f"{directory}: save_pretrained did not write {missing}")
    for name in CHECKPOINT_FILES:
        (directory / name).chmod(0o644)  # save_pretrained leaves model.safetensors owner-only


def build_full(directory, seed):
    """Grounding-DINO-T's shape, transformers' random init (seeded), saved to `directory`."""
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
    save_checkpoint(model, build_processor(), directory)
    n = sum(p.numel() for p in model.parameters())
    print(f"built Grounding-DINO-T shape (seed {seed}, {n / 1e6:.1f} M parameters) -> {directory}")


def is_checkpoint(directory):
    return all((directory / n).is_file() for n in CHECKPOINT_FILES)


def prepare_checkpoint(args):
    """The directory the measured model is loaded from."""
    if args.shape == "tiny":
        if args.save is not None and args.save.resolve() != TINY.resolve():
            # Copy the committed files rather than re-saving: the bytes glint reads stay the same.
            args.save.mkdir(parents=True, exist_ok=True)
            for name in CHECKPOINT_FILES:
                shutil.copyfile(TINY / name, args.save / name)
        return TINY
    if args.rebuild or not is_checkpoint(args.save):
        # A child process builds and saves, so building does not count in this process's peak RSS.
        cmd = [sys.executable, __file__, "--shape", "full", "--save", str(args.save), "--seed", str(args.seed)]
        subprocess.run(cmd + ["--build-only"], check=True)
    else:
        print(f"reusing {args.save} (--rebuild to rebuild it)")
    return args.save


def load(directory):
    from transformers import AutoProcessor, GroundingDinoForObjectDetection, GroundingDinoProcessor

    model, info = GroundingDinoForObjectDetection.from_pretrained(
        directory, dtype=torch.float32, output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"{directory}: loading left {problems}")
    processor = AutoProcessor.from_pretrained(directory)
    if not isinstance(processor, GroundingDinoProcessor):
        raise SystemExit(f"{directory}: expected a GroundingDinoProcessor, got {type(processor).__name__}")
    return model.eval(), processor


# ---------------------------------------------------------------------------------------------
# Image


def synthetic_image(w, h):
    """Coloured shapes on a gradient with mild noise: deterministic for a given size."""
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:h, 0:w]
    ramp = np.stack([150 + 60 * x / w, 120 + 70 * y / h, 90 + 50 * (x + y) / (w + h)], -1)
    ramp += rng.normal(0.0, 6.0, ramp.shape)
    img = Image.fromarray(ramp.clip(0, 255).round().astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
        x1, y1 = x0 + rng.uniform(w * 0.05, w * 0.3), y0 + rng.uniform(h * 0.05, h * 0.3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            d.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            d.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            d.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=colour)
    return img


def prepare_image(args):
    if args.image is not None:
        try:
            return Image.open(args.image).convert("RGB"), args.image
        except OSError as e:
            raise SystemExit(f"{args.image}: cannot read the image ({e})")
    w, h = args.size_wh
    folder = args.save if args.save is not None else SCRATCH
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{w}x{h}.png"
    img = synthetic_image(w, h)
    img.save(path)
    return img, path


# ---------------------------------------------------------------------------------------------
# Measurement


def synchronize(device):
    """Wait for queued GPU work, so host clocks measure it (a no-op on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


class StageTimer:
    """Wall time of model stages, from forward pre-hooks (start) and forward hooks (end).

    On CUDA each hook waits for the queued work first, so a stage's time is its own.
    """

    def __init__(self, model, device):
        m = model.model
        self.device = device
        self.times = {}
        self.handles = []
        self._span("backbone", m.backbone, m.backbone)
        self._span("text", m.text_backbone, m.text_projection)
        self._span("encoder", m.encoder, m.encoder)
        self._span("decoder", m.decoder, m.decoder)

    def _span(self, name, first, last):
        start = {}

        def pre(module, inputs):
            synchronize(self.device)
            start["t"] = time.perf_counter()

        def post(module, inputs, output):
            synchronize(self.device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start.pop("t")

        self.handles.append(first.register_forward_pre_hook(pre))
        self.handles.append(last.register_forward_hook(post))

    def take(self):
        times, self.times = self.times, {}
        return times

    def remove(self):
        for h in self.handles:
            h.remove()


def to_model(inputs, args):
    """The processor's tensors on the model's device; pixels in the model's precision."""
    dtype = torch.float16 if args.dtype == "f16" else torch.float32
    moved = {}
    for key, value in inputs.items():
        value = value.to(args.device)
        moved[key] = value.to(dtype) if value.is_floating_point() else value
    return type(inputs)(moved) if hasattr(inputs, "data") else moved


def run_once(model, processor, timer, images, prompts, sizes, args):
    t0 = time.perf_counter()
    inputs = processor(images=images, text=prompts, return_tensors="pt")
    inputs = to_model(inputs, args)
    synchronize(args.device)
    t1 = time.perf_counter()
    outputs = model(**inputs)
    synchronize(args.device)
    t2 = time.perf_counter()
    results = processor.post_process_grounded_object_detection(
        outputs,
        input_ids=inputs["input_ids"],
        threshold=args.box_threshold,
        text_threshold=args.text_threshold,
        target_sizes=sizes,
    )
    t3 = time.perf_counter()
    stages = timer.take()
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise SystemExit(f"the stage hooks did not fire for {missing}: transformers' module layout changed")
    times = {"preprocess": t1 - t0, "forward": t2 - t1, "postprocess": t3 - t2, "end_to_end": t3 - t0}
    times.update(stages)
    times["other"] = times["forward"] - sum(stages[s] for s in STAGES)
    return times, inputs, results


def memory():
    """Current and peak resident set size of this process, in bytes."""
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0]) * 1024  # kB
    # Linux reports ru_maxrss in kilobytes.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss": status.get("VmRSS"), "peak_vmhwm": status.get("VmHWM"), "peak_ru_maxrss": maxrss}


def summarise(runs):
    out = {}
    for key in REPORTED:
        values = [r[key] for r in runs]
        out[key] = {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}
    return out


def describe_detections(results, inputs):
    """The last run's detections, in transformers' order, for a side-by-side look at glint's."""
    described = []
    for result in results:
        labels = result["text_labels"] if "text_labels" in result else result["labels"]
        described.append(
            [
                {"bbox": [round(v, 3) for v in box.tolist()], "score": round(float(score), 6), "text_label": label}
                for box, score, label in zip(result["boxes"], result["scores"], labels)
            ]
        )
    return described


def gib(n):
    """Bytes as decimal GB and binary GiB (the issue quotes GB)."""
    return f"{n / 1e9:.2f} GB / {n / 2**30:.2f} GiB" if n is not None else "?"


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.build_only:
        build_full(args.save, args.seed)
        return

    directory = prepare_checkpoint(args)
    # What Python, torch and transformers cost before any model exists (glint pays none of it).
    from transformers import GroundingDinoForObjectDetection  # noqa: F401

    mem_imports = memory()
    load_avg_before = os.getloadavg()
    t = time.perf_counter()
    model, processor = load(directory)
    load_s = time.perf_counter() - t
    model = model.to(args.device, torch.float16 if args.dtype == "f16" else torch.float32)
    mem_loaded = memory()
    img, image_path = prepare_image(args)
    images, prompts = [img] * args.batch, [args.prompt] * args.batch
    sizes = [(img.height, img.width)] * args.batch

    timer = StageTimer(model, args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = []
    with torch.inference_mode():
        run_once(model, processor, timer, images, prompts, sizes, args)  # warm-up
        for _ in range(args.runs):
            times, inputs, results = run_once(model, processor, timer, images, prompts, sizes, args)
            runs.append(times)
    timer.remove()
    mem = memory()
    if args.device == "cuda":
        mem["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
        mem["cuda_peak_reserved"] = torch.cuda.max_memory_reserved()
    load_avg_after = os.getloadavg()

    pv = inputs["pixel_values"]
    summary = summarise(runs)
    report = {
        "tool": "transformers",
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "shape": args.shape,
        "model_dir": str(directory),
        "saved_dir": str(args.save) if args.save is not None else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "image": str(image_path),
        "image_size_wh": [img.width, img.height],
        "model_input_hw": list(pv.shape[-2:]),
        "text_tokens": int(inputs["input_ids"].shape[1]),
        "prompt": args.prompt,
        "batch": args.batch,
        "threads": args.threads,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "dtype": args.dtype,
        "runs": args.runs,
        "box_threshold": args.box_threshold,
        "text_threshold": args.text_threshold,
        "load_s": load_s,
        "stages": summary,
        "per_run": runs,
        "images_per_s": args.batch / summary["end_to_end"]["median_s"],
        "memory_bytes": {"after_imports_rss": mem_imports["rss"], "after_load_rss": mem_loaded["rss"], **mem},
        "load_average_before": list(load_avg_before),
        "load_average_after": list(load_avg_after),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "detections": describe_detections(results, inputs),
    }

    print(
        f"transformers {report['transformers_version']}, torch {report['torch_version']}: "
        f"{args.shape} ({report['parameters'] / 1e6:.2f} M parameters) from {directory}"
    )
    print(
        f"image {image_path} ({img.width}x{img.height}, model input {pv.shape[-1]}x{pv.shape[-2]}), "
        f"batch {args.batch}, {report['text_tokens']} text tokens, {args.threads} threads, "
        f"{report['device']} {args.dtype}, "
        f"{args.runs} runs after 1 warm-up"
    )
    print(f"{'stage':<12} {'median':>10} {'min':>10} {'max':>10}")
    for key in REPORTED:
        s = summary[key]
        print(f"{key:<12} {s['median_s'] * 1e3:>8.1f}ms {s['min_s'] * 1e3:>8.1f}ms {s['max_s'] * 1e3:>8.1f}ms")
    print(f"images/s     {report['images_per_s']:.3f}")
    print(
        f"peak RSS {gib(mem['peak_vmhwm'])} (VmHWM), {gib(mem['peak_ru_maxrss'])} (ru_maxrss); "
        f"RSS after imports {gib(mem_imports['rss'])}, after load {gib(mem_loaded['rss'])}; load {load_s:.1f} s"
    )
    print(
        f"detections per image: {[len(d) for d in report['detections']]}; load average "
        f"{' '.join(f'{v:.2f}' for v in load_avg_before)} before, "
        f"{' '.join(f'{v:.2f}' for v in load_avg_after)} after ({os.cpu_count()} CPUs)"
    )
    if args.device == "cuda":
        print(f"CUDA peak allocated {gib(mem['cuda_peak_allocated'])}, reserved {gib(mem['cuda_peak_reserved'])}")
    if args.glint is not None:
        report["glint"] = run_glint(args, directory, image_path)
        print_side_by_side(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")


def run_glint(args, directory, image_path):
    """`glint bench` on the same inputs; its JSON report. glint's device is the counterpart of
    --device (cpu, or wgpu for cuda), and its threads are pinned to --threads cores on the CPU."""
    out = SCRATCH / "glint-bench.json"
    SCRATCH.mkdir(parents=True, exist_ok=True)
    cmd = [str(args.glint), "bench", "--model", str(directory), "--image", str(image_path)]
    cmd += ["--prompt", args.prompt, "--runs", str(args.runs), "--batch-size", str(args.batch)]
    cmd += ["--device", "wgpu" if args.device == "cuda" else "cpu", "--precision", args.dtype, "--json", str(out)]
    if args.device == "cpu" and args.threads < (os.cpu_count() or 1):
        if shutil.which("taskset") is None:
            raise SystemExit("--glint with fewer --threads than CPUs needs taskset (util-linux) to pin glint")
        cmd = ["taskset", "-c", f"0-{args.threads - 1}"] + cmd
    print("running", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def print_side_by_side(report):
    torch_stages = report["stages"]
    glint_stages = {s["stage"]: s["median_ms"] / 1e3 for s in report["glint"]["stages"]}
    rows = [(s, s) for s in ["preprocess", *STAGES, "postprocess"]] + [("end_to_end", "total")]
    print(f"\n{'stage':<12} {'transformers':>13} {'glint':>10} {'glint/transformers':>19}")
    for torch_key, glint_key in rows:
        t, g = torch_stages[torch_key]["median_s"], glint_stages[glint_key]
        ratio = f"{g / t:.2f}x" if t > 0 else "-"
        print(f"{torch_key:<12} {t * 1e3:>11.1f}ms {g * 1e3:>8.1f}ms {ratio:>19}")
    glint_rss = report["glint"].get("peak_rss_mb")
    torch_rss = report["memory_bytes"]["peak_vmhwm"]
    if glint_rss is not None and torch_rss:
        print(f"{'peak RSS':<12} {torch_rss / 1e9:>11.2f}GB {glint_rss / 1e3:>8.2f}GB {glint_rss * 1e6 / torch_rss:>18.2f}x")
    print("glint's text stage is the prompt's encoding, which it keeps after the first run (0 ms after it).")


if __name__ == "__main__":
    main()
