"""Image-content QC: images that are not brightfield RGB scans, such as greyscale or near-black images.

Tissue detection, ink detection and the background check all assume a colour image of
stained tissue on bright glass. A greyscale image has no colour to find tissue by,
and a mostly black image (a fluorescence scan, or samples scaled wrongly to 8 bits)
turns into "ink" everywhere. Both get one warning that names what the image is, in
place of the misleading tissue, ink and background warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A pixel is grey when its channels differ by at most this many levels (0-255).
GREY_CHANNEL_SPREAD = 3
# Glass is grey on colour scans too, so only pixels clearly darker than the brightest
# part of the image (its 99th percentile, by this many levels of the brightest
# channel) decide whether an image is greyscale.
DARKER_THAN_GLASS = 30
# An image is greyscale when at least this share of its darker pixels is grey, and
# there are at least MIN_DARKER_PIXELS of them (a blank slide is not called greyscale).
GREYSCALE_SHARE = 0.99
MIN_DARKER_PIXELS = 100
# A pixel is near black when its brightest channel is below this level, the dark-ink
# rule of tissue detection (HSV value under 0.15).
BLACK_LEVEL = 0.15 * 255
# Above this share of near-black pixels an image is not a brightfield scan.
DARK_IMAGE_SHARE = 0.5


@dataclass(frozen=True)
class ImageContent:
    """Share of grey pixels among those darker than glass, and share of near-black pixels, on the thumbnail."""

    grey_fraction: float
    dark_fraction: float
    darker_pixels: int

    @property
    def greyscale(self) -> bool:
        return self.darker_pixels >= MIN_DARKER_PIXELS and self.grey_fraction >= GREYSCALE_SHARE

    @property
    def dark(self) -> bool:
        return self.dark_fraction > DARK_IMAGE_SHARE

    @property
    def usable(self) -> bool:
        """Whether the image looks like a brightfield colour scan that the other checks understand."""
        return not (self.greyscale or self.dark)

    def to_dict(self) -> dict:
        return {
            "grey_fraction_of_darker_pixels": round(self.grey_fraction, 4),
            "dark_fraction": round(self.dark_fraction, 4),
            "greyscale": self.greyscale,
            "dark": self.dark,
        }

    def warning(self, slide_name: str) -> str | None:
        """Return the warning for an image that is not a brightfield colour scan, else None."""
        if self.dark:
            return (
                f"{100 * self.dark_fraction:.0f}% of {slide_name} is near black, which a brightfield H&E scan "
                "never is (its glass is bright), so tissue, ink and background could not be measured. The file "
                "may be a fluorescence image, or store samples in a range other than 8-bit, 16-bit or 0-1 "
                "floating point; export it as 8-bit RGB."
            )
        if self.greyscale:
            return (
                f"{slide_name} is a greyscale image (red, green and blue equal in {100 * self.grey_fraction:.0f}% "
                "of the pixels darker than glass): tissue is found by the colour of the H&E stains, so none was "
                "detected, and segmentation and the model need colour too. Use the RGB scan of the slide."
            )
        return None


def inspect_image(rgb: np.ndarray) -> ImageContent:
    """Return the grey and near-black shares of an RGB uint8 thumbnail (see :class:`ImageContent`)."""
    if rgb.size == 0:
        return ImageContent(0.0, 0.0, 0)
    channels = rgb[..., :3]
    brightest = channels.max(axis=-1)
    spread = brightest.astype(np.int16) - channels.min(axis=-1)
    darker = brightest < np.percentile(brightest, 99) - DARKER_THAN_GLASS
    darker_count = int(darker.sum())
    grey = float((spread[darker] <= GREY_CHANNEL_SPREAD).mean()) if darker_count else 0.0
    return ImageContent(
        grey_fraction=grey,
        dark_fraction=float((brightest < BLACK_LEVEL).mean()),
        darker_pixels=darker_count,
    )
