"""The field around each central galaxy: neighbouring galaxies and foreground stars, drawn over
an area larger than the canvas so that zoomed-out images see a wider field."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galaxy_model.populations import Population
from galaxy_model.synth.canvas import CANVAS, CENTRE, DISC, RED, Canvas

_MAX_NEIGHBOURS = 24
_MAX_STARS = 8
# Neighbours and stars are scattered over a field twice the canvas' side (four times its area),
# so that images shown at zoom < 1 see a correspondingly wider field.
_FIELD_HALF_WIDTH = CANVAS
FIELD_AREA_IN_CANVASES = 4


@dataclass
class Field:
    """Neighbouring galaxies and foreground stars around each central galaxy (field pixels)."""

    neighbour_count: np.ndarray  # (k,)
    neighbour_position: np.ndarray  # (k, _MAX_NEIGHBOURS, 2)
    neighbour_flux: np.ndarray  # (k, _MAX_NEIGHBOURS), relative to the central galaxy
    neighbour_r_e: np.ndarray
    neighbour_n: np.ndarray
    neighbour_axis_ratio: np.ndarray
    neighbour_angle: np.ndarray
    neighbour_sed: np.ndarray  # (k, _MAX_NEIGHBOURS, 3)
    star_count: np.ndarray  # (k,)
    star_position: np.ndarray  # (k, _MAX_STARS, 2)
    star_flux: np.ndarray  # (k, _MAX_STARS)
    star_sed: np.ndarray  # (k, _MAX_STARS, 3)


def draw_field(rng: np.random.Generator, count: int, size: np.ndarray,
                population: Population) -> Field:
    """Poisson numbers of neighbours and stars, uniform over the field, varied in flux and form."""
    shape = (count, _MAX_NEIGHBOURS)
    flux = population.neighbour_flux.draw(rng, shape)
    g_over_r = rng.uniform(0.3, 1.4, (count, _MAX_STARS))
    return Field(
        neighbour_count=np.minimum(
            rng.poisson(FIELD_AREA_IN_CANVASES * population.neighbour_rate, count),
            _MAX_NEIGHBOURS,
        ),
        neighbour_position=CENTRE + rng.uniform(-1, 1, shape + (2,)) * _FIELD_HALF_WIDTH,
        neighbour_flux=flux,
        neighbour_r_e=np.maximum(
            size[:, None] * np.sqrt(flux) * np.exp(rng.normal(0, 0.35, shape)), 0.6
        ),
        neighbour_n=rng.uniform(0.8, 4.5, shape),
        neighbour_axis_ratio=rng.uniform(0.25, 1, shape),
        neighbour_angle=rng.uniform(0, np.pi, shape),
        neighbour_sed=np.where((rng.uniform(size=shape) < 0.45)[..., None], RED, DISC)
        * np.exp(rng.normal(0, 0.1, shape + (3,))),
        star_count=np.minimum(
            rng.poisson(FIELD_AREA_IN_CANVASES * population.star_rate, count), _MAX_STARS
        ),
        star_position=CENTRE + rng.uniform(-1, 1, (count, _MAX_STARS, 2)) * _FIELD_HALF_WIDTH,
        star_flux=population.star_flux.draw(rng, (count, _MAX_STARS)),
        star_sed=np.stack([g_over_r, np.ones_like(g_over_r), 1 / np.sqrt(g_over_r)], axis=-1),
    )


def render_field(canvas: Canvas, field: Field) -> None:
    """The neighbours and stars that fall on each image's canvas."""
    zoom = canvas.zoom[:, None, None]
    on_canvas = CENTRE + (field.neighbour_position - CENTRE) * zoom
    margin = 4 * field.neighbour_r_e * canvas.zoom[:, None]
    visible = (
        (np.arange(_MAX_NEIGHBOURS)[None, :] < field.neighbour_count[:, None])
        & (on_canvas.min(axis=2) > -margin)
        & (on_canvas.max(axis=2) < CANVAS - 1 + margin)
    )
    for slot in np.flatnonzero(visible.any(axis=0)):
        index = np.flatnonzero(visible[:, slot])
        profile = canvas.sersic(index, field.neighbour_position[index, slot],
                                field.neighbour_r_e[index, slot], field.neighbour_n[index, slot],
                                field.neighbour_axis_ratio[index, slot],
                                field.neighbour_angle[index, slot])
        canvas.add_profile(index, profile, field.neighbour_flux[index, slot],
                           field.neighbour_sed[index, slot])
    image, slot = np.nonzero(np.arange(_MAX_STARS)[None, :] < field.star_count[:, None])
    position = field.star_position[image, slot]
    canvas.splat(canvas.smooth, image, position[:, 0], position[:, 1],
                 field.star_flux[image, slot][:, None] * canvas.colour(field.star_sed[image, slot]))
