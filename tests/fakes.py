"""A backend without a model, for tests of what happens around generation (subclasses write
``_generate``): it "loads" any spec instantly and describes itself as a bf16 CPU model."""
from __future__ import annotations

from backends.base import Backend, ModelInfo
from core.request import LoadOptions


class FakeBackend(Backend):
    name = "fake"

    def load(self, spec, options=LoadOptions(), progress=None):
        self.spec, self.options = spec, options

    def describe(self):
        return ModelInfo(self.name, self.spec.name, self.spec.source, "bf16", None, "bf16", "cpu", 0, 32768, None)

    def unload(self):
        self.spec = None
