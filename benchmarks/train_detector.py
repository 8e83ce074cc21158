"""Train the `learned` damage detector on synthetic damage over clean photos that ship with
Python packages (scikit-image, matplotlib, and `pip install .[train]`: scikit-learn,
PyWavelets, mahotas), plus synthetic star fields.

Data recipe: each TRAIN_PHOTOS photo (and `--star-fields` fresh synthetic skies), rescaled at
random (scans come at many dpi), in half the cases JPEG-compressed (the photo's own artefacts
are not damage), in half the cases given rimmed objects (`rimmed_objects`: thin highlights and
shadows along an object's edge, which are picture), then damaged with
`pipeline.damage.add_damage` at TRAIN_DAMAGE (denser than a real print, same shapes and tones
as the benchmark's); fresh damage every POOL_STEPS steps. Batches are random CROP px crops,
flipped and turned, with brightness / contrast jitter and a little grain. The photos' own fine
detail (text, hair, stars, highlights on chrome, medals, coins, grass, gravel, craters, roads
seen from the air, railings, a drawn crowd, nuclei) is every undamaged pixel of a crop: the
hard negatives. The loss is per-pixel binary cross-entropy, damage weighted POSITIVE_WEIGHT (it
is rare), clean pixels the naive top-hat would flag weighted HARD_WEIGHT (precision where it is
hard), and a 1-px ring around each true defect ignored (the scanner's blur makes it neither).

The threshold is then picked on HOLDOUT_PHOTOS (photos the net never saw, damaged at the
benchmark's default `DamageParams`), with the shipped detector's scoring (averaged over flips
and turns): the best F1 among thresholds that flag at most MAX_CLEAN_FLAGGED of the undamaged
photos. The benchmark's EVAL_PHOTOS are never used here.

Reproducible on a CPU: fixed seeds, a fixed thread count. Writes pipeline/assets/damage_unet.npz
(a U-Net of widths WIDTHS, ~116k weights; the `combined` detector's print net,
damage_unet_print.npz, is round 9 below). The shipped weights (round 4) come from four rounds
on a 2-core machine (rounds 1-3: 2 threads, 0.3-0.37 s a step, 3653 s, 1232 s and 839 s;
round 4: 1 thread, two runs side by side, 0.41 s a step, 3319 s):

    python benchmarks/train_detector.py --steps 10000 --star-fields 0 --rims 0 --out round1.npz
    python benchmarks/train_detector.py --init round1.npz --steps 3000 --lr 1e-3 --rims 0 \
        --out round2.npz
    python benchmarks/train_detector.py --init round2.npz --steps 3000 --lr 1e-3 --out round3.npz
    python benchmarks/train_detector.py --init round3.npz --steps 8000 --lr 1e-3 \
        --faint-ignored --star-fields 6 --lines 0.3 --rings 0.3 --threads 1

Round 4 teaches three things round 3 got wrong, each as picture or as not-damage:
`--faint-ignored` (defects drawn too faint to count, which rounds 1-3 were taught as clean: two
thirds of the drawn pixels on a synthetic star field, so the net let faint scratches go),
`--lines` (braced lattices and glints: a launch tower's braces, a lamp's spikes) and `--rings`
(discs ringed by a thin line: eyes, buttons). Its calibrated threshold is 0.95, as round 3's.
It was adopted by a rule written before it was scored: clean eye rim (below) under 0.5,
tests/test_detect.py passing, the benchmark's targets held, and F1 at least round 3's + 0.02
on an extended held-out set (astronaut and china at 512 px plus three synthetic skies,
`star_field` seeds 9001-9003, damage seeds 0-2; `--extended-holdout`, and with `--steps 0
--init FILE` for a saved net): 0.691 against round 3's 0.603. Benchmark:
F1 0.652 -> 0.710, gain +6.21 -> +6.05 dB, worst undamaged photo 47.2 -> 45.8 dB (coffee).

How round 4 was found (all runs from round 3, 8000 steps, lr 1e-3): `--faint-ignored
--star-fields 6` alone finds the benchmark's faint scratch on hubble_deep_field and the one
through chelsea's fur, but flags two braced tower legs and a lamp's glare spikes on rocket
(1.24% of the clean photo). Adding `--lines 0.3` leaves the towers alone and reaches F1 0.705
at 0.95, but a dust speck on chelsea's eye rim then grows (hysteresis) into the whole rim, and
a bright wire across chelsea is partly flagged (two test failures). The clean eye rim's score
(95th percentile; chelsea at 384 px, rows 85:127, cols 114:160) is 0.33 with round 3, 0.53
after `--faint-ignored --star-fields 6`, 0.82 with the lattices and glints and 0.81 with
FAINT_WEIGHT 0.3 as well: straight lines taught as picture left curvature as the net's cue
for damage. With `--rings 0.3` it is 0.21 and both tests pass; `--rings 0.6` (0.25) fails the
dust and twice-the-dpi tests on recall (0.39, 0.68) and scores lower on the extended held-out
(0.664, at its calibrated threshold 0.97).
(Whole-frame wires as picture lines were tried too: the net then let long scratches go.)

Round 5, not shipped: one view instead of eight (8x less to score). `--distil` teaches a net
(started from round 4) to give in one view round 4's average over all eight, matching log-odds
on the round-4 recipe's crops:

    python benchmarks/train_detector.py --distil pipeline/assets/damage_unet.npz --steps 2400 \
        --lr 1e-3 --faint-ignored --star-fields 6 --lines 0.3 --rings 0.3 --threads 2 \
        --extended-holdout --out round5.npz

(2584 s; calibrated threshold 0.9, held-out F1 0.677, extended held-out 0.680 against round
4's 0.691.) It was judged by a rule written before it was scored (the detector tests passing
unchanged, extended held-out F1 at least 0.671, the benchmark's targets held, at most 2 CPU s
per MP) and failed it: a bright wire across chelsea is flagged in part and the sensitivity
test's F1 at 0.5 falls to 0.80 (0.85 asked); on the benchmark F1 0.710 -> 0.609, undamaged
photos flagged 0.06% -> 0.29% (coffee 1.13%, back through `--masks auto` at 33.8 dB instead of
45.8), at 1.2 instead of 8.7 CPU s per MP. What the eight views steady, one view of a net this
small does not learn from 2400 steps of its teacher.

Round 6, not shipped: a net for prints. `--prints 0.5` makes half the damaged photos old prints
with their damage (`pipeline.damage.add_print_damage`, the undamaged twin's own detail the hard
negatives), continued from round 4:

    python benchmarks/train_detector.py --init pipeline/assets/damage_unet.npz --steps 3000 \
        --lr 1e-3 --faint-ignored --star-fields 6 --lines 0.3 --rings 0.3 --prints 0.5 \
        --threads 2 --out round6.npz

(790 s on this machine, 0.27 s a step; its digital calibration picks 0.97, held-out F1 0.556
against round 4's 0.735, so it is no replacement for round 4 on digital photos.) Scored as
`auto` would score a print with it, at 0.9 (the best held-out F1 among thresholds flagging at
most MAX_CLEAN_FLAGGED of the undamaged held-out prints, astronaut and china made prints,
seeds 0-2: F1 0.826, 0.018% flagged), against `verified`, which `auto` runs on prints:
- synthetic print benchmark (`detect.py --damage print`, photos never trained on): F1 0.772
  (`verified` 0.592), detect-then-fill +3.3 dB (+2.3), but undamaged prints flagged 0.92%
  (0.56%; the launch towers 3.2%, the cup 1.9%) and the worst back at 32.5 dB (34.5);
- the four real prints (benchmarks/real): pooled 0.70 / 0.77 (`verified` at 0.5:
  0.98 / 0.39); with `verified`'s print-edge rule 0.90 / 0.54, F1 0.68 (0.56), but the
  woman's print (a) only 0.99 / 0.22 (`verified` 0.99 / 0.32);
- eight real undamaged gray and toned portraits (`detect_clean_real.py`'s): at most 0.03%;
- the picture cases of tests/test_monochrome.py made gray / sepia: eyelashes, railings and
  eaves at most 0.54%, a wide light lid 0% (`verified` 45%), but a frame line and mount edges
  6.0% / 4.5%, the launch towers 3.3% / 3.6%, a cup's highlights 2.8% / 2.4% and a white
  caption 16% / 14%.
It was judged by a rule written before it was scored (real pooled F1 above `verified`'s with
precision at least 0.85 and no print's F1 more than 0.05 below `verified`'s; synthetic print F1
above `verified`'s with undamaged prints flagged no more; no picture case that passes failing)
and failed it on the woman's print, the undamaged synthetic prints and the picture cases. It
is the strongest lead for prints so far: a print-trained net finds the crackle and cracks the
verifier misses; what it lacks is picture like frame lines and lettering drawn into training.

Rounds 7 and 8, not shipped, and round 9, shipped only as `combined`'s second judge; 7 and 8
both continued from round 6 for 3000 steps at lr 1e-3 with the round-4 flags, one thread
each, side by side (1289 s and 1233 s), judged as round 6 was (the threshold picked the same
way, with the print-edge rule, on the held-out prints: 0.9 for both):
- round 7, `--prints 0.8 --seed 1`: held-out prints F1 0.829; real 0.92 / 0.54 (F1 0.68; the
  woman's print 1.00 / 0.21); real undamaged portraits at most 0.03%; picture cases as round 6
  (frame line 6.5% / 2.9%, caption 17% / 12%). More print share changed nothing.
- round 8, `--prints 0.5 --frames 0.2 --captions 0.25 --seed 2` (mounts with frame lines and
  random lettering drawn in as picture: `mounted`, `lettered`): held-out prints F1 0.793;
  real 0.92 / 0.55 (F1 0.69; the woman's 1.00 / 0.21, the couple's 0.88 / 0.87); real
  undamaged portraits at most 0.02%; frame line 2.6% / 1.4% and caption 11% / 8% (half and
  two thirds of round 6's), towers 4.0% / 3.7%, cup 2.9% / 1.8%; on the synthetic print
  benchmark F1 0.770, +3.3 dB, undamaged prints 0.84% flagged (towers 3.1%, cup 1.6%), worst
  33.3 dB, 3.6 CPU s per MP (a benchmark on the other core). Still failing the rule on the
  woman's print, the undamaged prints and the picture cases. (The frame and caption test
  cases were written before these draws and are not drawn from them, but their failure chose
  them.)
- round 9, from round 8, `--prints 0.5 --frames 0.3 --captions 0.4 --lines 0.6 --seed 3`,
  two threads (856 s): its threshold is 0.8 (held-out prints F1 0.821, 0.18% flagged); real
  0.86 / 0.58 (F1 0.69), the girl's print found for the first time (0.54 / 0.49, its right
  crease) but the woman's still 1.00 / 0.20; real undamaged portraits at most 0.09%; synthetic
  print benchmark F1 0.776, +3.4 dB, but 1.29% of the undamaged prints flagged (towers 4.3%,
  cup 2.4%), worst 32.4 dB; railings 1.0%, frame line 2.8%, caption 12%, towers 3.0%, cup
  3.4% (gray). Twice the lattices made the towers no better. Not shipped as a detector of its
  own, but now the second judge of `combined` (`pipeline/detectors/combined.py`:
  `verified`'s candidates, the verifier's log-odds plus half the net's, one view), shipped as
  `pipeline/assets/damage_unet_print.npz`. Its commands, from the shipped round-4 net:

    python benchmarks/train_detector.py --init pipeline/assets/damage_unet.npz --steps 3000 \
        --lr 1e-3 --faint-ignored --star-fields 6 --lines 0.3 --rings 0.3 --prints 0.5 \
        --threads 2 --out round6.npz
    python benchmarks/train_detector.py --init round6.npz --steps 3000 --lr 1e-3 \
        --faint-ignored --star-fields 6 --lines 0.3 --rings 0.3 --prints 0.5 --frames 0.2 \
        --captions 0.25 --seed 2 --threads 1 --out round8.npz
    python benchmarks/train_detector.py --init round8.npz --steps 3000 --lr 1e-3 \
        --faint-ignored --star-fields 6 --lines 0.6 --rings 0.3 --prints 0.5 --frames 0.3 \
        --captions 0.4 --seed 3 --threads 2 --out pipeline/assets/damage_unet_print.npz

  (3826 s in all on a 2-core machine shared with other jobs; all three files came out byte for
  byte as first trained, the shipped one sha256 672f5e7b4143fad1…. The threshold written into
  it, picked on digital held-out photos, is not used there.)
What a person sees on the couple's print (round 8): the crack network filled nearly
everywhere, but the two round buttons, part of the collar insignia and an edge of the man's
hair painted away too.
What the woman's print loses: its worn light edges and the many faint short light scratches on
the dark dress and curtain, which no round finds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from photos import load_photo

from pipeline.damage import (
    SUPERSAMPLE,
    Damage,
    DamageParams,
    add_damage,
    add_print_damage,
    mask_scores,
    outline_coverage,
)
from pipeline.detectors.learned import (
    VIEWS,
    WEIGHTS_FILE,
    build_net,
    for_inference,
    net_from_weights,
    net_input,
    net_probability,
    view_score,
    without_picture_lines,
)
from pipeline.detectors.maps import float_image, hysteresis
from pipeline.detectors.tophat import tophat_response

# Grey and colour photos with fine detail a detector must leave alone: text, coins,
# grass and gravel texture, a face with hair, craters, a motorbike's chrome, a horse's
# silhouette, a uniform's braid and medals (grace_hopper ships with matplotlib).
TRAIN_PHOTOS = ("brick", "camera", "cell", "clock", "coins", "colorwheel", "grass", "gravel",
                "logo", "moon", "page", "text", "grace_hopper", "motorcycle", "horse",
                "flower", "aero", "ascent", "department_store", "nuclear", "luispedro")
# Held out of training, used only to pick the threshold: a face, a flag's stars and stripes,
# a spacesuit's highlights; a pagoda's eaves and railings, a lake's glitter.
HOLDOUT_PHOTOS = ("astronaut", "china")
EVAL_PHOTOS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
               "immunohistochemistry")
# Denser than a real print, so that each crop carries defects to learn from.
TRAIN_DAMAGE = DamageParams(scratches=(3, 8), hairs=(1, 4), dust=(40, 120))
WIDTHS = (12, 24, 32, 48)
CROP = 128
BATCH = 8
POOL_STEPS = 100
VARIANTS = 3
SCALES = (0.4, 1.15)
# Damage is ~1-2% of the pixels: its weight balances the classes so the net learns it at
# all; picture detail that a top-hat takes for damage (HARD_DETAIL) weighs HARD_WEIGHT times
# an ordinary clean pixel, to teach precision where it is hard.
POSITIVE_WEIGHT = 8.0
HARD_DETAIL = 0.08
HARD_WEIGHT = 3.0
# With --faint-ignored: what a clean pixel under a too-faint defect weighs (0: out of the loss).
FAINT_WEIGHT = 0.0
MAX_CLEAN_FLAGGED = 0.002
HOLDOUT_SIDE = 512
# Synthetic skies for the extended held-out check (seeds no training run draws).
EXTENDED_SKIES = (9001, 9002, 9003)
CHECKPOINT_STEPS = 500


def resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    size = (max(CROP, round(rgb.shape[1] * scale)), max(CROP, round(rgb.shape[0] * scale)))
    shrink = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)


def hard_detail(rgb: np.ndarray) -> np.ndarray:
    """Where the clean photo has specks and lines of its own: what a naive top-hat flags."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    return tophat_response(gray) > HARD_DETAIL


def star_field(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    """A synthetic sky (8-bit RGB): hundreds of stars blurred by the optics, some tinted, a
    few small galaxies, on a dark, noisy, uneven background. No scikit-image photo has a
    field of point sources, and without one the net takes every star for a speck of dust."""
    background = rng.uniform(0.01, 0.12) + rng.uniform(-0.03, 0.03) * np.linspace(-1, 1, side)
    sky = np.broadcast_to(background[:, None, None], (side, side, 3)).astype(np.float32)
    for sigma in (0.6, 0.9, 1.3, 1.9, 2.8):
        impulses = np.zeros((side, side, 3), np.float32)
        count = int(rng.uniform(60, 300))
        rows, cols = rng.integers(0, side, count), rng.integers(0, side, count)
        brightness = np.exp(rng.uniform(np.log(0.06), 0, count))[:, None]
        tint = 1 - rng.uniform(0, 0.6, (count, 1)) * (1 - rng.random((count, 3)))
        # Scaled so that a star's peak, after the blur, is its brightness.
        impulses[rows, cols] = brightness * tint * 2 * np.pi * sigma**2
        sky = sky + cv2.GaussianBlur(impulses, (0, 0), sigma)
    galaxies = np.zeros((side, side, 3), np.float32)
    for _ in range(int(rng.integers(5, 30))):
        centre = tuple(int(v) for v in rng.integers(0, side, 2))
        axes = tuple(int(v) for v in rng.integers(1, 7, 2))
        colour = tuple(float(v) for v in rng.uniform(0.1, 0.6, 3))
        cv2.ellipse(galaxies, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    sky = sky + cv2.GaussianBlur(galaxies, (0, 0), 1.5)
    sky = sky + rng.normal(0, rng.uniform(0.004, 0.015), sky.shape).astype(np.float32)
    return np.clip(np.rint(sky * 255), 0, 255).astype(np.uint8)


def rimmed_objects(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo with one to three rounded objects drawn in before any damage, each with a
    thin bright, dark or coloured rim along part of its edge: a saucer's highlight, a cup's
    contact shadow, a lamp's or a car's chrome. The packaged photos hold few such rims, and
    without them the net took them for scratches; they are picture, so they stay unflagged
    (and weigh HARD_WEIGHT, as a top-hat flags them)."""
    pixels = rgb.astype(np.float32) / 255
    for _ in range(int(rng.integers(1, 4))):
        pixels = _rimmed_object(pixels, rng)
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)


def _rimmed_object(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ellipse in a shaded colour of its own, and a rim 1-3 px inside part of its edge."""
    height, width = pixels.shape[:2]
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    axes = rng.uniform(0.04, 0.2, 2) * max(height, width)
    angle = rng.uniform(0, 180)
    body = _soft_ellipse(height, width, centre, axes, angle)
    colour = np.float32(rng.uniform(0.05, 0.8, 3))
    shade = np.linspace(0.7, 1.1, height, dtype=np.float32)[:, None, None]
    pixels = pixels * (1 - body) + np.clip(colour * shade, 0, 1) * body
    start = rng.uniform(0, 360)
    arc = np.radians(np.linspace(start, start + rng.uniform(40, 200), 64))
    inset = rng.uniform(1, 3)
    return _draw_rim(pixels, _ellipse_points(centre, axes - inset, angle, arc), rng)


def _soft_ellipse(height: int, width: int, centre, axes, angle: float) -> np.ndarray:
    """HxWx1 coverage of a filled ellipse (whole-pixel centre and axes), softened by the lens."""
    body = np.zeros((height, width), np.float32)
    cv2.ellipse(body, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle,
                0, 360, 1.0, -1, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(body, (0, 0), 0.7)[:, :, None]


def _ellipse_points(centre: np.ndarray, axes, angle: float, arc: np.ndarray) -> np.ndarray:
    """Points at angles `arc` (radians) on an ellipse turned by `angle` degrees."""
    points = np.stack([axes[0] * np.cos(arc), axes[1] * np.sin(arc)], 1)
    turn = np.radians(angle)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return centre + points @ rotation.T


def _draw_rim(pixels: np.ndarray, points: np.ndarray, rng: np.random.Generator,
              widths: tuple[float, float] = (1.0, 2.0)) -> np.ndarray:
    """A polyline `widths` px wide (4x supersampled, then the lens's blur) in a picture tone."""
    height, width = pixels.shape[:2]
    thickness = max(1, int(round(rng.uniform(*widths) * SUPERSAMPLE)))
    coverage = np.zeros((height, width), np.float32)
    shape, box = outline_coverage(points * SUPERSAMPLE, thickness, height, width)
    coverage[box] = shape
    alpha = cv2.GaussianBlur(coverage, (0, 0), rng.uniform(0.4, 0.9))
    tone = _picture_tone(pixels, rng)
    return pixels * (1 - alpha[:, :, None]) + tone * alpha[:, :, None]


def ringed_discs(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo with one to four small discs drawn in before any damage, each ringed by a
    thin dark or bright line along most of its edge: an eye and its lid's rim, a button, a
    wheel, a cup seen from above. Picture lines that are only straight taught the net that a
    thin *curved* line is damage (a cat's eye rim scored 0.82); these are curved and picture."""
    pixels = rgb.astype(np.float32) / 255
    for _ in range(int(rng.integers(1, 5))):
        pixels = _ringed_disc(pixels, rng)
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)


def _ringed_disc(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ellipse 8-80 px across in a flat colour, half the time with a darker pupil, and a
    ring 1-3.5 px wide on its edge over 240-360 degrees."""
    height, width = pixels.shape[:2]
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    radius = np.exp(rng.uniform(np.log(4), np.log(40)))
    axes = radius * np.array([1.0, rng.uniform(0.55, 1.0)])
    angle = rng.uniform(0, 180)
    body = _soft_ellipse(height, width, centre, axes, angle)
    colour = np.float32(rng.uniform(0.05, 0.9, 3))
    pixels = pixels * (1 - body) + colour * body
    if rng.random() < 0.5:
        inner = [max(1, int(v * rng.uniform(0.2, 0.6))) for v in axes]
        pupil = _soft_ellipse(height, width, centre, inner, angle)
        pixels = pixels * (1 - pupil) + colour * rng.uniform(0.0, 0.4) * pupil
    start = rng.uniform(0, 360)
    arc = np.radians(np.linspace(start, start + rng.uniform(240, 360), 96))
    return _draw_rim(pixels, _ellipse_points(centre, axes, angle, arc), rng, widths=(1.0, 3.5))


def picture_lines(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo with one to four thin straight structures drawn in before any damage, each a
    braced lattice (a tower's legs and their zig-zag braces) or a glint's spikes (a lamp or a
    star through the lens). They are picture, and without them the net took a launch tower's
    braces and a lamp's spikes for scratches. (Whole-frame wires were tried too: the net then
    also let long scratches go, and detect-then-fill fell to +5.2 dB.)"""
    pixels = rgb.astype(np.float32) / 255
    for _ in range(int(rng.integers(1, 5))):
        pixels = (_lattice if rng.random() < 0.5 else _glint)(pixels, rng)
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)


def _lattice(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two parallel legs and the zig-zag braces between them, all straight, in one tone."""
    height, width = pixels.shape[:2]
    length = rng.uniform(0.2, 0.6) * max(height, width)
    gap = rng.uniform(8, 40)
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    heading = rng.uniform(0, np.pi)
    direction = np.array([np.cos(heading), np.sin(heading)])
    normal = np.array([-direction[1], direction[0]]) * gap
    bays = max(2, int(length / (gap * rng.uniform(0.8, 2.0))))
    steps = np.linspace(0, length, bays + 1)
    zigzag = np.array([start + step * direction + (i % 2) * normal
                       for i, step in enumerate(steps)])
    legs = [np.array([start, start + length * direction]) + offset for offset in (0, normal)]
    # Each line replays the same draws: one tone, width and blur for the whole lattice.
    tone_seed = int(rng.integers(2**31))
    for line in (*legs, zigzag):
        pixels = _draw_rim(pixels, line, np.random.default_rng(tone_seed))
    return pixels


def _glint(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bright point with four to eight thin spikes that fade outwards."""
    height, width = pixels.shape[:2]
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    reach = rng.uniform(6, 40)
    start = rng.uniform(0, np.pi)
    spikes = int(rng.integers(2, 5))
    glow = np.zeros((height, width), np.float32)
    for angle in start + np.arange(spikes) * np.pi / spikes:
        tip = np.array([np.cos(angle), np.sin(angle)]) * reach * rng.uniform(0.6, 1.0)
        for part in np.linspace(0, 1, 8, endpoint=False):
            # Each eighth of the spike a little fainter: a diffraction spike fades out.
            ends = (centre + tip * part, centre + tip * (part + 1 / 8))
            for sign in (1, -1):
                a, b = (tuple(int(v) for v in centre + sign * (end - centre)) for end in ends)
                cv2.line(glow, a, b, float(1 - part), 1, cv2.LINE_AA)
    cv2.circle(glow, tuple(int(v) for v in centre), int(rng.integers(1, 4)), 1.0, -1,
               cv2.LINE_AA)
    alpha = cv2.GaussianBlur(glow, (0, 0), rng.uniform(0.4, 0.9))[:, :, None]
    tone = np.float32(rng.uniform(0.85, 1.0, 3))
    return pixels * (1 - alpha) + tone * alpha


def mounted(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo on a mount 8-40 px wide (light card, or dark), with a thin frame line 1-3 px
    wide 0-6 px out from the photo's edge, as prints are kept in albums and passe-partouts.
    Picture: without it a print-trained net took a frame line for a scratch."""
    margin = int(rng.integers(8, 41))
    card = np.float32(rng.uniform(0.75, 0.97) if rng.random() < 0.7 else rng.uniform(0.03, 0.2))
    tint = np.float32(rng.uniform(0.93, 1.0, 3))
    out = np.empty((rgb.shape[0] + 2 * margin, rgb.shape[1] + 2 * margin, 3), np.float32)
    out[:] = card * tint
    out[margin:-margin, margin:-margin] = rgb.astype(np.float32) / 255
    gap, thickness = int(rng.integers(0, min(7, margin - 2))), int(rng.integers(1, 4))
    tone = tuple(float(v) for v in _picture_tone(out, rng))
    corner = margin - gap - thickness
    cv2.rectangle(out, (corner, corner), (out.shape[1] - 1 - corner, out.shape[0] - 1 - corner),
                  tone, thickness, cv2.LINE_AA)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.8))
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,-'/"
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_ITALIC)


def lettered(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo with one to three lines of random lettering written on it (a caption, a
    studio's name, a date), light, dark or in a colour of the photo, 0.3-1.2 of a Hershey
    font's size. Picture: without it a print-trained net took a caption's strokes for
    cracks."""
    out = np.ascontiguousarray(rgb[:, :, :3], np.uint8)  # OpenCV writes text on 8 bits only
    height, width = out.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        text = "".join(rng.choice(list(LETTERS), int(rng.integers(4, 28))))
        font, scale = FONTS[int(rng.integers(len(FONTS)))], rng.uniform(0.3, 1.2)
        origin = (int(rng.integers(0, max(1, width - 40))), int(rng.integers(15, height)))
        tone = tuple(float(v) * 255 for v in _picture_tone(out.astype(np.float32) / 255, rng))
        cv2.putText(out, text, origin, font, scale, tone, int(rng.integers(1, 3)), cv2.LINE_AA)
    return cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.7))


def _picture_tone(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shadow's near-black, a highlight's near-white (both slightly tinted), or a colour
    taken from the photo itself."""
    choice = rng.random()
    if choice < 0.4:
        return np.float32(rng.uniform(0.0, 0.2, 3))
    if choice < 0.7:
        return np.float32(rng.uniform(0.8, 1.0, 3))
    return pixels.reshape(-1, 3)[int(rng.integers(pixels.shape[0] * pixels.shape[1]))]


def damaged_pool(photos: list[np.ndarray], rng: np.random.Generator,
                 star_fields: int, rims: float = 0.0, faint_ignored: bool = False,
                 lines: float = 0.0, rings: float = 0.0, prints: float = 0.0,
                 frames: float = 0.0, captions: float = 0.0) -> list[tuple]:
    """(damaged float RGB, target, weight) for VARIANTS fresh copies of every photo and of
    `star_fields` new synthetic skies, a share `rims` of them with rimmed objects, a share
    `lines` with picture lines and a share `rings` with ringed discs; a share `prints` made
    old prints with their damage (`add_print_damage`), the rest given a digital photo's; a
    share `frames` mounted with a frame line and a share `captions` lettered."""
    pool = []
    for rgb in [*photos, *(star_field(rng) for _ in range(star_fields))]:
        for _ in range(VARIANTS):
            scan = resized(rgb, rng.uniform(*SCALES))
            # No draw without rims: rounds 1 and 2 of the shipped net took none.
            if rims and rng.random() < rims:
                scan = rimmed_objects(scan, rng)
            # No draw without lines either: rounds 1-3 took none.
            if lines and rng.random() < lines:
                scan = picture_lines(scan, rng)
            if rings and rng.random() < rings:
                scan = ringed_discs(scan, rng)
            # Nor without frames and captions: rounds 1-6 took none.
            if frames and rng.random() < frames:
                scan = mounted(scan, rng)
            if captions and rng.random() < captions:
                scan = lettered(scan, rng)
            # No draw without prints: rounds 1-4 took none.
            if prints and rng.random() < prints:
                # The print scans itself (JPEG included); its undamaged twin holds the grain
                # and picture that are not damage.
                damage = add_print_damage(scan, seed=int(rng.integers(2**31)))
                negative = np.where(hard_detail(damage.clean), HARD_WEIGHT, 1.0)
            else:
                if rng.random() < 0.5:
                    scan = jpeg(scan, int(rng.integers(60, 96)))
                damage = add_damage(scan, seed=int(rng.integers(2**31)), params=TRAIN_DAMAGE)
                negative = np.where(hard_detail(scan), HARD_WEIGHT, 1.0)
            ring = blur_ring(damage.mask)
            faint = too_faint(damage, ring) if faint_ignored else np.zeros_like(ring)
            clean = np.where(faint, FAINT_WEIGHT * negative, negative)
            weight = np.where(damage.mask, POSITIVE_WEIGHT, np.where(ring, 0.0, clean))
            pool.append((float_image(damage.image), damage.mask.astype(np.float32),
                         weight.astype(np.float32)))
    return pool


def blur_ring(mask: np.ndarray) -> np.ndarray:
    """`mask` and the 1-px ring the scanner's blur smears around it: neither damage nor clean,
    so out of the loss."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def too_faint(damage: Damage, ring: np.ndarray) -> np.ndarray:
    """Pixels of a defect drawn too faint to count as damage (a dark one on a dark sky changes
    its pixels by less than MIN_CHANGE), with their own ring, outside the true defects' `ring`."""
    return blur_ring(damage.coverage > 0) & ~ring


def crop_batch(pool: list[tuple], rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """BATCH random crops, flipped / turned, with exposure jitter and grain."""
    inputs, targets, weights = [], [], []
    for _ in range(BATCH):
        pixels, target, weight = pool[int(rng.integers(len(pool)))]
        top = int(rng.integers(pixels.shape[0] - CROP + 1))
        left = int(rng.integers(pixels.shape[1] - CROP + 1))
        window = (slice(top, top + CROP), slice(left, left + CROP))
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        arrays = []
        for array in (pixels[window], target[window], weight[window]):
            array = np.rot90(array, turns)
            arrays.append(np.ascontiguousarray(array[:, ::-1] if flip else array))
        rgb = arrays[0][:, :, rng.permutation(3)]
        mid = rgb.mean()
        rgb = (rgb - mid) * rng.uniform(0.7, 1.2) + mid + rng.uniform(-0.08, 0.08)
        rgb = rgb + rng.normal(0, rng.uniform(0, 0.012), rgb.shape).astype(np.float32)
        inputs.append(net_input(np.clip(rgb, 0, 1)))
        targets.append(arrays[1][None])
        weights.append(arrays[2][None])
    return tuple(torch.from_numpy(np.stack(a)) for a in (inputs, targets, weights))


def initialised(net: torch.nn.Module) -> torch.nn.Module:
    """He-initialised convs (PyTorch's default shrinks the signal layer by layer: the net
    learned nothing), the output's bias at the prior odds of damage."""
    for conv in net.modules():
        if isinstance(conv, torch.nn.Conv2d) and conv is not net.head:
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
    torch.nn.init.normal_(net.head.weight, 0, 0.01)
    torch.nn.init.constant_(net.head.bias, -4.0)
    return net


def loaded(path: str) -> torch.nn.Module:
    with np.load(path) as saved:
        return net_from_weights(saved)


def train_net(steps: int, seed: int, lr: float, init: str | None = None,
              checkpoint: str | None = None, star_fields: int = 2,
              rims: float = 0.5, faint_ignored: bool = False,
              lines: float = 0.0, rings: float = 0.0,
              teacher: torch.nn.Module | None = None, prints: float = 0.0,
              frames: float = 0.0, captions: float = 0.0) -> torch.nn.Module:
    """The net after `steps` of Adam on fresh crops: taught the true masks, or with a
    `teacher`, to give in one view the teacher's average over all VIEWS (`--distil`)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    photos = [load_photo(name) for name in TRAIN_PHOTOS]
    net = initialised(build_net(WIDTHS))
    if init:
        net.load_state_dict(loaded(init).state_dict())
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    started, running = time.time(), []
    for step in range(steps):
        if step % POOL_STEPS == 0:
            pool = damaged_pool(photos, rng, star_fields, rims, faint_ignored, lines, rings,
                                prints, frames, captions)
        inputs, targets, weights = crop_batch(pool, rng)
        if teacher is None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(inputs), targets, weights, reduction="sum") / weights.sum()
        else:
            loss = distillation_loss(net(inputs), views_average(teacher, inputs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"step {step + 1} loss {np.mean(running):.4f} "
                  f"({time.time() - started:.0f}s)", flush=True)
            running = []
        if checkpoint and (step + 1) % CHECKPOINT_STEPS == 0:
            save(net, checkpoint, threshold=0.5, views=len(VIEWS) if teacher is None else 1)
    return net.eval()


# Distillation matches log-odds, clipped to DISTIL_LOGITS: the thresholds that matter (the
# calibrated 0.95 and its hysteresis half, and sensitivity's shifts of them) lie well inside,
# and a pixel both nets call surely clean costs nothing. Pixels the teacher scores above
# DISTIL_DAMAGE (rare, and where the mask is decided) weigh POSITIVE_WEIGHT.
DISTIL_LOGITS = (-6.0, 8.0)
DISTIL_DAMAGE = 0.2


def views_average(teacher: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The teacher's sigmoid averaged over VIEWS, on each crop as the student sees it."""
    with torch.no_grad():
        return sum(view_score(teacher, inputs, view) for view in VIEWS) / len(VIEWS)


def distillation_loss(logits: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
    """Weighted squared error between the student's log-odds and the teacher's (clipped)."""
    low, high = DISTIL_LOGITS
    target = torch.logit(average.clamp(1e-6, 1 - 1e-6)).clamp(low, high)
    error = torch.where((target <= low) & (logits <= low), 0.0, logits.clamp(max=high) - target)
    weight = torch.where(average > DISTIL_DAMAGE, POSITIVE_WEIGHT, 1.0)
    return (weight * error**2).sum() / weight.sum()


def holdout_photos() -> list[np.ndarray]:
    photos = []
    for name in HOLDOUT_PHOTOS:
        rgb = load_photo(name)
        photos.append(resized(rgb, HOLDOUT_SIDE / max(rgb.shape[:2])))
    return photos


def probability(net: torch.nn.Module, pixels: np.ndarray, views=VIEWS) -> np.ndarray:
    """Scores as the shipped detector computes them (averaged over `views`: all flips and
    turns, or the first alone for a distilled net)."""
    return net_probability(net.eval(), pixels, views=views)


def calibrate(net: torch.nn.Module, seeds=(0, 1, 2), views=VIEWS) -> float:
    """The threshold with the best F1 on the held-out photos at the benchmark's damage,
    among those flagging at most MAX_CLEAN_FLAGGED of the undamaged photos."""
    cleans, runs = [], []
    for photo in holdout_photos():
        cleans.append(probability(net, float_image(photo), views))
        for seed in seeds:
            damage = add_damage(photo, seed=seed)
            runs.append((probability(net, float_image(damage.image), views), damage.mask))
    best, best_f1 = 0.99, -1.0
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999):
        flagged = np.mean([hysteresis(c, threshold / 2, threshold).mean() for c in cleans])
        f1 = np.mean([mask_scores(hysteresis(p, threshold / 2, threshold), t)["f1"]
                      for p, t in runs])
        print(f"threshold {threshold}: held-out F1 {f1:.3f}, clean flagged {flagged:.3%}",
              flush=True)
        if flagged <= MAX_CLEAN_FLAGGED and f1 > best_f1:
            best, best_f1 = threshold, float(f1)
    return best


def extended_holdout(net: torch.nn.Module, threshold: float, seeds=(0, 1, 2),
                     views=VIEWS) -> float:
    """Mean F1, as the shipped detector masks, over the held-out photos and EXTENDED_SKIES at
    the benchmark's damage: the check round 4 was adopted by (round 3: 0.603, round 4: 0.691).
    Kept out of `calibrate`, so that the recipes above still reproduce their thresholds."""
    images = dict(zip(HOLDOUT_PHOTOS, holdout_photos(), strict=True))
    images.update({f"sky {seed}": star_field(np.random.default_rng(seed))
                   for seed in EXTENDED_SKIES})
    scores = []
    for name, image in images.items():
        clean = detected(net, image, threshold, views)
        f1s = []
        for seed in seeds:
            damage = add_damage(image, seed=seed)
            f1s.append(mask_scores(detected(net, damage.image, threshold, views),
                                   damage.mask)["f1"])
        print(f"extended held-out {name}: F1 {np.mean(f1s):.3f}, clean flagged "
              f"{clean.mean():.3%}", flush=True)
        scores.extend(f1s)
    return float(np.mean(scores))


def detected(net: torch.nn.Module, image: np.ndarray, threshold: float,
             views=VIEWS) -> np.ndarray:
    """The mask the shipped detector would give with this net and threshold (sensitivity 0.5)."""
    score = probability(net, float_image(image), views)
    return without_picture_lines(hysteresis(score, threshold / 2, threshold))


def save(net: torch.nn.Module, path: str, threshold: float, views: int = len(VIEWS)) -> None:
    # Batch-norm's step counter stays an integer; everything else is float32. A distilled
    # net's file names how many views it is scored in (the detector reads it).
    weights = {f"net.{name}": value.detach().numpy() for name, value in net.state_dict().items()}
    extra = {} if views == len(VIEWS) else {"views": np.int32(views)}
    np.savez_compressed(path, **weights, widths=np.int32(WIDTHS),
                        threshold=np.float32(threshold), **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3, help="Peak learning rate.")
    parser.add_argument("--init", help="Continue from this weights file (second round); "
                        "with --steps 0, only pick its threshold again.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--star-fields", type=int, default=2,
                        help="Synthetic skies added to each pool of damaged photos.")
    parser.add_argument("--rims", type=float, default=0.5,
                        help="Share of damaged photos given rimmed objects before their damage.")
    parser.add_argument("--faint-ignored", action="store_true",
                        help="Leave damage drawn too faint to count out of the loss "
                        "(round 4).")
    parser.add_argument("--lines", type=float, default=0.0,
                        help="Share of damaged photos given picture lines (braced lattices, "
                        "glints) before their damage (round 4).")
    parser.add_argument("--rings", type=float, default=0.0,
                        help="Share of damaged photos given ringed discs (eyes, buttons, "
                        "wheels) before their damage (round 4).")
    parser.add_argument("--prints", type=float, default=0.0,
                        help="Share of damaged photos made old prints with print damage "
                        "(`add_print_damage`) instead of a digital photo's damage.")
    parser.add_argument("--frames", type=float, default=0.0,
                        help="Share of damaged photos mounted with a frame line (picture).")
    parser.add_argument("--captions", type=float, default=0.0,
                        help="Share of damaged photos given lines of lettering (picture).")
    parser.add_argument("--extended-holdout", action="store_true",
                        help="Also report F1 on the held-out photos plus synthetic skies "
                        "at the picked threshold (the check round 4 was adopted by).")
    parser.add_argument("--distil", metavar="TEACHER",
                        help="Teach the net (from --init, else from TEACHER) to give in one "
                        "view TEACHER's average over all flips and turns (round 5); it is then "
                        "calibrated and shipped as scored in one view.")
    parser.add_argument("--checkpoint", help="Save the net here every CHECKPOINT_STEPS steps.")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "pipeline" / "assets"
                                             / WEIGHTS_FILE))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    started = time.time()
    teacher = for_inference(loaded(args.distil)) if args.distil else None
    views = VIEWS[:1] if args.distil else VIEWS
    if args.steps:
        net = train_net(args.steps, args.seed, args.lr, args.init or args.distil,
                        args.checkpoint, args.star_fields, args.rims, args.faint_ignored,
                        args.lines, args.rings, teacher, args.prints, args.frames,
                        args.captions)
    else:
        net = loaded(args.init)
    threshold = calibrate(net, views=views)
    save(net, args.out, threshold, len(views))
    if args.extended_holdout:
        print(f"extended held-out F1 {extended_holdout(net, threshold, views=views):.3f}",
              flush=True)
    print(f"threshold {threshold}; wrote {args.out} ({Path(args.out).stat().st_size} bytes) "
          f"in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
