"""`speckle2self view`, registered in speckle2self's command line (entry point group speckle2self.commands).
trame-slicer is imported only when the page starts, so the command line works without it."""
from __future__ import annotations

import argparse

from speckle2self.errors import UserError

DEFAULT_PORT = 8080


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `view` command to the command line's subparsers."""
    v = sub.add_parser("view", help="review files in the browser: despeckle, fine-tune, compare input and output "
                       "in linked views, save (a local web page)")
    v.add_argument("files", nargs="*", metavar="FILE", help="images, volumes or cines to open (more can be opened "
                   "from the page)")
    v.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port of the page (default {DEFAULT_PORT}; 0: any "
                   "free port)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer "
                   "only; 0.0.0.0 lets anyone who reaches this computer open, despeckle and download the files)")
    v.set_defaults(func=run)


def run(args) -> None:
    try:
        from .page import serve
    except ImportError as error:
        raise UserError(f"speckle2self view needs trame-slicer ({error})",
                        "pip install 'speckle2self[viewer]' (Python 3.10 or later)") from None
    serve(args.files, args.port, args.host)
