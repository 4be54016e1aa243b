"""How URLs are matched and built: ids bounded to 32 bits, and URL builders written when first used."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.routing import IntegerConverter, Rule


class Id32Converter(IntegerConverter):
    """`<int:…>` in every route: ids beyond a 32-bit integer are simply "not found", never a 500 from the driver."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


class LazyBuilderRule(Rule):
    """A werkzeug Rule whose two URL builders are generated on the first `url_for` that needs them.

    Werkzeug writes and compiles Python source for two builders per route when the route is added: about 200
    routes made that the largest part of `create_app` (every web worker, every `flask` command, every test's
    app), though a worker only ever builds URLs for the few dozen routes its pages link to. Matching is
    unchanged (the regular expression is still compiled at once); a builder, once written, is kept, so each
    `url_for` after the first costs what it did. Two threads building the same new route at once each write it,
    and both results are the same.
    """

    written_builders: dict[bool, Callable[..., tuple[str, str]]]

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        self.written_builders = {}
        write = super()._compile_builder

        def build(rule: LazyBuilderRule, **values: Any) -> tuple[str, str]:
            builder = rule.written_builders.get(append_unknown)
            if builder is None:
                builder = rule.written_builders[append_unknown] = write(append_unknown).__get__(rule, None)
            return builder(**values)

        return build
