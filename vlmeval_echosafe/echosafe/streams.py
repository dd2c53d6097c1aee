"""EchoSafe's streams: one bank per namespace (dataset, dataset x category, or one for all), opened from what the
runner says: a fresh bank, a warm-start copy, or the bank of an interrupted run cut back to the rows the host
finished (after the run identity is checked). Mixed into :class:`~.method.EchoSafe`."""

from __future__ import annotations

import logging
from typing import Any

from ..core.run import DatasetRun, ResumeUnknownError
from ..core.trace import TraceWriter
from ..memory import MemoryBank
from .records import Stream, StreamItem
from .settings import RUN_CONFIG, TWIN_KEYS, check_resume, config_hash, run_config, write_json

log = logging.getLogger(__name__)


class EchoSafeStreams:
    """The stream bookkeeping of an EchoSafe defense (its state lives on the defense object)."""

    def _namespace(self, dataset: str, row: dict[str, Any]) -> str:
        if self.settings.reset == "never":
            return "all"
        if self.settings.reset == "category":
            if "category" not in row:
                raise ValueError(
                    f"{self.name}: reset: category needs each row's category, and the rows of {dataset} carry none "
                    f"(row_metadata: {self.run_for(dataset).row_metadata}); use reset: dataset"
                )
            return f"{dataset}/{row['category']}"
        return dataset

    def _stream(self, dataset: str, row: dict[str, Any], dim: int) -> Stream:
        ns = self._namespace(dataset, row)
        if ns in self._streams:
            return self._streams[ns]
        s = self.settings
        stream_id = f"{self.name}::{ns}"
        path = None if s.store == "none" else self.run_dir / "echosafe_bank" / ns
        run = self.run_for(dataset)
        order = run.order.as_dict()
        config = run_config(s, self.model.describe(), order)
        done = run.done
        resuming = path is not None and MemoryBank.exists(path)
        if resuming and done is None:
            raise ResumeUnknownError(
                f"{path} holds a bank of an earlier run, but no runner said which rows the host has finished, so it "
                "can be neither continued nor cut back; run it through run.py (--reuse), or delete the folder"
            )
        if resuming and done:
            check_resume(path, config)
        if resuming:
            bank = MemoryBank.load(path, encoders=self.encoder_ids, index_meta=TWIN_KEYS)
        elif s.memory:
            bank = MemoryBank.load(s.memory, encoders=self.encoder_ids, index_meta=TWIN_KEYS)
            # Warm-start entries are never this run's own, even when the saved bank came from the same wrapper.
            bank.update_meta(lambda m: {**m, "origin": "warm"})
        else:
            bank = MemoryBank(dim, self.encoder_ids, index_meta=TWIN_KEYS)
        trace = self.trace_for(dataset, "echosafe", write=self.sync.persists)
        self.sync.barrier()  # every rank has read the bank before the rank that persists rewrites it
        if s.staleness and dataset not in self._checked_lost:
            self._checked_lost.add(dataset)
            self._record_lost(run, trace)
        if path is not None:
            # Resume: keep warm-start entries and entries of finished rows; drop what the host will redo.
            dropped = bank.truncate(
                lambda m: (
                    m.get("origin") == "warm"
                    or m.get("stream") != stream_id
                    or m.get("dataset") != dataset
                    or str(m.get("row_index")) in (done or ())
                )
            )
            if dropped and self.sync.persists:
                log.warning(
                    "%s: dropped %d insights of rows the host will run again (%d rows finished, per %s)",
                    path,
                    dropped,
                    len(done or ()),
                    ", ".join(run.checkpoint) or "no checkpoint file",
                )
            if self.sync.persists:
                bank.save(path)
                write_json(path / RUN_CONFIG, config)
        self._config["streams"][ns] = {
            "dataset": dataset,
            "order": order,
            "row_metadata": run.row_metadata,
            "config_hash": config_hash(config),
        }
        self._write_config()
        stream = self._streams[ns] = Stream(stream_id, bank, path, trace.count(stream_id))
        return stream

    def _record_lost(self, run: DatasetRun, trace: TraceWriter) -> None:
        """A resumed ``staleness: 1`` run: rows the host finished whose reflection was still pending when the run
        stopped have no trace line and no insight. Each gets a trace line saying so (code ``lost``), in the order
        the host ran them, so every finished row is accounted for and stream positions stay in step."""
        traced = {str(r.get("row_index")) for r in trace.records}
        done = run.done or frozenset()
        for row in run.table:
            index = str(row["index"])
            if index not in done or index in traced:
                continue
            stream = f"{self.name}::{self._namespace(run.name, row)}"
            item = StreamItem([], "", row, None, run.name, times={}, bank_size=None)
            item.stream_pos = trace.count(stream)
            item.reason = "the run stopped before this finished row's pipelined reflection (staleness 1) was decoded"
            item.code = "lost"
            self._write_trace(item, run.name, 0, 0, stream)

    def begin(self, run: DatasetRun) -> None:
        """As :meth:`Defense.begin`; the dataset's streams are opened afresh from what the runner says."""
        if self._runs.get(run.name) == run:
            return
        super().begin(run)  # type: ignore[misc]
        self._streams = {
            ns: st for ns, st in self._streams.items() if ns != run.name and not ns.startswith(f"{run.name}/")
        }

    def close(self) -> None:
        """End of a run: compact every bank this object wrote into a snapshot with an empty log. The runners call
        it after a dataset's last item; a run killed before it leaves snapshot + log, which loads as well. Under
        torchrun the rank that persists the banks compacts them."""
        if not self.sync.persists:
            return
        for stream in self._streams.values():
            if stream.path is not None:
                stream.bank.compact(stream.path)
