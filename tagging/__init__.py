"""Ray-free core of the multi-label char-CNN tagger.

Importing this package (or any module of it except ``tagging.dist``, ``tagging.cli``)
never imports Ray, creates files or starts processes.
"""

__version__ = "0.1.0"
