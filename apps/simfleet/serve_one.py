"""SIMULATOR: one demo module as its own OS process, until SIGTERM or SIGINT.

    python -m apps.simfleet.serve_one madre --port 18001

Serves the module's real /health (and its other simulated routes) with the simulator's own
handler (apps.simfleet.sim.module_app), always in mode "ok". The power manager's `process`
backend starts demo modules this way, so start/stop/restart act on a real process.
"""

import argparse
import sys

from aiohttp import web

from apps.simfleet.sim import PORTS, SimFleet, module_app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.simfleet.serve_one", description=__doc__.splitlines()[0])
    parser.add_argument("slug", choices=sorted(PORTS), help="which demo module")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: the module's reference port)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    port = PORTS[args.slug] if args.port is None else args.port
    # A SimFleet that is never started: it only holds the modes ("ok") the handler reads.
    app = module_app(SimFleet(host=args.host), args.slug)
    print(f"serve_one: {args.slug} on http://{args.host}:{port}", flush=True)
    web.run_app(
        app, host=args.host, port=port, access_log=None, print=None, shutdown_timeout=0.5
    )  # SIGTERM/SIGINT end it
    return 0


if __name__ == "__main__":
    sys.exit(main())
