"""A population's measured statistics against the published values it was built from.

Each Target names a statistic, the published value it should match (or the value derived from
published numbers, as galaxy_model.populations explains), the tolerance it must be within and
the source. `compare(population, n, seed)` measures every statistic on the parameters the
generator draws for n scenes (synth.scene_parameters: the same scenes synthesize renders) and
says which fall within their tolerances. experiments/gz_population.py writes the table; the tests
check gz-v1 on small samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from galaxy_model import populations as gz
from galaxy_model.populations import MORPHOLOGIES, Population
from galaxy_model.synth import FIELD_AREA_IN_CANVASES, scene_parameters

Scenes = dict[str, np.ndarray]


def _share(kind: str) -> Callable[[Scenes], float]:
    index = MORPHOLOGIES.index(kind)
    return lambda s: float(np.mean(s["morphology"] == index))


def _disc_bar_fraction(s: Scenes) -> float:
    discs = np.isin(s["morphology"], [MORPHOLOGIES.index("lenticular"),
                                      MORPHOLOGIES.index("spiral")])
    return float(np.mean(s["has_bar"][discs]))


def _disc_thickness(s: Scenes) -> float:
    """Mean intrinsic thickness of discs, inverted from q² = cos² i + t² sin² i."""
    discs = (s["morphology"] != MORPHOLOGIES.index("elliptical")) & (
        s["morphology"] != MORPHOLOGIES.index("irregular"))
    cos_i, q = s["cos_inclination"][discs], s["disc_axis_ratio"][discs]
    return float(np.mean(np.sqrt((q**2 - cos_i**2) / (1 - cos_i**2))))


def _elliptical_axis_ratio(s: Scenes) -> float:
    return float(np.mean(s["bulge_axis_ratio"][s["morphology"] == 0]))


def _per_canvas(count_key: str) -> Callable[[Scenes], float]:
    return lambda s: float(np.mean(s[count_key]) / FIELD_AREA_IN_CANVASES)


def _median_present(flux_key: str, count_key: str) -> Callable[[Scenes], float]:
    def measure(s: Scenes) -> float:
        slots = np.arange(s[flux_key].shape[1])[None, :] < s[count_key][:, None]
        return float(np.median(s[flux_key][slots]))

    return measure


def _median(key: str) -> Callable[[Scenes], float]:
    return lambda s: float(np.median(s[key]))


@dataclass(frozen=True)
class Target:
    """A statistic, what the literature says it is, and how close a population must come."""

    name: str
    published: float
    tolerance: float  # absolute
    source: str
    measure: Callable[[Scenes], float]


@dataclass(frozen=True)
class Row:
    name: str
    published: float
    tolerance: float
    source: str
    measured: float
    within: bool


_MERGER_MIDDLE = sum(gz.GZ_MERGER_RANGE) / 2
TARGETS = (
    Target("merger fraction", _MERGER_MIDDLE, _MERGER_MIDDLE - gz.GZ_MERGER_RANGE[0],
           "Darg et al. 2010: 1-3 x C per cent, C ~ 1.5", _share("merger")),
    Target("bar fraction of disc galaxies", gz.GZ_BAR_FRACTION, 0.02,
           "Masters et al. 2011 (GZ2): 29.4 +- 0.5 %", _disc_bar_fraction),
    Target("mean intrinsic disc thickness (minor/major)", gz.GZ_DISC_THICKNESS_MEAN, 0.02,
           "Rodríguez & Padilla 2013: 0.267 +- 0.009", _disc_thickness),
    Target("mean observed b/a of ellipticals", gz.GZ_ELLIPTICAL_AXIS_RATIO[0], 0.02,
           "Rodríguez & Padilla 2013: intrinsic 0.584, seen at random orientations",
           _elliptical_axis_ratio),
    Target("median PSF FWHM / r50", gz.GZ_PSF_FWHM_IN_R50.median_value,
           0.1 * gz.GZ_PSF_FWHM_IN_R50.median_value,
           "1.4\" SDSS seeing over the GZ2 size distribution (median R90 7.5\": an estimate)",
           _median("psf_fwhm_in_r50")),
    Target("neighbours (3-120 % flux) per canvas", gz.GZ_V1.neighbour_rate,
           0.1 * gz.GZ_V1.neighbour_rate,
           "Strauss et al. 2002 + Yasuda et al. 2001 counts over the canvas' sky area",
           _per_canvas("neighbour_count")),
    Target("median neighbour flux / central flux", gz.GZ_NEIGHBOUR_FLUX.median(),
           0.1 * gz.GZ_NEIGHBOUR_FLUX.median(), "Yasuda et al. 2001 count slope",
           _median_present("neighbour_flux", "neighbour_count")),
    Target("stars (0.5-100 % flux) per canvas", gz.GZ_V1.star_rate, 0.1 * gz.GZ_V1.star_rate,
           "Chen et al. 2001: 2080 deg^-2 (g < 21, galactic latitude 49-64°)",
           _per_canvas("star_count")),
    Target("median S/N within 2 r50", gz.GZ_SIGNAL_TO_NOISE.median(),
           0.1 * gz.GZ_SIGNAL_TO_NOISE.median(),
           "SDSS r = 22.2 depth, Euclidean counts to r < 17", _median("signal_to_noise")),
    Target("lowest S/N (a galaxy at the r = 17 limit)", gz.GZ_LIMIT_SNR, 0.1 * gz.GZ_LIMIT_SNR,
           "SDSS r = 22.2 depth (York et al. 2000)", lambda s: float(np.min(s["signal_to_noise"]))),
)

# Statistics with no published value verified in this work: reported, not checked.
UNCHECKED = {
    "elliptical share": _share("elliptical"),
    "lenticular share": _share("lenticular"),
    "spiral share": _share("spiral"),
    "irregular share": _share("irregular"),
}


def compare(population: Population, n: int, seed: int) -> tuple[list[Row], dict[str, float]]:
    """Every target measured on n scenes of `population` (seed `seed`), and the unchecked
    statistics' values."""
    scenes = scene_parameters(n, seed, population)
    rows = []
    for target in TARGETS:
        measured = target.measure(scenes)
        rows.append(Row(target.name, target.published, target.tolerance, target.source, measured,
                        bool(abs(measured - target.published) <= target.tolerance)))
    return rows, {name: measure(scenes) for name, measure in UNCHECKED.items()}


def rows_as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(row) for row in rows]
