"""Range checks of numeric command-line options, with messages that name the option."""

from __future__ import annotations

import math

from shest.errors import InputError


def check_option(
    option: str,
    value: float | None,
    maximum: float | None = None,
    reason: str = "",
    minimum: float | None = None,
) -> None:
    """Raise InputError unless ``value`` is finite and within [``minimum``, ``maximum``].

    Parameters
    ----------
    option
        The option as the user types it, for example ``--tile-size-um``.
    value
        The parsed value; None (option not given) passes.
    maximum, minimum
        Inclusive bounds; None leaves that side open.
    reason
        Why the bound exists, appended to the message.
    """
    if value is None:
        return
    if not math.isfinite(value):
        raise InputError(f"{option} must be a finite number, found {value}.")
    low = minimum is not None and value < minimum
    high = maximum is not None and value > maximum
    if not (low or high):
        return
    if minimum is not None and maximum is not None:
        allowed = f"from {minimum:g} to {maximum:g}"
    elif maximum is not None:
        allowed = f"at most {maximum:g}"
    else:
        allowed = f"at least {minimum:g}"
    message = f"{option} must be {allowed}, found {value:g}"
    raise InputError(f"{message}: {reason}." if reason else f"{message}.")
