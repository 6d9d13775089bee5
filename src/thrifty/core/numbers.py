"""The one place numbers become text: terminal tables, markdown and HTML reports format here.

Each style is a deliberate choice of its readers; keeping them side by side keeps them consistent
(a missing value reads as a dash, thousands are separated, money has no false precision).
"""

def significant(value, none: str = "-") -> str:
    """Three significant figures below 100, whole numbers from 100 (terminal tables)."""
    if value is None:
        return none
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def by_size(value: float | None, unit: str = "", none: str = "–") -> str:
    """As many decimals as the size deserves (0 from 100, 1 from 10, else 2), thousands split."""
    if value is None:
        return none
    if isinstance(value, int):
        return f"{value:,}{unit}"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}{unit}"


def fixed(value, spec: str = "{:,.2f}", none: str = "") -> str:
    """A number in a given format spec, e.g. "{:.1f}%"."""
    return none if value is None else spec.format(value)


def money(usd: float | None, none: str = "–") -> str:
    """Dollars: whole from $100, cents below."""
    if usd is None:
        return none
    return f"${usd:,.0f}" if usd >= 100 else f"${usd:,.2f}"


def mib(n_bytes: float | None) -> str:
    return "" if n_bytes is None else f"{n_bytes / 1024**2:.1f} MiB"
