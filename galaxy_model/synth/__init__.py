"""A survey-like synthetic galaxy sample, deterministic by seed (the built-in training data).

Each image is rendered on a 96 x 96 canvas larger than the stamp, observed, turned into a colour
photograph and then cut out exactly like real data (galaxy_model.stamps: measure -> cutout ->
normalise):

- the central galaxy is an elliptical (Sérsic n 2.5-6), a lenticular (bulge + disc, maybe a bar),
  a spiral (Sérsic bulge n 1-4, inclined exponential disc, 2-4 logarithmic arms of varying pitch,
  width and strength or 6-8 weak flocculent ones; bars that feed the arms; star-forming clumps
  strung along the arms; a dust lane when seen nearly edge-on), an irregular (lopsided diffuse
  light and many clumps) or a merger (a companion and curved tidal tails); all orientations,
  inclinations and axis ratios occur;
- neighbouring galaxies (Sérsic, 3-120 % of its flux) and foreground stars scattered over the
  field, some inside the stamp;
- a Moffat point-spread function whose width runs from a quarter of the galaxy's half-light radius
  to about its size, so some galaxies are well resolved and others barely;
- sky, Poisson noise (in its Gaussian limit: every pixel holds tens of counts or more) and read
  noise at signal-to-noise ratios of 100-3000 within 2 r50, rounded to whole counts;
- the photograph: as in the SDSS colour images that Galaxy Zoo shows and in the Hubble XDF picture
  of the real split, the sky is subtracted and an asinh stretch (Lupton et al. 2004) with a
  softening of 2-20 sky sigmas maps counts to display values in [0, 1] on a dark sky (0.05),
  saturating the brightest cores (flagged in `mask`), in 8-bit steps. The stretch is what makes
  the faint disc, arms, tails and neighbours as prominent as in real photographs.

The stamp spans 11 measured half-light radii of the photograph. Where that would not fit on the
canvas (about a fifth of the galaxies, whose stretched wings reach far), the scene is rendered
again seen through a wider field (zoom down to 0.5; neighbours and stars are drawn over a field
four times the canvas' area for this); the ~1 % that still do not fit get the largest stamp the
canvas holds.

`ivar` is the inverse variance of each pixel over the noise: exact through the stretch, the clips
at black and white and the 8-bit rounding (IVAR_VERSION ivar-v2, recorded in the attributes and
in `generator_version`), then through the resampling and the normalisation; saturated pixels get
ivar 0 and mask 1. With bands=3 (stored i, r, g: red first, as
the R, G, B planes of a JPEG) bulges, bars and ellipticals are red, discs bluer, arms and clumps
bluest.

The distributions that a survey pins down (morphology mix, shapes, bars, neighbours, stars,
seeing, S/N) come from a galaxy_model.populations.Population: SYNTH_V1 (the default, described
above) or GZ_V1 (Galaxy-Zoo-2-like, from cited published values); the code is the same.

Everything runs on whole batches (float32 arrays of images). Randomness comes from PCG64 streams:
chunk i of seed S uses SeedSequence(S, spawn_key=(i,)) only, so any chunk can be rendered alone or
in another process, and image j of seed S does not depend on how many images were asked for.
"""

from galaxy_model.synth.canvas import BAND_NAMES, CANVAS, SERSIC_TRUNCATION, sersic_b
from galaxy_model.synth.field import FIELD_AREA_IN_CANVASES
from galaxy_model.synth.generate import (
    CHUNK_SIZE,
    GENERATOR_VERSION,
    draw_scenes,
    generator_version,
    render_chunk,
    scene_parameters,
    synthesize,
)
from galaxy_model.synth.morphology import TARGET_R50_PX
from galaxy_model.synth.observation import (
    DISPLAY_MAX_IN_PEAK,
    READ_NOISE,
    SKY_COUNTS,
    SOFTENING_IN_SKY_SIGMA,
)
from galaxy_model.synth.photograph import DISPLAY_LEVELS, DISPLAY_SKY, IVAR_VERSION

__all__ = [
    "BAND_NAMES", "CANVAS", "CHUNK_SIZE", "DISPLAY_LEVELS", "DISPLAY_MAX_IN_PEAK", "DISPLAY_SKY",
    "FIELD_AREA_IN_CANVASES", "GENERATOR_VERSION", "IVAR_VERSION", "READ_NOISE",
    "SERSIC_TRUNCATION", "SKY_COUNTS", "SOFTENING_IN_SKY_SIGMA", "TARGET_R50_PX", "draw_scenes",
    "generator_version", "render_chunk", "scene_parameters", "sersic_b", "synthesize",
]
