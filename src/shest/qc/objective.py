"""Pixel-size QC: objective power against µm/px, and an --mpp override against the file."""

from __future__ import annotations

from dataclasses import dataclass

from shest.slide.mpp import PixelSize

# Scanners give about 10 µm / objective power: 0.22-0.27 µm/px at 40x, 0.44-0.52 at 20x.
MPP_TIMES_POWER_UM = 10.0
# Accepted ratio of the actual to the expected µm/px.
RATIO_RANGE = (0.7, 1.4)
# Relative difference between an --mpp override and the file's value that is reported.
OVERRIDE_TOLERANCE = 0.1


@dataclass(frozen=True)
class ObjectiveCheck:
    """Objective power, the µm/px it implies, and whether the slide's µm/px agrees."""

    objective_power: float | None
    mpp: float
    expected_mpp: float | None
    ratio: float | None
    consistent: bool | None

    def to_dict(self) -> dict:
        return {
            "objective_power": self.objective_power,
            "mpp": self.mpp,
            "expected_mpp": self.expected_mpp,
            "ratio": self.ratio,
            "consistent": self.consistent,
        }


def check_objective_power(objective_power: float | None, mpp: float) -> tuple[ObjectiveCheck, list[str]]:
    """Compare the µm/px with 10 µm divided by the objective power; return the check and warnings."""
    if not objective_power:
        return ObjectiveCheck(None, mpp, None, None, None), []
    expected = MPP_TIMES_POWER_UM / objective_power
    ratio = mpp / expected
    consistent = RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]
    warnings = []
    if not consistent:
        warnings.append(
            f"Objective power {objective_power:g}x implies about {expected:.3g} µm/px, but the slide's pixel size "
            f"is {mpp:.4g} µm/px ({ratio:.2f} times the expected value); one of the two is wrong. "
            "Check --mpp (or the scanner's metadata): all sizes in µm depend on it."
        )
    check = ObjectiveCheck(objective_power, mpp, round(expected, 4), round(ratio, 4), consistent)
    return check, warnings


def check_mpp_override(pixel_size: PixelSize, metadata: PixelSize | None) -> list[str]:
    """Warn when an --mpp override differs from the value recorded in the file."""
    if pixel_size.source != "override" or metadata is None:
        return []
    difference = abs(pixel_size.mean - metadata.mean) / metadata.mean
    if difference <= OVERRIDE_TOLERANCE:
        return []
    return [
        f"--mpp {pixel_size.mean:g} differs by {100 * difference:.0f}% from the {metadata.mean:.4g} µm/px "
        f"recorded in the file ({metadata.source}); the override was used. Drop --mpp if the file is right."
    ]
