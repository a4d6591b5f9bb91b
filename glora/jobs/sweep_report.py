"""`glora-sweep-report`: collect a `glora-search --multirun` sweep into one table and plot.

    glora-sweep-report runs/search/multirun/<time>     # sweep.csv / sweep.md / sweep.png
    glora-sweep-report runs/search/multirun/<time> --front runs/search/<time>   # with a front search's front
"""
import argparse
import logging
import sys

from glora.run.errors import JobError
from glora.stages.sweep_report import report_sweep

log = logging.getLogger("glora.sweep")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="glora-sweep-report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="a glora-search --multirun dir (runs/search/multirun/<time>)")
    parser.add_argument("--front", action="append", default=[], metavar="RUN_DIR",
                        help="a front search's run dir (glora-search search=pareto) to draw on the same plot; repeatable")
    args = parser.parse_args(argv)
    try:
        report_sweep(args.sweep_dir, args.front)
    except JobError as err:
        log.error("%s", err)
        sys.exit(1)
