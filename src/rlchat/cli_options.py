"""Command-line options generated from the config dataclasses, so defaults live in one place."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Annotated, Any

import typer


def _option_for(
    name: str,
    kind: Any,
    help_text: str,
    panel: str,
    flag: str | None,
    minimum: Any = None,
    maximum: Any = None,
) -> tuple[Any, Any]:
    """(annotation, typer.Option) for one dataclass field; a ``minimum`` or ``maximum`` is
    checked by the parser, which names the flag in its error."""
    flag = flag or "--" + name.replace("_", "-")
    if kind is bool:
        return bool, typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text, rich_help_panel=panel)
    if typing.get_origin(kind) is list:
        # A list field named in the plural takes a repeatable singular flag: --genre comedy.
        singular = flag[:-1] if flag.endswith("s") else flag
        return list[str] | None, typer.Option(
            singular, help=help_text + " (repeatable)", rich_help_panel=panel
        )
    return kind, typer.Option(flag, help=help_text, rich_help_panel=panel, min=minimum, max=maximum)


def config_options(*config_classes: type, exclude: tuple[str, ...] = ()) -> Callable:
    """Add one option per field of each config dataclass to a Typer command.

    The command declares a parameter annotated with each config class (e.g.
    ``model: ModelConfig``) and receives an instance built from the options.
    """

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        targets = {
            name: hints[name] for name in signature.parameters if hints.get(name) in config_classes
        }
        # Resolved annotations: the CLI module's are strings under postponed evaluation.
        params = [
            p.replace(annotation=hints.get(name, p.annotation))
            for name, p in signature.parameters.items()
            if name not in targets
        ]
        owners: dict[str, str] = {}
        for target, cls in targets.items():
            cls_hints = typing.get_type_hints(cls, include_extras=False)
            for f in fields(cls):
                if f.name in exclude or f.name in owners:
                    continue
                default = f.default if f.default is not MISSING else f.default_factory()
                annotation, option = _option_for(
                    f.name,
                    cls_hints[f.name],
                    f.metadata.get("help", ""),
                    panel=cls.__name__.removesuffix("Config") + " options",
                    flag=f.metadata.get("flag"),
                    minimum=f.metadata.get("min"),
                    maximum=f.metadata.get("max"),
                )
                if isinstance(default, list):
                    default = None
                params.append(
                    inspect.Parameter(
                        f.name,
                        inspect.Parameter.KEYWORD_ONLY,
                        default=default,
                        annotation=Annotated[annotation, option],
                    )
                )
                owners[f.name] = target

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            values: dict[str, dict[str, Any]] = {target: {} for target in targets}
            for name, target in owners.items():
                value = kwargs.pop(name)
                if value is None:
                    continue  # an unset list option keeps the dataclass default
                values[target][name] = value
            built = {target: cls(**values[target]) for target, cls in targets.items()}
            return func(**kwargs, **built)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
