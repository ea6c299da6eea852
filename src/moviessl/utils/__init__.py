"""Helpers shared by the stages (atomic files, progress, digests) and :func:`plural` for their lines."""


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 video"``, ``"2 videos"``: a count with its noun (``many``: an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
