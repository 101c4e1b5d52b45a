"""The test suite; its folders mirror the source tree (see each folder's docstring)."""
