"""The machine a driver or a trial runs on, for the tags of MLflow runs. No MLflow here: trial workers import it."""
from __future__ import annotations

import os
import platform
import socket


def hardware() -> dict[str, str]:
    """The machine this runs on (called in trials too, whose hardware may differ from the driver's)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"host": socket.gethostname(), "platform": platform.platform(), "cpu_count": str(os.cpu_count()),
            "torch_threads": str(torch.get_num_threads()), "gpus": ", ".join(gpus) or "none"}
