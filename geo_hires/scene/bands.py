"""Which bands of a scene become the model's red, green and blue: ``ReadConfig.bands`` by index
or name, resolved against the scene when it is opened, and the warning for a band stack that
says nothing of its colours (see :attr:`geo_hires.scene.Scene.rgb_bands` for the rule)."""

from __future__ import annotations

import warnings

from geo_hires.errors import BandOrderWarning, ConfigError, option

__all__ = ["resolve_bands", "warn_band_order"]


def _band_index(item: int | str, path: str, interp: tuple[str, ...], desc: tuple[str, ...]) -> int:
    """One ``--bands`` item as a 1-based index: a number, a colour interpretation, a description."""
    text = str(item).strip()
    if text.isdigit():
        index = int(text)
        if not 1 <= index <= len(interp):
            raise ConfigError(
                f"{option('--bands')}: {path} has no band {index}; it has bands 1-{len(interp)}"
            )
        return index
    for names in (interp, desc):
        hits = [i + 1 for i, n in enumerate(names) if n and n.lower() == text.lower()]
        if hits:
            return hits[0]
    known = sorted({n for n in interp + desc if n and n not in ("undefined", "gray")})
    raise ConfigError(
        f"{option('--bands')}: {path} has no band named {text!r}"
        + (f" (names: {', '.join(known)})" if known else " (its bands have no names)")
        + f"; give 1-based indexes, e.g. {option('--bands', '3,2,1', api='bands=(3, 2, 1)')}"
    )


def resolve_bands(
    spec: tuple[int | str, ...], path: str, interp: tuple[str, ...], desc: tuple[str, ...]
) -> tuple[int, int, int]:
    """``ReadConfig.bands`` against a scene's bands; three distinct bands or a clear error."""
    r, g, b = (_band_index(item, path, interp, desc) for item in spec)
    if len({r, g, b}) < 3:
        raise ConfigError(
            f"{option('--bands', ','.join(map(str, spec)), api=f'bands={tuple(spec)!r}')} names "
            f"fewer than 3 distinct bands of {path}; "
            "the model expects red, green and blue"
        )
    return (r, g, b)


def warn_band_order(path: str, interp: tuple[str, ...], rgb: tuple[int, int, int]) -> None:
    """Warn when 4+ bands say nothing of their colours and the first three are taken (a
    blue-green-red-NIR stack would be scanned as red-green-blue)."""
    data = [c for c in interp if c != "alpha"]
    if len(data) >= 4 and not any(c in ("red", "green", "blue") for c in interp):
        warnings.warn(
            f"{path} has {len(data)} bands and no colour interpretation: bands "
            f"{','.join(map(str, rgb))} are used as red, green, blue; if the order differs "
            "(e.g. blue, green, red, NIR), pass "
            + option("--bands", "3,2,1", api="bands=(3, 2, 1)"),
            BandOrderWarning,
            stacklevel=5,
        )
