"""A plugin shipped as a Python package: components and a hookspec of its own."""

from labelloop.hookspecs import hookimpl, hookspec


class hookspecs:  # noqa: N801 - the host looks for this module attribute
    """Hooks this plugin adds: other plugins may implement them."""

    @hookspec
    def register_shout_styles(self, register):
        """Register a shout style: `register(name, function)`."""


def shout(ctx):
    """Step: write the upper-cased `text` into the variable `shouted`."""
    ctx.project.variables.set("shouted", ctx.config["text"].upper() + "!")


@hookimpl
def register_components(register):
    register({"kind": "step", "id": "shout", "run": shout,
              "meta": {"label": "Shout"},
              "params": [{"name": "text", "type": "STRING", "label": "Text", "mandatory": True}]})
