"""walrus: the program on top of the packages it composes.

``walrus.cli`` is the composition root: the only code that puts training (``models``), the
bundle (``export``) and serving (``service``) together. Nothing below imports it.
"""
