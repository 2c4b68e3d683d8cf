"""`mmat view`: a local, read-only web app over the store (runs, run reports, trajectories with their
images, preference pairs, eval runs, labelling), and the static run report of `mmat report --out`."""

from mmat.view.app import create_app
from mmat.view.serve import serve
from mmat.view.static import write_report

__all__ = ["create_app", "serve", "write_report"]
