"""trainlab: a command-line experiment runner for image classifiers.

Importing the package is cheap on purpose (no torch): `trainlab --help` and
`trainlab train --cfg job` must answer fast. Heavy modules are imported where used.
"""

__version__ = "0.1.0"
