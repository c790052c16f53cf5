"""Speckle2Self: self-supervised ultrasound speckle reduction without clean data.

Li, Navab, Jiang, "Speckle2Self: Self-Supervised Ultrasound Speckle Reduction Without Clean Data",
Medical Image Analysis 2025, 103755.
"""
__version__ = "0.1.0"
