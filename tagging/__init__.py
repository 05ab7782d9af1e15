"""Ray-free core of the multi-label char-CNN tagger.

Importing this package (or any module of it except ``tagging.dist``, ``tagging.cli``)
never imports Ray, creates files or starts processes.
"""

__version__ = "0.1.0"


def read_scores(output: str, date: str | None = None, **kwargs):
    """Scored rows of finished dates, exactly the files their _SUCCESS lists: an Arrow table, or a Ray
    Dataset with ``as_dataset=True`` (see tagging.scores.read_scores)."""
    from tagging.scores import read_scores as _read

    return _read(output, date, **kwargs)
