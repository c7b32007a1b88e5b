"""Tests for optiscope.curvature."""
