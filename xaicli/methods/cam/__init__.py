"""The CAM family: one module per method; each supplies only its channel weights (see ``base.py``)."""
