"""Generating a sample: per-chunk random streams, the zoom passes that make a galaxy fit its
stamp, parallel chunks, and the GalaxyDataset with its provenance."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace

import numpy as np
from tqdm import tqdm

from galaxy_model import stamps
from galaxy_model.dataset import GalaxyDataset
from galaxy_model.populations import MORPHOLOGIES, SYNTH_V1, Population
from galaxy_model.synth.canvas import BAND_NAMES, CANVAS, REFERENCE_BAND
from galaxy_model.synth.field import Field, draw_field
from galaxy_model.synth.morphology import Central, draw_central
from galaxy_model.synth.observation import Observation, draw_observation
from galaxy_model.synth.photograph import IVAR_VERSION, photograph, to_stamp

CHUNK_SIZE = 250
_MIN_ZOOM = 0.5
_ZOOM_PASSES = 2


def generator_version(population: Population) -> str:
    """What made a data set: its population (the pixels) and the noise model of its ivar; the
    built-in splits' cache files carry it, so data made with another ivar is not reused."""
    return f"{population.version}+{IVAR_VERSION}"


GENERATOR_VERSION = generator_version(SYNTH_V1)  # the default population's


def _take(record, index: np.ndarray):
    """The images `index` of a record of per-image arrays (dicts of arrays included)."""
    def subset(value):
        if isinstance(value, dict):
            return {key: item[index] for key, item in value.items()}
        return value[index]

    return replace(record, **{item.name: subset(getattr(record, item.name))
                              for item in fields(record)})


def draw_scenes(seed: int, chunk_index: int, bands: int = 1, population: Population = SYNTH_V1,
                count: int = CHUNK_SIZE) -> tuple[Central, Field, Observation]:
    """The first `count` scenes of chunk `chunk_index` of `seed` (all of its random numbers are
    drawn whatever `count` is): what render_chunk renders, for rendering them again."""
    sequence = np.random.SeedSequence(seed, spawn_key=(chunk_index,))
    rng = np.random.Generator(np.random.PCG64(sequence))
    central = draw_central(rng, CHUNK_SIZE, population)
    field = draw_field(rng, CHUNK_SIZE, central.size, population)
    observation = draw_observation(rng, CHUNK_SIZE, bands, central.size, population)
    first = np.arange(count)
    return tuple(_take(record, first) for record in (central, field, observation))


def scene_parameters(n: int, seed: int = 0,
                     population: Population = SYNTH_V1) -> dict[str, np.ndarray]:
    """The drawn parameters of the first n scenes of `seed` (those synthesize renders), without
    rendering them: what a population's statistics are measured on (galaxy_model.population_check).

    Keys: morphology (index into MORPHOLOGIES), has_bar, cos_inclination, disc_axis_ratio,
    bulge_axis_ratio, neighbour_count and star_count (over the field, FIELD_AREA_IN_CANVASES
    canvases), neighbour_flux and star_flux (k, max) with slots beyond the counts unused,
    psf_fwhm_in_r50 and signal_to_noise.
    """
    parts: list[dict[str, np.ndarray]] = []
    for chunk_index in range(-(-n // CHUNK_SIZE)):
        central, field, observation = draw_scenes(seed, chunk_index, 1, population)
        kind_index = np.select([central.kind[name] for name in MORPHOLOGIES],
                               list(range(len(MORPHOLOGIES))))
        parts.append({
            "morphology": kind_index,
            "has_bar": central.has_bar,
            "cos_inclination": central.cos_inclination,
            "disc_axis_ratio": central.disc_axis_ratio,
            "bulge_axis_ratio": central.bulge_axis_ratio,
            "neighbour_count": field.neighbour_count,
            "neighbour_flux": field.neighbour_flux,
            "star_count": field.star_count,
            "star_flux": field.star_flux,
            "psf_fwhm_in_r50": observation.fwhm / central.size,
            "signal_to_noise": observation.signal_to_noise,
        })
    return {key: np.concatenate([part[key] for part in parts])[:n] for key in parts[0]}


def render_chunk(seed: int, chunk_index: int, bands: int = 1, size: int = stamps.STAMP_SIZE,
                 count: int | None = None,
                 population: Population = SYNTH_V1) -> tuple[np.ndarray, ...]:
    """Images chunk_index * CHUNK_SIZE + [0, count) of `seed`: (data, ivar, mask, scale, offset).

    Every random number of the full chunk is drawn from SeedSequence(seed, spawn_key=
    (chunk_index,)) whatever `count` (<= CHUNK_SIZE, default all) is and only the first `count`
    images are rendered, so a shorter request returns exactly the leading images of a longer one.

    Images whose 11 r50 stamp would not fit on the canvas are rendered again, up to twice, at a
    zoom that should make it fit (the same scene seen through a wider field), and measured again.
    """
    if bands not in (1, 3):
        raise ValueError(f"bands must be 1 or 3, got {bands}")
    count = CHUNK_SIZE if count is None else count
    central, field, observation = draw_scenes(seed, chunk_index, bands, population, count)

    zoom = np.ones(count)
    display, variance, saturated = photograph(central, field, observation, zoom, bands)
    centres, r50 = stamps.measure(display.sum(axis=1))
    for _ in range(_ZOOM_PASSES):
        fit = _fitting_zoom(centres, r50)
        again = np.flatnonzero((fit < 1) & (zoom > _MIN_ZOOM))
        if len(again) == 0:
            break
        # r50 in canvas pixels shrinks only about as the square root of the zoom: coarser pixels
        # reach deeper isophotes of the stretched photograph.
        zoom[again] = np.maximum(fit[again] ** 2 * zoom[again], _MIN_ZOOM)
        parts = (_take(r, again) for r in (central, field, observation))
        redone = photograph(*parts, zoom[again], bands)
        display[again], variance[again], saturated[again] = redone
        centres[again], r50[again] = stamps.measure(redone[0].sum(axis=1))
    r50 = r50 * np.minimum(_fitting_zoom(centres, r50), 1)  # the rare image still too large
    return to_stamp(display, variance, saturated, centres, r50, size)


def _fitting_zoom(centres: np.ndarray, r50: np.ndarray) -> np.ndarray:
    """How much smaller each galaxy must appear for its 11 r50 stamp to fit on the canvas."""
    room = np.minimum(centres, CANVAS - 1 - centres).min(axis=1) + 0.5
    return 2 * room / (stamps.STAMP_SIDE_IN_R50 * r50)


def _chunk_job(job: tuple[int, int, int, int, int, Population]) -> tuple[np.ndarray, ...]:
    return render_chunk(*job)


def synthesize(n: int, seed: int = 0, bands: int = 1, size: int = stamps.STAMP_SIZE,
               progress: bool = False, workers: int | None = None,
               population: Population = SYNTH_V1) -> GalaxyDataset:
    """n synthetic galaxies of `population` as a normalised GalaxyDataset (see the module
    docstring).

    workers: processes rendering chunks in parallel (forked, so they need no importable __main__;
    default: up to 2, the cores this project targets, once there are at least 4 chunks); the
    output does not depend on it.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if bands not in (1, 3):
        raise ValueError(f"bands must be 1 or 3, got {bands}")
    chunk_count = -(-n // CHUNK_SIZE)
    jobs = [(seed, i, bands, size, min(CHUNK_SIZE, n - i * CHUNK_SIZE), population)
            for i in range(chunk_count)]
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if chunk_count >= 4 else 1
    if "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    bar = tqdm(total=n, desc="synth", unit="img", disable=not (progress and sys.stderr.isatty()))
    parts = []
    if workers > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for job, part in zip(jobs, pool.map(_chunk_job, jobs), strict=True):
                parts.append(part)
                bar.update(job[4])
    else:
        for job in jobs:
            parts.append(_chunk_job(job))
            bar.update(job[4])
    bar.close()
    data, ivar, mask, scale, offset = (np.concatenate(part) for part in zip(*parts, strict=True))
    return GalaxyDataset(
        data=data,
        ivar=ivar,
        mask=mask,
        scale=scale,
        offset=offset,
        provenance=[f"synth seed={seed} index={i}" for i in range(n)],
        attrs={
            "source": f"galaxy_model.synth {population.version} seed={seed}",
            "generator_version": generator_version(population),
            "ivar_version": IVAR_VERSION,
            "population_version": population.version,
            "population": json.dumps(population.describe(), sort_keys=True),
            "seed": seed,
            "raw_units": "display value of an asinh-stretched photograph: sky 0.05, white 1",
            "normalisation": stamps.NORMALISATION_DESCRIPTION,
            "size": size,
            "bands": bands,
            "band_names": ",".join(BAND_NAMES[::-1]) if bands == 3 else BAND_NAMES[REFERENCE_BAND],
            "stamp_side_in_r50": stamps.STAMP_SIDE_IN_R50,
            "created_by": "galaxy_model.synth.synthesize",
        },
    )
