"""`sitlab-calibrate`: the technician's tools to set up a camera node.

Each subcommand lives in its own module: `snapshot`, `draw`, `preview`,
`lens`, `ground`, `check` and `verify`. All edits of the node config go
through `config_edit`, which validates, backs up and writes atomically.
"""

from calibration.errors import CalibrationError

__all__ = ["CalibrationError"]
