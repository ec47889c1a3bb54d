"""Starting run processes: forked from a process that imported their modules once.

A scenario run is `labelloop scenario run NAME --run-id ...` in a process of its own (see
`scheduler`). Started as a new interpreter, every run would import the host, pandas,
scikit-learn and the plugins' libraries again: seconds of CPU before its first step, at every
retrain of an active-learning loop. Runs are started instead from a `multiprocessing`
forkserver that has imported them once (the first run starts it): the host's run path and the
modules plugins name with the `register_preload_modules` hook. Each run is a fork of it that
leads a process group of its own (a Ctrl-C meant for the server does not reach it) and runs
the CLI with the arguments, environment and working directory it was given.

Preloading is only a head start: a module that fails to import there is imported (or fails)
in the run itself, where the failure is recorded as usual.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from typing import Any

from ..plugins import call_hook_per_plugin

# What every run imports before its first step: the CLI, the project, the scenario runner.
HOST_MODULES = ("labelloop.cli", "labelloop.project", "labelloop.flow",
                "labelloop.scenarios.runner", "labelloop.scenarios.triggers", "pyarrow.parquet")


def preload_modules(registry: Any) -> list[str]:
    """The module names the loaded plugins ask runs to preload (`register_preload_modules`);
    a plugin whose hook fails adds none (its runs import what they need themselves)."""
    preload: list[str] = []

    def register(names: list[str] | tuple[str, ...]) -> None:
        preload.extend(m for m in names if isinstance(m, str) and m and m not in preload)

    call_hook_per_plugin(registry.pm, "register_preload_modules",
                         lambda _name: {"register": register})
    return preload


class RunProcess:
    """A started run process, with the part of `subprocess.Popen` the scheduler uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess, args: list[str]):
        self._process = process
        self.args = args
        self.pid: int = process.pid

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


def _run_cli(args: list[str], env: dict[str, str], cwd: str) -> None:
    """The body of a run process (in the fork)."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    from ..cli import main

    main(args)  # exits through SystemExit, whose code becomes the process's exit code


class RunLauncher:
    """Starts `labelloop` CLI commands as run processes forked from a warm forkserver."""

    def __init__(self, registry: Any):
        self.registry = registry
        self._context: Any = None

    def _forkserver(self) -> Any:
        if self._context is None:
            context = multiprocessing.get_context("forkserver")
            # Read when the forkserver starts (once per server process): the first launcher's
            # plugins decide; a later one only loses the head start for modules it adds.
            context.set_forkserver_preload([*HOST_MODULES, *preload_modules(self.registry)])
            self._context = context
        return self._context

    def start(self, args: list[str], env: dict[str, str]) -> RunProcess:
        """Start `labelloop ARGS` in a run process with environment `env`; OSError if it can't."""
        process = self._forkserver().Process(target=_run_cli, args=(list(args), dict(env), os.getcwd()),
                                             name="labelloop run")
        process.start()
        return RunProcess(process, list(args))
