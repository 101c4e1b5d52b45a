"""galaxy_model: the poster's flexible Bayesian model of galaxy images, built on mochapy.

Data (a built-in synthetic sample, the Hubble XDF real split, and `prepare` for FITS/JPEG/HDF5
cutouts), the scaled bivariate Gaussian baseline, held-out evaluation, and the poster's figures.
"""

__version__ = "0.1.0"
