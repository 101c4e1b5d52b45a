"""Galaxy populations: the distributions galaxy_model.synth draws its scenes from.

A Population is a frozen, version-stamped record of every distribution the generator samples
that a survey pins down (morphology mix, shapes, bars, neighbours, stars, seeing, S/N). The
generator's code is shared; a population only sets its parameters, so a data set is fully
described by (population version, seed, n) and its version is written into the data set's
attributes. A population is frozen before any model is trained on it: never retune one after
looking at win fractions; make a new version instead.

- SYNTH_V1: the original built-in population ("for realism", no cited distribution); it
  reproduces builtin:train/valid/heldout/train-large bit for bit.
- GZ_V1: a Galaxy-Zoo-2-like population (SDSS DR7 main sample, r < 17.0, petroR90_r > 3",
  Willett et al. 2013, MNRAS 435, 2835), each constant set from the cited published value where
  one exists, otherwise estimated (said so) or kept from SYNTH_V1 (said so).

The GZ2 geometry used throughout: the 424-px JPEG has 0.02 petroR90_r arcsec per pixel, so
Dieleman's 207-px centre crop (later 69x69) spans 207 * 0.02 = 4.14 R90. Our stamp spans 11
measured half-light radii of the photograph (about 1.5 x TARGET_R50_PX = 5.4 canvas px, so 59 of
the 96 canvas px); taking it as that same crop, the canvas spans 96 / 59 * 4.14 = 6.7 R90.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

MORPHOLOGIES = ("elliptical", "lenticular", "spiral", "irregular", "merger")


@dataclass(frozen=True)
class LogUniform:
    """exp(U(log lo, log hi)): one uniform draw per value."""

    lo: float
    hi: float

    def draw(self, rng: np.random.Generator, size) -> np.ndarray:
        return np.exp(rng.uniform(math.log(self.lo), math.log(self.hi), size))

    def scaled(self, factor: float) -> LogUniform:
        return LogUniform(self.lo * factor, self.hi * factor)

    def median(self) -> float:
        return math.sqrt(self.lo * self.hi)


@dataclass(frozen=True)
class LogNormal:
    """exp(N(log median, sigma)) clipped to [lo, hi]: one normal draw per value."""

    median_value: float
    sigma: float
    lo: float
    hi: float

    def draw(self, rng: np.random.Generator, size) -> np.ndarray:
        values = np.exp(rng.normal(math.log(self.median_value), self.sigma, size))
        return np.clip(values, self.lo, self.hi)

    def scaled(self, factor: float) -> LogNormal:
        return LogNormal(self.median_value * factor, self.sigma, self.lo * factor,
                         self.hi * factor)

    def median(self) -> float:
        return self.median_value


@dataclass(frozen=True)
class PowerLaw:
    """Density proportional to x^index on [lo, hi] (index != -1), by the inverse CDF of one
    uniform draw per value: what number counts N(>f) ~ f^(index + 1) give for fluxes."""

    lo: float
    hi: float
    index: float

    def draw(self, rng: np.random.Generator, size) -> np.ndarray:
        exponent = self.index + 1
        low, high = self.lo**exponent, self.hi**exponent
        return (low + rng.uniform(size=size) * (high - low)) ** (1 / exponent)

    def scaled(self, factor: float) -> PowerLaw:
        return PowerLaw(self.lo * factor, self.hi * factor, self.index)

    def median(self) -> float:
        exponent = self.index + 1
        return (0.5 * (self.lo**exponent + self.hi**exponent)) ** (1 / exponent)


@dataclass(frozen=True)
class MagnitudeLimitedSNR:
    """S/N of galaxies of a flux-limited sample: flux f (in units of the limit) drawn from
    Euclidean counts, density ~ f^-2.5 on [1, max_flux], and
    S/N = limit_snr * f * sqrt((1 + sky) / (f + sky)), sky being the sky counts in the aperture
    in units of the limiting galaxy's counts (sky-limited when faint, Poisson-limited when bright).
    """

    limit_snr: float
    max_flux: float
    sky: float

    def draw(self, rng: np.random.Generator, size) -> np.ndarray:
        flux = PowerLaw(1.0, self.max_flux, -2.5).draw(rng, size)
        return self.limit_snr * flux * np.sqrt((1 + self.sky) / (flux + self.sky))

    def scaled(self, factor: float) -> MagnitudeLimitedSNR:
        return replace(self, limit_snr=self.limit_snr * factor)

    def median(self) -> float:
        flux = PowerLaw(1.0, self.max_flux, -2.5).median()
        return self.limit_snr * flux * math.sqrt((1 + self.sky) / (flux + self.sky))


Distribution = LogUniform | LogNormal | PowerLaw | MagnitudeLimitedSNR


@dataclass(frozen=True)
class Population:
    """Every population-level parameter of the synthetic scenes (see the module docstring).

    Rates are mean numbers per canvas (96 x 96 px at zoom 1); fluxes are relative to the central
    galaxy's; the PSF's FWHM is in units of the central galaxy's half-light radius; S/N is the
    central galaxy's within 2 r50.
    """

    version: str
    description: str
    morphology_shares: tuple[float, float, float, float, float]  # in MORPHOLOGIES' order
    disc_thickness: tuple[float, float]  # intrinsic minor/major axis ratio of discs, uniform
    elliptical_axis_ratio: tuple[float, float]  # observed b/a: mean, sd of a clipped normal
    spiral_bar_fraction: float
    lenticular_bar_fraction: float
    neighbour_rate: float
    neighbour_flux: Distribution
    star_rate: float
    star_flux: Distribution
    psf_fwhm_in_r50: Distribution
    signal_to_noise: Distribution
    # Scales for the sensitivity study (1 = as drawn): the bulge share of lenticulars and spirals
    # (capped at 1) and the strength of spiral arms (capped at 1).
    bulge_share_scale: float = 1.0
    arm_strength_scale: float = 1.0
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.morphology_shares) != len(MORPHOLOGIES):
            raise ValueError(f"{self.version}: morphology_shares needs {len(MORPHOLOGIES)} values")
        if abs(sum(self.morphology_shares) - 1) > 1e-9 or min(self.morphology_shares) < 0:
            raise ValueError(f"{self.version}: morphology_shares must be >= 0 and sum to 1")

    def describe(self) -> dict:
        """A JSON-ready record of every parameter (for data set attributes and reports)."""
        def plain(value):
            if isinstance(value, LogUniform | LogNormal | PowerLaw | MagnitudeLimitedSNR):
                return {"type": type(value).__name__, **value.__dict__}
            return list(value) if isinstance(value, tuple) else value

        return {name: plain(getattr(self, name)) for name in self.__dataclass_fields__
                if name != "sources"}


SYNTH_V1 = Population(
    version="synth-v1",
    description="the original synthetic population, set 'for realism' (no cited distribution)",
    morphology_shares=(0.22, 0.13, 0.45, 0.10, 0.10),
    disc_thickness=(0.1, 0.22),
    elliptical_axis_ratio=(0.72, 0.17),
    spiral_bar_fraction=0.35,
    lenticular_bar_fraction=0.2,
    neighbour_rate=2.0,
    neighbour_flux=LogUniform(0.03, 1.2),
    star_rate=0.5,
    star_flux=LogUniform(0.005, 1.0),
    psf_fwhm_in_r50=LogUniform(0.25, 1.1),
    signal_to_noise=LogUniform(100.0, 3000.0),
)

# ---- GZ_V1: the published values and the arithmetic that turns them into parameters ----------

# Darg et al. 2010 (MNRAS 401, 1043): the local major-merger fraction is 1-3 x C per cent with
# C ~ 1.5 for spectroscopic incompleteness, i.e. 1.5-4.5 %; we take the middle, 3 %.
GZ_MERGER_FRACTION = 0.03
GZ_MERGER_RANGE = (0.015, 0.045)
# No GZ2 share of ellipticals, lenticulars, spirals and irregulars was verified in this work (GZ2
# reports vote fractions per question, not a five-way split), so SYNTH_V1's relative shares are
# kept and only rescaled to make room for the merger fraction above.
_KEPT_SHARES = SYNTH_V1.morphology_shares[:4]
GZ_MORPHOLOGY_SHARES = (
    *(share * (1 - GZ_MERGER_FRACTION) / sum(_KEPT_SHARES) for share in _KEPT_SHARES),
    GZ_MERGER_FRACTION,
)
# Masters et al. 2011 (MNRAS 411, 2026), GZ2: 29.4 +- 0.5 % of disc galaxies have a bar.
GZ_BAR_FRACTION = 0.294
# Rodríguez & Padilla 2013 (MNRAS 434, 2153), SDSS DR8 with Galaxy Zoo morphologies: discs'
# intrinsic minor/major axis ratio has mean 0.267 +- 0.009 (Padilla & Strauss 2008 found 0.21
# +- 0.02 with a larger dust extinction). SYNTH_V1's spread (0.12 wide) kept around that mean.
GZ_DISC_THICKNESS_MEAN = 0.267
# Same paper: ellipticals are oblate with mean intrinsic minor/major axis ratio 0.584 +- 0.006.
# Seen at random orientations, b/a = sqrt(cos² i + 0.584² sin² i) has mean 0.738 and sd 0.128
# (computed by sampling); the generator's clipped normal takes those two moments.
GZ_ELLIPTICAL_INTRINSIC_AXIS_RATIO = 0.584
GZ_ELLIPTICAL_AXIS_RATIO = (0.738, 0.128)

# Seeing: SDSS imaging's median r-band PSF FWHM is about 1.4" (as the issue states; SDSS DR7,
# Abazajian et al. 2009). GZ2's sizes: petroR90_r > 3" by selection (Willett et al. 2013); we
# found no published median of petroR90_r for the GZ2 sample and ESTIMATE it at 7.5" (an L*
# galaxy's r50 ~ 3.5 kpc at the sample's z ~ 0.07, 1.33 kpc/", and R90/R50 ~ 2.8), so
# r50 ~ 2.7" and FWHM/r50 has median ~ 0.52; its log-normal width (0.45 in ln, ~0.2 dex of size
# spread plus the seeing's spread) is also an estimate. The upper clip is the selection limit:
# R90 > 3" means r50 > ~1.07", FWHM/r50 < 1.3.
GZ_SEEING_FWHM_ARCSEC = 1.4
GZ_MEDIAN_R90_ARCSEC = 7.5  # estimated, see above
GZ_R90_OVER_R50 = 2.8
GZ_PSF_FWHM_IN_R50 = LogNormal(
    median_value=GZ_SEEING_FWHM_ARCSEC * GZ_R90_OVER_R50 / GZ_MEDIAN_R90_ARCSEC,
    sigma=0.45, lo=0.1, hi=1.3,
)

# Sky area of the canvas for the median galaxy (see the module docstring: 6.7 R90 on a side).
CANVAS_SIDE_IN_R90 = 6.7
CANVAS_AREA_DEG2 = (CANVAS_SIDE_IN_R90 * GZ_MEDIAN_R90_ARCSEC / 3600) ** 2
# The median GZ2 galaxy: Euclidean counts, N(<m) ~ 10^(0.6 m) brighter than r = 16 (Yasuda et
# al. 2001, AJ 122, 1104), put the median of r < 17 at 17 - log10(2) / 0.6 = 16.5.
GZ_MEDIAN_R_MAG = 17 - math.log10(2) / 0.6
# Neighbours 3-120 % of its flux are galaxies with 16.3 < r < 20.3. SDSS main-sample density
# ~90 deg^-2 at r < 17.77 (Strauss et al. 2002, AJ 124, 1810); fainter than r = 16 the counts
# follow the no-evolution model (Yasuda et al. 2001) with slope d log N / dm ~ 0.46 (that slope
# is our reading of their counts, not a quoted number). Clustering around the central galaxy
# (which would add neighbours) is not modelled: no published excess for this geometry was found.
GZ_GALAXY_COUNT_SLOPE = 0.46
_FAINT_NEIGHBOUR_MAG = GZ_MEDIAN_R_MAG - 2.5 * math.log10(0.03)
_BRIGHT_NEIGHBOUR_MAG = GZ_MEDIAN_R_MAG - 2.5 * math.log10(1.2)
GZ_NEIGHBOUR_DENSITY_DEG2 = 90 * (
    10 ** (GZ_GALAXY_COUNT_SLOPE * (_FAINT_NEIGHBOUR_MAG - 17.77))
    - 10 ** (GZ_GALAXY_COUNT_SLOPE * (_BRIGHT_NEIGHBOUR_MAG - 17.77))
)
# The same counts as a flux distribution: dN/df ~ f^-(1 + slope / 0.4).
GZ_NEIGHBOUR_FLUX = PowerLaw(0.03, 1.2, -(1 + GZ_GALAXY_COUNT_SLOPE / 0.4))
# Stars: Chen et al. 2001 (ApJ 553, 184) count 5.8e5 stars with g < 21 over 279 deg² at
# 49° < |b| < 64°, 2080 deg^-2, taken as the density of stars 0.5-100 % of the central galaxy's
# flux (r ~ 16.5-22). No verified slope of the star counts: SYNTH_V1's log-uniform fluxes kept.
GZ_STAR_DENSITY_DEG2 = 5.8e5 / 279
# S/N within 2 r50: SDSS's 95 % completeness for point sources is r = 22.2 (York et al. 2000;
# Abazajian et al. 2009), i.e. S/N = 5 within the PSF's noise-equivalent area (4 pi sigma²,
# 4.4 arcsec² at 1.4"). A median galaxy at the r = 17 limit (r50 ~ 2.7", ~85 % of its light within
# 2 r50, an aperture 92 arcsec², sky-limited) then has S/N = 5 x 10^(0.4 x 5.2) x 0.85 /
# sqrt(92 / 4.4) ~ 110. SDSS's dark sky, r ~ 20.9 mag/arcsec² (our estimate of the typical
# value), puts 16.0 mag of sky in that aperture: 2.5 times the limiting galaxy's flux. Brighter
# galaxies follow Euclidean counts up to r = 12 (flux 100 x the limit).
GZ_LIMIT_SNR = 5 * 10 ** (0.4 * (22.2 - 17.0)) * 0.85 / math.sqrt(92 / 4.4)
GZ_SIGNAL_TO_NOISE = MagnitudeLimitedSNR(limit_snr=GZ_LIMIT_SNR, max_flux=100.0, sky=2.5)

GZ_V1 = Population(
    version="gz-v1",
    description="Galaxy-Zoo-2-like: SDSS DR7 main sample, r < 17, GZ2's image scale",
    morphology_shares=GZ_MORPHOLOGY_SHARES,
    disc_thickness=(GZ_DISC_THICKNESS_MEAN - 0.06, GZ_DISC_THICKNESS_MEAN + 0.06),
    elliptical_axis_ratio=GZ_ELLIPTICAL_AXIS_RATIO,
    spiral_bar_fraction=GZ_BAR_FRACTION,
    lenticular_bar_fraction=GZ_BAR_FRACTION,
    neighbour_rate=GZ_NEIGHBOUR_DENSITY_DEG2 * CANVAS_AREA_DEG2,
    neighbour_flux=GZ_NEIGHBOUR_FLUX,
    star_rate=GZ_STAR_DENSITY_DEG2 * CANVAS_AREA_DEG2,
    star_flux=SYNTH_V1.star_flux,
    psf_fwhm_in_r50=GZ_PSF_FWHM_IN_R50,
    signal_to_noise=GZ_SIGNAL_TO_NOISE,
    sources={
        "morphology_shares": "mergers: Darg et al. 2010; the other four: SYNTH_V1's kept",
        "disc_thickness": "Rodríguez & Padilla 2013 (mean 0.267)",
        "elliptical_axis_ratio": "Rodríguez & Padilla 2013 (oblate, 0.584), projected",
        "spiral_bar_fraction": "Masters et al. 2011 (29.4 %)",
        "lenticular_bar_fraction": "Masters et al. 2011 (29.4 %)",
        "neighbour_rate": "Strauss et al. 2002 + Yasuda et al. 2001 counts x canvas area",
        "neighbour_flux": "Yasuda et al. 2001 count slope",
        "star_rate": "Chen et al. 2001 counts x canvas area",
        "star_flux": "SYNTH_V1's kept (no verified slope)",
        "psf_fwhm_in_r50": "1.4\" seeing over an estimated GZ2 size distribution",
        "signal_to_noise": "SDSS r = 22.2 depth, Euclidean counts to r = 17",
    },
)

POPULATIONS = {population.version: population for population in (SYNTH_V1, GZ_V1)}


def vary(population: Population, version: str, changes: dict) -> Population:
    """`population` with some fields changed, under a new version name (the sensitivity study's
    variants): each change is a new value, or {"times": x} to scale a rate, a scale or a
    distribution by x; morphology_shares also takes {kind: x, ...}, scaling those kinds' shares
    and renormalising."""
    updates = {}
    for name, change in changes.items():
        if name not in population.__dataclass_fields__ or name in ("version", "sources"):
            raise ValueError(f"{version}: unknown population field {name!r}")
        current = getattr(population, name)
        if name == "morphology_shares" and isinstance(change, dict):
            strangers = set(change) - set(MORPHOLOGIES)
            if strangers:
                raise ValueError(f"{version}: morphology_shares: unknown kind "
                                 f"{sorted(strangers)[0]!r}; kinds: {', '.join(MORPHOLOGIES)}")
            scaled = [share * float(change.get(kind, 1))
                      for kind, share in zip(MORPHOLOGIES, current, strict=True)]
            updates[name] = tuple(share / sum(scaled) for share in scaled)
        elif isinstance(change, dict):
            if set(change) != {"times"}:
                raise ValueError(f"{version}: {name}: expected a value or {{times: x}}")
            factor = float(change["times"])
            updates[name] = (current.scaled(factor) if hasattr(current, "scaled")
                             else current * factor)
        else:
            updates[name] = tuple(change) if isinstance(current, tuple) else change
    return replace(population, version=version, **updates)
