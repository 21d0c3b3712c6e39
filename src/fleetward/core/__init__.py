"""Core vocabulary shared by every capability: ids, VINs, the clock and problem errors."""
