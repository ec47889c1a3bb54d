"""Records, in the variable `run_process`, what the run's process looks like from inside."""

import os


def run(ctx):
    import preload_probe_marker

    ctx.project.variables.set("run_process", {
        "pid": os.getpid(), "pgid": os.getpgid(0), "cwd": os.getcwd(),
        "marker_imported_in": preload_probe_marker.IMPORTED_IN,
        "database_url_set": bool(os.environ.get("LABELLOOP_DATABASE_URL")),
        "probe_env": os.environ.get("PRELOAD_PROBE_ENV")})
