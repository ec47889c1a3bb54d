"""A third-party plugin's API routes (register_api_routes) and dataset format."""

import pandas as pd

from labelloop.errors import LabelloopError
from labelloop.hookspecs import hookimpl


@hookimpl
def register_api_routes(register):
    def hello(req):
        return {"hello": req.params["name"], "user": req.user,
                "webapps": req.host.webapp_ids()}

    def echo(req):
        if not isinstance(req.body, dict):
            raise LabelloopError("send a JSON object")
        return 201, {"echo": req.body, "method": req.method}

    def audit(req):
        return {"audited_by": req.user}

    register("/hello/{name}", hello)
    register("/audit", audit, role="admin")  # 403 for annotators and reviewers
    register("/open/echo", echo, methods=("POST", "PUT"), auth=False)


@hookimpl
def register_dataset_formats(register):
    def read(path, options):
        words = path.read_text().split()
        if not words:
            raise LabelloopError(f"{path.name}: no words")
        return {"": pd.DataFrame({"word": words})}

    def write(project, name, path, options):
        frame = project.dataset(name).read()
        path.write_text(" ".join(map(str, frame[frame.columns[0]])))
        return len(frame)

    register("words", read, write, (".words",), "space-separated words")
