"""Private helpers shared by several optiscope subpackages (nothing public here)."""
