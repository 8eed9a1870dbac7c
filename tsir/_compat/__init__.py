"""Adapters for the private APIs of the libraries tsir builds on, one module per library.

Every use of a private TVM or egglog API lives here, each with why no public one does the job, so that an
upgrade breaks in one place; ``tests/test_compat.py`` exercises each and fails loudly when one changed.
"""
