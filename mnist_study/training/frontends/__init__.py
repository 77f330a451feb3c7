"""Front-ends: what the network sees of the 784 pixels.

Each is one class in one module here (`raw.py`, `pca.py`, `forest.py`), a scikit-learn transformer
fitted on the training split only, registered below by its `kind` so that study files, the runner,
saved runs, progress bars and the report all draw on one place. A fitted front-end is saved as
safetensors (arrays) plus JSON (parameters) -- never pickle -- and rebuilt on load.

    from mnist_study.training.frontends import FRONTENDS, build_frontend, save_frontend, load_frontend
    frontend = build_frontend(experiment.frontend).fit(x_train, y_train)

See `base.py` for what a front-end knows about itself, and the README's "Extending" for adding one.
"""

from mnist_study.training.frontends.base import (FRONTENDS, Frontend, FrontendConfigBase, FrontendReport,
                                                 PlotMarker, ReportFigure, build_frontend, frontend_short_name,
                                                 load_frontend, parse_frontend_config, register_frontend,
                                                 save_frontend)
from mnist_study.training.frontends.forest import ForestPixels, ForestPixelsConfig
from mnist_study.training.frontends.pca import PCAFrontend, PCAFrontendConfig
from mnist_study.training.frontends.raw import RawPixels, RawPixelsConfig

# The built-in front-ends; this order is the order of the accuracy figure's legend.
register_frontend(RawPixels)
register_frontend(PCAFrontend)
register_frontend(ForestPixels)

__all__ = ["FRONTENDS", "Frontend", "FrontendConfigBase", "FrontendReport", "PlotMarker", "ReportFigure",
           "build_frontend", "frontend_short_name", "load_frontend", "parse_frontend_config",
           "register_frontend", "save_frontend", "RawPixels", "RawPixelsConfig", "PCAFrontend",
           "PCAFrontendConfig", "ForestPixels", "ForestPixelsConfig"]
