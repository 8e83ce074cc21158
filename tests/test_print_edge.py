import numpy as np

from pipeline.detectors import print_edge


def photo_with(line_level: float, side_share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A mid-gray 120x160 photo whose right side has a 2-px line at `line_level`, 4 px in from
    the edge, along `side_share` of the side; the line is what a detector flagged."""
    gray = np.full((120, 160), 140, np.float32)
    mask = np.zeros(gray.shape, bool)
    rows = slice(0, int(120 * side_share))
    gray[rows, 154:156] = line_level
    mask[rows, 153:157] = True
    return mask, gray


def test_a_dark_line_along_most_of_a_side_is_the_prints_edge():
    mask, gray = photo_with(40.0)
    assert print_edge.edge_sides([mask], gray) == ["right"]
    assert (print_edge.along_sides(mask, ["right"]) == mask).all()


def test_a_light_strip_along_a_side_is_a_worn_edge_and_stays():
    mask, gray = photo_with(235.0)
    assert print_edge.edge_sides([mask], gray) == []


def test_dark_defects_along_a_short_stretch_of_a_side_stay():
    # Chips and cracks reach the edge here and there; 30% of a side is not an edge line.
    mask, gray = photo_with(40.0, side_share=0.3)
    assert print_edge.edge_sides([mask], gray) == []


def test_the_lid_beyond_an_edge_goes_with_it_and_damage_inside_stays():
    mask, gray = photo_with(40.0)
    mask[:, 158:] = True  # the lid beyond the line, light
    gray[:, 158:] = 230
    mask[50:53, 60:90] = True  # a crack well inside the print
    gray[50:53, 60:90] = 220
    edge = print_edge.along_sides(mask, print_edge.edge_sides([mask], gray))
    assert edge[:, 150:].sum() == mask[:, 150:].sum()
    assert not edge[:, :150].any()


def test_a_line_turning_a_corner_counts_for_both_sides():
    gray = np.full((120, 160), 140, np.float32)
    gray[:116, 154:156] = 40
    gray[114:116, :156] = 40
    mask = gray < 100
    assert print_edge.edge_sides([mask], gray) == ["bottom", "right"]


def test_a_side_counts_when_any_threshold_shows_its_edge_line():
    # At a keener threshold the line merged with a crack running in from it: as one defect it
    # no longer lies along the frame, but the stricter mask still shows the line.
    mask, gray = photo_with(40.0)
    merged = mask.copy()
    merged[60:63, 40:156] = True
    assert print_edge.edge_sides([merged], gray) == []
    assert print_edge.edge_sides([mask, merged], gray) == ["right"]
    edge = print_edge.along_sides(merged, ["right"])
    assert edge[:, 150:].sum() == merged[:, 150:].sum()  # the band is cleared all the same
    assert not edge[:, :140].any()  # the crack further in stays


def test_a_mask_far_from_every_side_cannot_show_an_edge_and_one_along_a_side_can():
    mask, _ = photo_with(40.0)
    assert print_edge.may_show_edge(mask)
    assert not print_edge.may_show_edge(np.roll(mask, -30, axis=1))
    # 46 of 120 rows, widened by the 2 px growth may add at its open end, reach 40%.
    short, _ = photo_with(40.0, side_share=0.385)
    assert not print_edge.may_show_edge(short)
    assert print_edge.may_show_edge(short, spread=2)


def test_a_crease_running_in_from_the_edge_line_stays_beyond_the_band():
    # One defect: the edge line along the whole side and a crease from it 40 px into the
    # print. By pixels (84%) it lies along the frame; only its part within BAND px is edge.
    mask, gray = photo_with(40.0)
    mask[40:43, 120:156] = True
    gray[40:43, 120:156] = 60
    edge = print_edge.along_sides(mask, ["right"])
    assert edge[:, 150:].sum() == mask[:, 150:].sum()
    assert not edge[:, :150].any()
    assert mask[:, :150].sum() == 90


def test_a_wavering_edge_line_goes_whole_where_it_strays_past_the_band():
    # The edge line bows 14 px in over 20 rows: a sliver beyond the band, still the edge.
    mask, gray = photo_with(40.0)
    mask[50:70, 142:156] = True
    gray[50:70, 142:156] = 40
    edge = print_edge.along_sides(mask, ["right"])
    assert (edge == mask).all()
