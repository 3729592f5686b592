"""The name Knative Functions' Python scaffolding imports: `from function import new`.

func's generated service installs this project as a dependency named `function` and serves
whatever `new` returns (see func.yaml). The implementation lives in functions.entry.
"""

from functions.entry import new

__all__ = ["new"]
