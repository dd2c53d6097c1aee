"""The one VLMEvalKit model class of the plugin: a core defense behind the host's ``BaseModel`` interface.

Every row the plugin registers (``Base_X`` and ``X`` of a plugin model, ``<Defense>_X`` of any model) is a
:class:`HostDefense`. It turns a host message into an :class:`~..core.item.Item` with its row, which the dataset
registered when it built the prompt (:mod:`.rows`), and hands items to the core defense; the runner
(:mod:`.runner`) drives the lifecycle through it.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from vlmeval.vlm.base import BaseModel

from ..catalog import build_inner
from ..core.defense import Defense
from ..core.item import Item
from ..core.run import DatasetRun
from ..core.sync import StreamSync
from .inner import HostInner
from .rows import PromptRows, RowNotFoundError, split_message

log = logging.getLogger(__name__)


def host_model(name: str, **kwargs: Any) -> Any:
    """A model VLMEvalKit itself knows, built with the kwargs its constructor accepts (the host passes
    ``use_vllm=`` to some names)."""
    from vlmeval.config import supported_VLM

    if name not in supported_VLM:
        import difflib

        close = difflib.get_close_matches(name, list(supported_VLM), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"inner model {name!r} is not a VLMEvalKit model{hint}")
    factory = supported_VLM[name]
    target = getattr(factory, "func", factory)
    params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    passed = {k: v for k, v in kwargs.items() if takes_any or k in params}
    dropped = sorted(set(kwargs) - set(passed))
    if dropped:
        log.info("inner model %s does not take %s; not forwarded", name, dropped)
    return factory(**passed)


def checked_message(model: BaseModel, message: Any) -> list[dict[str, str]]:
    """The checks and normalisation the host's `BaseModel.generate` applies to one message."""
    kind = model.check_content(message)
    if kind not in ("str", "dict", "liststr", "listdict"):
        raise ValueError(f"vlmeval-echosafe: invalid input message {message!r}")
    message = model.preproc_content(message)
    if message is None or model.check_content(message) != "listdict":
        raise ValueError("vlmeval-echosafe: message did not normalise to a list of {type, value} items")
    for item in message:
        if item["type"] not in model.allowed_types:
            raise ValueError(f"vlmeval-echosafe: {type(model).__name__} cannot take {item['type']!r} inputs")
    return message


class HostDefense(BaseModel):
    """``defense``: a built core defense, or its class (built around ``inner``: a plugin model's entry
    ``inner_spec``, or a host model's registry name) with ``name``, ``run_dir`` and ``settings``."""

    is_api = False  # one stream in order: the host must not answer items concurrently
    INTERLEAVE = False
    allowed_types = ["text", "image"]

    def __init__(
        self,
        defense: type[Defense] | Defense,
        inner: str | None = None,
        inner_spec: dict[str, Any] | None = None,
        name: str | None = None,
        run_dir: str | None = None,
        settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(defense, Defense):
            self.defense = defense
        else:
            built = build_inner(inner_spec, **kwargs) if inner_spec else HostInner(host_model(inner, **kwargs))
            extra = {"settings": settings} if settings is not None else {}
            self.defense = defense(built, name=name, run_dir=run_dir, inner_name=inner, **extra)
        self._rows: dict[str, PromptRows | None] = {}

    # ---- the runner's hand-off ----------------------------------------------------------------------------
    def begin(self, run: DatasetRun, rows: PromptRows | None) -> None:
        """Before a dataset's first item: the run, and the registry of the rows of its prompts (None: none)."""
        self._rows[run.name] = rows
        self.defense.begin(run)

    def item(self, message: list[dict[str, str]], dataset: str) -> Item:
        """The host message as an item, with the row its prompt was registered under."""
        images, question = split_message(message)
        if dataset not in self._rows:
            from ..datasets.mmsafetybenchpp import MMSafetyBenchPP

            if dataset in MMSafetyBenchPP.supported_datasets():
                raise RowNotFoundError(
                    f"{self.defense.name} got an item of {dataset} but no runner handed over the dataset's rows (the "
                    "row of each prompt, which rows are finished): run it through run.py or lmms-eval"
                )
            self.begin(DatasetRun(dataset, "none", done=None), None)
        rows = self._rows[dataset]
        row = rows.find(images, question) if rows is not None else {}
        return Item(question, tuple(images), row, dataset)

    # ---- the host's calls ----------------------------------------------------------------------------------
    def generate_inner(self, message: list[dict[str, str]], dataset: str | None = None) -> str:
        self._single_process_only()
        dataset = dataset or "unknown"
        return self.defense.respond([self.item(message, dataset)])[0].text

    def generate_batch(self, messages: list[Any], dataset: str | None = None) -> list[str]:
        """Several host messages as one micro-batch, in one process."""
        self._single_process_only()
        dataset = dataset or "unknown"
        items = [self.item(checked_message(self, m), dataset) for m in messages]
        return [r.text for r in self.defense.respond(items)]

    def prefetch_batch(self, messages: list[Any], dataset: str | None = None) -> None:
        """What the launcher's loop does before answering a micro-batch: name the one after it (see
        ``Defense.prefetch``), for callers that drive ``generate_batch`` themselves."""
        self._single_process_only()
        self.defense.prefetch([self.item(checked_message(self, m), dataset or "unknown") for m in messages])

    def _single_process_only(self) -> None:
        """Under torchrun the ranks of a shared stream must all enter every step; a caller that answers items one
        rank at a time (the host's loop, --api-mode) would make their streams diverge or hang."""
        if self.defense.shares_stream and StreamSync.from_process_group().multi:
            raise RuntimeError(
                f"{self.defense.name}: under torchrun the ranks share one stream, which only the launcher's step loop "
                "drives (torchrun … run.py / vlmeval-echosafe); this caller answers items one rank at a time"
            )

    def flush(self) -> None:
        self.defense.flush()

    def close(self) -> None:
        self.defense.close()

    def set_dump_image(self, dump_image_func: Any) -> None:
        """Forwarded to a host inner model (its custom prompts dump images through it)."""
        super().set_dump_image(dump_image_func)
        host = getattr(self.defense.inner, "host_model", None)
        if hasattr(host, "set_dump_image"):
            host.set_dump_image(dump_image_func)

    def use_custom_prompt(self, dataset: str) -> bool:
        from ..datasets.mmsafetybenchpp import MMSafetyBenchPP

        host = getattr(self.defense.inner, "host_model", None)
        if host is None or dataset in MMSafetyBenchPP.supported_datasets():
            return False
        return bool(getattr(host, "use_custom_prompt", lambda _: False)(dataset))

    def build_prompt(self, line: Any, dataset: str | None = None) -> Any:
        """The host inner model's custom prompt, registered with its row like the dataset's own prompts."""
        message = self.defense.inner.host_model.build_prompt(line, dataset=dataset)
        rows = self._rows.get(dataset or "")
        if rows is not None:
            rows.register(message, line)
        return message
