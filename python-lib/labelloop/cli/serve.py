"""`labelloop serve`: every webapp and the JSON API on one port."""

from __future__ import annotations

import click

from .root import State, cli


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5006, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port).")
@click.option("--insecure", is_flag=True,
              help="Allow a non-loopback address without API tokens (anyone who can reach it "
                   "may label and run scenarios).")
@click.option("--no-scheduler", is_flag=True, help="Don't check scenario triggers while serving.")
@click.option("--period", default=5.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between two checks of the scenario triggers.")
@click.option("--max-body", default=1024 * 1024, show_default=True, type=click.IntRange(min=1),
              help="Largest request body in bytes (larger: 413).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(min=1),
              help="Threads that run API handlers.")
@click.option("--allow-websocket-origin", "origins", multiple=True, metavar="HOST[:PORT]",
              help="Extra host allowed to open the Bokeh websocket (behind a proxy).")
@click.pass_obj
def serve_cmd(state: State, host: str, port: int, insecure: bool, no_scheduler: bool,
              period: float, max_body: int, threads: int, origins: tuple[str, ...]):
    """Serve every webapp (/webapps/<id>) and the JSON API (/api/v1) on one port."""
    from ..web.server import ServeOptions, serve

    serve(state.project, ServeOptions(host=host, port=port, insecure=insecure,
                                      scheduler=not no_scheduler, period=period,
                                      max_body=max_body, threads=threads,
                                      websocket_origins=list(origins),
                                      plugin_dirs=list(state.plugin_dirs)))
